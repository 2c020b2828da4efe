"""benchmarks/quality.py end to end on the tiny model: the teacher runs materialize the real graph on
Multi30k with a Tatoeba out-of-domain set, and the JSON, the chart and the table hold every system on
both test sets, with the shared systems computed once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"system", "test_set", "bleu", "bleu_ci95", "chrf", "chrf_ci95", "bleu_p_vs_A", "bleu_p_vs_B",
        "off_target_rate", "train_seconds", "tokens_per_s"}


@pytest.fixture(scope="module")
def benchmark(shared_data, tmp_path_factory) -> tuple[dict, Path, str]:
    """One run of the benchmark script on a tiny base profile; its JSON, its output folder and its stdout."""
    work = tmp_path_factory.mktemp("quality")
    profile = work / "tiny-quality.yaml"
    profile.write_text(f"""\
extends: tiny
experiment: {{sample_size: 40, test_fraction: 0.25, seed: 7}}
corpus: {{type: local, path: "{shared_data}/multi30k/train", format: moses}}
ood_test:
  name: tatoeba
  size: 8
  corpus: {{type: local, path: "{shared_data}/tatoeba-deu-fra/test.txt", format: tatoeba}}
base_model: {{path: "{work}/tiny_base_model"}}
teacher: {{type: oracle, path: "{shared_data}/multi30k/train", format: moses}}
synthesis: {{size_factor: 1.0}}
training: {{epochs: 1, logging_steps: 1, staging_dir: "{work}/staging"}}
evaluation: {{test_set_name: multi30k, fewshot_k: 2, n_bootstrap: 100, max_new_tokens: 24}}
""")
    teacher = work / "tiny-teacher.yaml"  # the second run's teacher: the tiny base model, translating in process
    teacher.write_text(f"""\
teacher: {{type: transformers, name_or_path: "{work}/tiny_base_model", device: cpu, dtype: fp32, do_sample: false,
           max_new_tokens: 24}}
synthesis: {{mode: translate, size: 24, few_shot: 2, check_language: false, max_length_ratio: 50,
             source_pool: {{type: local, path: "{shared_data}/multi30k/train", format: moses}}}}
""")
    out = work / "results"
    run = subprocess.run([sys.executable, "benchmarks/quality.py", "--profile", str(profile), "--gemma-profile",
                          str(teacher), "--work", str(work / "work"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [result] = out.glob("quality-*.json")
    return json.loads(result.read_text()), out, run.stdout


def test_every_system_has_a_row_on_both_test_sets(benchmark):
    result, _, _ = benchmark
    rows = {(r["system"], r["test_set"]): r for r in result["rows"]}
    systems = ["A", "A_fewshot", "B", "C_oracle", "D_oracle", "E", "C_gemma", "D_gemma"]
    assert set(rows) == {(s, t) for s in systems for t in ("multi30k", "tatoeba")}
    for (system, test_set), row in rows.items():
        assert KEYS <= set(row), (system, test_set)
        assert 0 <= row["bleu"] <= 100 and 0 <= row["chrf"] <= 100 and row["bleu_ci95"] >= 0
        assert (row["bleu_p_vs_A"] is None) == (system == "A"), row
        assert (row["bleu_p_vs_B"] is None) == (system == "B"), row
        assert row["tokens_per_s"] > 0
        assert (row["train_seconds"] > 0) == (system not in ("A", "A_fewshot")), row
    assert {r["segments"] for r in result["rows"] if r["test_set"] == "multi30k"} == {10}
    assert {r["segments"] for r in result["rows"] if r["test_set"] == "tatoeba"} == {8}


def test_the_shared_systems_are_computed_once(benchmark):
    """The gemma run retrains no shared adapter and re-translates nothing but C and D."""
    result, _, _ = benchmark
    first, second = result["runs"]
    assert first["translation_cache"] == {"reused": 0, "translated": 12, "unusable_entries": 0}
    assert second["translation_cache"] == {"reused": 8, "translated": 4, "unusable_entries": 0}
    assert second["synthesis"]["mode"] == "translate" and second["synthesis"]["report/rows"] == 24
    rows = {(r["system"], r["test_set"]): r for r in result["rows"]}
    assert not any(rows[(s, "multi30k")]["translations_reused"] for s in ("A", "B", "C_oracle", "C_gemma", "D_gemma"))
    assert rows[("C_gemma", "multi30k")]["training_table_hash"] != rows[("C_oracle", "multi30k")]["training_table_hash"]
    assert rows[("C_gemma", "multi30k")]["adapter_hash"] != rows[("C_oracle", "multi30k")]["adapter_hash"]


def test_rows_are_the_graphs_bleu_table(benchmark):
    """The script reports what the asset graph computed (the lake's bleu_table), not scores of its own."""
    import pandas as pd

    result, _, _ = benchmark
    lake = Path(result["runs"][0]["profile"]).parent / "lake"
    table = pd.read_parquet(lake / "bleu_table.parquet")
    for row in (r for r in result["rows"] if not r["system"].endswith("_oracle")):  # the lake holds the last run
        system = row["system"].removesuffix("_gemma")
        [scored] = table[(table["system"] == system) & (table["test_set"] == row["test_set"])].to_dict("records")
        assert row["bleu"] == pytest.approx(scored["bleu"], abs=1e-4)
        assert row["adapter_hash"] == scored["adapter_hash"]


def test_chart_and_table_are_written(benchmark):
    result, out, stdout = benchmark
    [png] = out.glob("quality-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "| test_set" in stdout and "C_oracle" in stdout and "D_gemma" in stdout and "tatoeba" in stdout
    assert result["wall_seconds"] > 0 and [r["teacher"] for r in result["runs"]] == ["oracle", "gemma"]
    assert result["runs"][0]["synthesis"], "synth_B's counts are reported"


def test_the_teacher_list_must_start_with_the_oracle(tmp_path):
    run = subprocess.run([sys.executable, "benchmarks/quality.py", "--teachers", "gemma", "--work", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "starting with oracle" in run.stderr
