"""benchmarks/throughput.py runs end to end on the CPU (tiny sizes) and reports both configurations."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.mark.usefixtures("shared_data")
def test_throughput_benchmark_reports_seed_and_project_side_by_side(tmp_path, capsys):
    import torch

    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    throughput = importlib.util.module_from_spec(spec)
    sys.modules["throughput"] = throughput  # dataclasses look their module up there
    spec.loader.exec_module(throughput)
    threads = torch.get_num_threads()
    try:
        report = throughput.main(["--device", "cpu", "--threads", "1", "--rounds", "1", "--warmup-steps", "1",
                                  "--seed-train-steps", "2", "--train-steps", "2", "--train-pairs", "300",
                                  "--sentences", "6", "--max-new-tokens", "8", "--work-dir", str(tmp_path / "work"),
                                  "--out", str(tmp_path / "report.json")])
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop("throughput", None)
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == report["summary"]
    for name in ("seed", "project"):
        row = report["summary"][name]
        assert row["train_tokens_per_s"] > 0 and row["translate_new_tokens_per_s"] > 0
        assert report["rounds"][name]["translation"][0]["sentences"] == 6
    assert report["configurations"]["seed"]["decoder"] == "generate"
    assert report["configurations"]["project"]["token_budget"] == 2048
    assert "| seed |" in capsys.readouterr().out
