"""The `mt-assets` command line: run a profile, print the BLEU table, print the recipe.
(`mt-assets translate` is tested with a trained adapter in test_train_job.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from mt_assets import cli
from mt_assets.lib.scoring.metrics import score_systems
from mt_assets_tests.ops_support import write_profile
from mt_assets_tests.test_console import asset_lines


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
    table.loc[1, "bleu_p_vs_A"], table.loc[1, "chrf_p_vs_A"] = 0.0004, 0.0312  # below and above 0.001
    table.to_parquet(tmp_path / "lake" / "bleu_table.parquet", index=False)
    assert cli.main(["bleu", "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "system" not in line}
    assert set(rows) == {"A", "B"}
    assert f"{table.loc[1, 'bleu']:.2f} ± {table.loc[1, 'bleu_ci95']:.2f}" in rows["B"]
    assert "<0.001, 0.031" in rows["B"] and "0.0004" not in out  # p-values for reading; the table keeps floats
    assert "nan" not in out.lower() and max(len(line) for line in out.splitlines()[:-1]) <= 100  # the path aside
    assert "2 test pairs" in out and "half-width of a 95% bootstrap CI" in out
    assert cli.main(["bleu", "--profile", str(profile), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "0123456789ab" in wide and "chrf_p_vs_A" in wide and "nan" not in wide.lower()
    assert "<0.001" in wide and table.loc[0, "bleu_signature"] in wide
    assert cli.main(["bleu", "--profile", str(profile), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("system,bleu,")


def test_recipe_prints_the_profiles_lora_recipe(profile, capsys):
    assert cli.main(["recipe", "--profile", str(profile)]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["r"] == 32 and recipe["epochs"] == 4 and recipe["target_modules"] == "all-linear"


TEARDOWN_ABORTS = """
import atexit, os, sys
import torch
from mt_assets.cli import run

class AbortsAtTeardown:  # as PyTorch's C++ destructors can, after the work is done
    def __del__(self, abort=os.abort):  # bound now: module globals are gone by then
        abort()

keeper = AbortsAtTeardown()
atexit.register(print, "exit handlers ran", flush=True)
run(sys.argv[1:])
"""


@pytest.mark.parametrize("argv, code", [(["recipe"], 0), (["recipe", "--no-such-flag"], 2)])
def test_the_command_exits_with_mains_code_even_when_teardown_would_abort(profile, argv, code):
    """`mt-assets` (cli.run) ends the process after main: its output and exit code stand, its exit handlers
    run, and an abort in the interpreter's teardown (what exit -6 after a successful run was) never comes."""
    done = subprocess.run([sys.executable, "-c", TEARDOWN_ABORTS, *argv, "--profile", str(profile)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("exit handlers ran")
    if code == 0:
        assert json.loads(done.stdout.rsplit("exit handlers ran", 1)[0])["r"] == 32  # the recipe, all of it
    else:
        assert "unrecognized arguments: --no-such-flag" in done.stderr


def test_materialize_exits_nonzero_when_a_check_of_severity_error_fails(tmp_path, untrained_tiny_model,
                                                                         monkeypatch, capsys):
    """One training step logs one loss: training_loss_decreased (severity ERROR) fails, the run succeeds."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    profile = write_profile(tmp_path / "one_step.yaml", tmp_path / "lake", untrained_tiny_model, pretrain_steps=0,
                            executor={"type": "in_process"}, training={"max_steps": 1, "logging_steps": 1})
    assert cli.main(["run", "--profile", str(profile), "--select", "++adapter_B"]) == 1
    out, err = capsys.readouterr()
    assert "✗ training_loss_decreased: FAILED (ERROR)" in asset_lines(out)["adapter_B"]  # folded into its line
    assert "1 check(s) of severity ERROR failed: adapter_B:training_loss_decreased" in err
    assert (tmp_path / "lake" / "adapter_B").is_dir()  # the assets themselves were made
    assert not (tmp_path / "lake" / "test_A.parquet").exists()  # train_A was made alone


def test_materialize_exits_zero_when_only_a_warning_fails(tmp_path, untrained_tiny_model, monkeypatch, capsys):
    """The whole graph on the untrained tiny model: B (one epoch) does not beat A, a warning only."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    profile = write_profile(tmp_path / "one_epoch.yaml", tmp_path / "lake", untrained_tiny_model, pretrain_steps=0,
                            executor={"type": "in_process"}, training={"epochs": 1, "batch_size": 16})
    assert cli.main(["run", "--profile", str(profile)]) == 0
    out, err = capsys.readouterr()
    assert "✗ b_beats_a: FAILED (WARN)" in asset_lines(out)["bleu_table"]  # the warning this test is about did fire
    assert "(ERROR)" not in out and "severity ERROR" not in err
    assert (tmp_path / "lake" / "bleu_table.parquet").is_file()
