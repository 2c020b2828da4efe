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


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_stage_and_writes_the_gpu_json(shared_data, tmp_path):
    """benchmarks/gpu_check.sh --smoke: the device check's stages on this CPU at tiny sizes, with the
    JSON the GPU run writes (what the one device call relies on, tried here first)."""
    import os
    import subprocess

    script = SCRIPT.parent / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "MT_ASSETS_SHARED_DATA": str(shared_data)}
    done = subprocess.run(["bash", str(script), "--smoke"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["mode"] == "smoke" and report["device"] == "CPU"
    assert {"torch", "transformers", "trl", "peft", "datasets"} <= report["versions"].keys()
    assert list(report["stages"]) == ["tests_fp32", "throughput", "tests_bf16", "gemma"]
    for name in ("tests_fp32", "tests_bf16"):
        stage = report["stages"][name]
        assert stage["status"] == "ok" and stage["passed"] > 0 and stage["failed"] == stage["errors"] == 0, stage
    assert report["equality_tests_pass"] is True
    assert set(report["stages"]["throughput"]["summary"]) == {"seed", "project"}
    assert set(report["stages"]["gemma"]["summary"]) == {"fp32", "bf16"}
    for name in ("throughput", "gemma"):
        stage = report["stages"][name]
        assert stage["status"] == "ok" and (tmp_path / "out" / stage["json"]).is_file()
        assert all(row["train_tokens_per_s"] > 0 and row["translate_new_tokens_per_s"] > 0
                   for row in stage["summary"].values())
    assert set(report["targets"]) == {"project_train_tokens_per_s", "project_train_peak_gib",
                                      "project_translate_new_tokens_per_s", "t4_peak_gib"}
    assert report["targets"]["project_train_tokens_per_s"]["measured"] == \
        report["stages"]["throughput"]["summary"]["project"]["train_tokens_per_s"]
    assert report["targets"]["t4_peak_gib"]["met"] is None  # no t4 row on a CPU
    assert "== GPU check (smoke)" in done.stdout
    profile = (tmp_path / "out" / "profile.txt").read_text()
    assert "== seed: training step 1" in profile and "== project: training step 1" in profile and "aten::" in profile
    assert len(list((tmp_path / "out").iterdir())) <= 8  # what comes back from the device


def test_gpu_check_out_of_time_records_every_stage_as_skipped(tmp_path):
    """A budget too short for any stage still writes the JSON, each stage marked skipped with the
    time left, so a run cut short says what it did not do."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT.parent / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    report = gpu_check.main(["--smoke", "--budget", "10", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == report
    assert list(report["stages"]) == ["tests_fp32", "throughput", "tests_bf16", "gemma"]
    assert all(stage["status"] == "skipped" and "s left" in stage["reason"] for stage in report["stages"].values())
    assert report["equality_tests_pass"] is False
    assert all(target["met"] is None for target in report["targets"].values())
