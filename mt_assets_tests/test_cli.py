"""The `mt-assets` command line: run a profile, print the BLEU table, print the recipe.
(`mt-assets translate` is tested with a trained adapter in test_train_job.py.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mt_assets import cli
from mt_assets.lib.metrics import score_systems
from mt_assets_tests.ops_support import write_profile


@pytest.fixture
def profile(tmp_path, untrained_tiny_model):
    return write_profile(tmp_path / "profile.yaml", tmp_path / "lake", untrained_tiny_model, pretrain_steps=0,
                         executor={"type": "in_process"})


def test_materialize_runs_the_selected_assets_of_a_profile(profile, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # an ephemeral instance
    assert cli.main(["run", "--profile", str(profile), "--select", "opus_sample"]) == 0
    out = capsys.readouterr().out
    assert f"materializing 1 assets with profile profile ({profile})" in out
    assert f"Outputs are in {tmp_path / 'lake'}" in out
    sample = pd.read_parquet(tmp_path / "lake" / "opus_sample.parquet")
    assert len(sample) == 60  # the profile's sample_size, not the demo's 150
    assert not (tmp_path / "lake" / "train_A.parquet").exists()


def test_bleu_prints_the_table_of_the_profiles_lake(profile, tmp_path, capsys):
    assert cli.main(["bleu", "--profile", str(profile)]) == 1
    assert "no BLEU table" in capsys.readouterr().err
    references = ["le chat dort", "il pleut"]
    table = score_systems({"A": ["un chien", "soleil"], "B": ["le chat dort", "il pleut"]}, references, ("A",),
                          n_bootstrap=50)
    table["off_target_rate"], table["empty_outputs"] = 0.0, 0
    table["training_table"], table["adapter_hash"] = ["", "train_A"], ["", "0123456789abcdef0123"]
    (tmp_path / "lake").mkdir()
    table.to_parquet(tmp_path / "lake" / "bleu_table.parquet", index=False)
    assert cli.main(["bleu", "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "system" not in line}
    assert set(rows) == {"A", "B"}
    assert f"{table.loc[1, 'bleu']:.2f}" in rows["B"] and "0123456789ab" in rows["B"]
    assert "2 test pairs" in out
    assert cli.main(["bleu", "--profile", str(profile), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("system,bleu,")


def test_recipe_prints_the_profiles_lora_recipe(profile, capsys):
    assert cli.main(["recipe", "--profile", str(profile)]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["r"] == 32 and recipe["epochs"] == 4 and recipe["target_modules"] == "all-linear"
