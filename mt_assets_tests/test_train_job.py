"""Training in a process of its own: lib.lora.launch from a shell (DDP on two CPU processes through
`accelerate launch`) and from the adapter asset through Dagster Pipes; `mt-assets translate` with
the adapter it made."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mt_assets import cli
from mt_assets.defs.io_manager import DataLakeIOManager, LakeError
from mt_assets.defs.training import Training, adapter_B
from mt_assets.lib.lora import launch
from mt_assets.lib.hashing import folder_hash, table_hash
from mt_assets.lib.models.loading import load_causal_lm, load_tokenizer
from mt_assets.lib.lora.adapter_folder import LINEAGE_FILE, LOSS_CURVE_FILE, SUMMARY_FILE, read_adapter_log
from mt_assets.lib.lora.recipe import LoraRecipe, read_recipe, write_recipe
from mt_assets.lib.lora.train_loop import split_validation
from mt_assets.lib.translation.translate import translate
from mt_assets_tests.e2e_support import DEMO_TSV, tiny_base
from mt_assets_tests.ops_support import write_profile

ROOT = Path(__file__).resolve().parent.parent
RECIPE = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["all-linear"], "learning_rate": 3e-3,
          "epochs": 2, "batch_size": 8, "max_length": 128, "logging_steps": 1}
METADATA_KEYS = {"trainable_parameters", "steps", "final_train_loss", "first_train_loss", "validation_loss",
                 "wall_seconds", "resumed_from", "training_table_hash", "base_model", "training_log", "device",
                 "world_size"}


def pairs(n: int = 40) -> pd.DataFrame:
    table = pd.read_csv(DEMO_TSV, sep="\t").head(n)
    return pd.DataFrame({"pair_id": [f"demo-{i}" for i in range(n)], "source": table["de"], "target": table["fr"],
                         "source_lang": "de", "target_lang": "fr", "origin": "demo"})


@pytest.mark.parametrize(("processes", "cuda", "gpus", "expected"), [
    (1, False, 0, ["--num_processes", "1", "--cpu"]),
    (1, True, 1, ["--num_processes", "1"]),
    (4, True, 4, ["--num_processes", "4", "--multi_gpu"]),
    (2, False, 0, ["--num_processes", "2", "--multi_gpu"]),  # DDP over gloo, as the test below runs it
    (0, True, 3, ["--num_processes", "3", "--multi_gpu"]),
    (0, False, 0, ["--num_processes", "1", "--cpu"]),
])
def test_launch_command(monkeypatch, processes, cuda, gpus, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    command = launch.launch_command(["--table", "t.parquet"], processes, cuda=cuda, extra_args=["--gpu_ids", "all"])
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    flags = command[3:command.index("-m", 3)]
    for flag in expected:
        assert flag in flags
    assert flags[flags.index("--num_processes") + 1] == expected[1]
    assert ("--cpu" in flags) == ("--cpu" in expected) and ("--multi_gpu" in flags) == ("--multi_gpu" in expected)
    assert flags[-2:] == ["--gpu_ids", "all"]
    assert command[-4:] == ["-m", "mt_assets.lib.lora.launch", "--table", "t.parquet"]


def test_negative_process_count_is_refused():
    with pytest.raises(ValueError, match="training.num_processes"):
        launch.launch_command([], -1, cuda=False)


def test_recipe_file_round_trip_and_unknown_fields(tmp_path):
    recipe = replace(LoraRecipe(), r=4, target_modules="all-linear", epochs=1.5)
    assert read_recipe(write_recipe(recipe, tmp_path / "recipe.json")) == recipe
    (tmp_path / "bad.json").write_text(json.dumps({"r": 4, "rank": 8}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['rank'\]"):
        read_recipe(tmp_path / "bad.json")


def test_two_process_ddp_from_the_command_line_without_dagster(tmp_path, untrained_tiny_model):
    table = pairs()
    table.to_parquet(tmp_path / "table.parquet", index=False)
    (tmp_path / "recipe.json").write_text(json.dumps(RECIPE))
    out = tmp_path / "adapter"
    command = launch.launch_command(
        launch.job_arguments(tmp_path / "table.parquet", str(untrained_tiny_model), tmp_path / "recipe.json", out),
        num_processes=2, cuda=False, extra_args=["--main_process_port", "0"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # rank 0 alone reports: one start line, one summary (printed, as no Dagster launched it)
    assert done.stdout.count("with 2 process(es)") == 1
    start = done.stdout.index("{\n")
    printed = json.loads(done.stdout[start:done.stdout.index("\n}", start) + 2])
    assert printed["world_size"] == 2 and printed["device"] == "cpu"
    train, _ = split_validation(table, LoraRecipe().validation_fraction, LoraRecipe().seed)
    per_step = RECIPE["batch_size"] * 2  # each of the two ranks takes a batch per step
    assert printed["steps"] == math.ceil(len(train) / per_step) * RECIPE["epochs"]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2 and summary["steps"] == printed["steps"]
    assert (out / "adapter_model.safetensors").stat().st_size > 0 and (out / "adapter_config.json").is_file()


@pytest.fixture(scope="module")
def pipes_run(tmp_path_factory, untrained_tiny_model):
    """adapter_B materialized in-process: the asset launches lib.lora.launch through Pipes."""
    lake = tmp_path_factory.mktemp("pipes") / "lake"
    table = pairs()

    @dg.asset(name="train_A")
    def train_A() -> pd.DataFrame:
        return table

    recipe = {**RECIPE, "target_modules": ["all-linear"], "modules_to_save": ["wte"]}
    resources = {"io_manager": DataLakeIOManager(base_path=str(lake)),
                 "base_model": tiny_base(untrained_tiny_model, pretrain_steps=0),
                 "training": Training(staging_dir=str(lake / ".staging"), **recipe)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([train_A, adapter_B], resources=resources, instance=instance)
        logs = [event.user_message for event in instance.all_logs(result.run_id)]
        yield lake, table, result, logs


def test_adapter_asset_trains_through_pipes(pipes_run, untrained_tiny_model):
    lake, table, result, logs = pipes_run
    assert result.success
    materialization = result.asset_materializations_for_node("adapter_B")[0]
    metadata = materialization.metadata
    assert METADATA_KEYS <= set(metadata)
    # reported by the training process: its device and world size, its log as Markdown
    assert metadata["world_size"].value == 1 and metadata["device"].value == "cpu"
    assert metadata["steps"].value > 0 and "train_loss" in metadata["training_log"].value
    assert metadata["training_table_hash"].value == table_hash(table)
    # its log lines came back as the step's logs, through Pipes
    assert any("[pipes] external process successfully opened dagster pipes" in line for line in logs)
    assert any(line.startswith(f"step {metadata['steps'].value}/") for line in logs)
    folder = lake / "adapter_B"
    assert json.loads((folder / LINEAGE_FILE).read_text())["training_table"] == "train_A"
    assert materialization.tags["dagster/data_version"] == folder_hash(folder)
    assert not (folder / "checkpoints").exists()
    assert sorted(p.name for p in (lake / ".staging").iterdir()) == []  # inputs and staging cleaned up


def test_adapter_reports_its_final_losses_as_numbers_and_its_loss_curve(pipes_run):
    from PIL import Image

    lake, table, result, logs = pipes_run
    metadata = result.asset_materializations_for_node("adapter_B")[0].metadata
    folder = lake / "adapter_B"
    log = read_adapter_log(folder)
    trains, evals = log.dropna(subset=["train_loss"]), log.dropna(subset=["eval_loss"])
    assert len(evals) > 0  # a tenth of train_A held out
    # full-precision floats, equal to the last losses of the log file
    for key, column in (("final_train_loss", trains["train_loss"]), ("final_validation_loss", evals["eval_loss"])):
        assert isinstance(metadata[key], dg.FloatMetadataValue), key
        assert metadata[key].value == float(column.iloc[-1]), key
    held_out = split_validation(table, LoraRecipe().validation_fraction, LoraRecipe().seed)[1]
    assert metadata["validation"].value == f"{len(held_out)} held-out pairs of the training table"
    # the log as Markdown: one row per logged step, train and validation loss side by side, no nan
    shown = metadata["training_log"].value
    assert "nan" not in shown.lower()
    rows = shown.splitlines()[2:]
    assert len(rows) == log["step"].nunique()
    step = int(evals["step"].iloc[-1])
    row = next(r for r in rows if r.split("|")[1].strip() == str(step))
    assert f"{evals['eval_loss'].iloc[-1]:.4f}" in row and f"{trains.set_index('step')['train_loss'][step]:.4f}" in row
    # the loss curve: a valid PNG in the adapter folder (so in its content hash), and shown in the metadata
    png = (folder / LOSS_CURVE_FILE).read_bytes()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    embedded = metadata["loss_curve"]
    assert isinstance(embedded, dg.MarkdownMetadataValue) and LOSS_CURVE_FILE in embedded.value
    assert base64.b64decode(embedded.value.split("base64,", 1)[1].split(")", 1)[0]) == png
    assert result.asset_materializations_for_node("adapter_B")[0].tags["dagster/data_version"] == folder_hash(folder)


def test_failing_training_process_fails_the_asset_with_its_error(tmp_path, untrained_tiny_model):
    @dg.asset(name="train_A")
    def train_A() -> pd.DataFrame:
        return pairs(12)

    resources = {"io_manager": DataLakeIOManager(base_path=str(tmp_path / "lake")),
                 "base_model": tiny_base(untrained_tiny_model, pretrain_steps=0),
                 "training": Training(staging_dir=str(tmp_path / "staging"), mixed_precision="fp16", max_length=128)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([train_A, adapter_B], resources=resources, instance=instance, raise_on_error=False)
        errors = [event.dagster_event.engine_event_data.error for event in instance.all_logs(result.run_id)
                  if event.is_dagster_event and event.dagster_event.is_engine_event
                  and event.dagster_event.engine_event_data.error]
    assert not result.success
    assert not (tmp_path / "lake" / "adapter_B").exists()
    # the training process's own exception, sent back through Pipes, is in the step's log
    assert any("mixed_precision fp16 needs a GPU" in error.message for error in errors), errors


def test_translate_command_uses_the_trained_adapter(pipes_run, untrained_tiny_model, tmp_path, capsys):
    lake, table, _, _ = pipes_run
    profile = write_profile(tmp_path / "profile.yaml", lake, untrained_tiny_model, pretrain_steps=0)
    sentences = list(table["source"].head(3))
    (tmp_path / "in.txt").write_text(f"{sentences[0]}\n\n{sentences[1]}\n{sentences[2]}\n")
    assert cli.main(["translate", str(tmp_path / "in.txt"), "--profile", str(profile), "--adapter", "adapter_B",
                     "-o", str(tmp_path / "out.txt"), "--max-new-tokens", "12"]) == 0
    lines = (tmp_path / "out.txt").read_text().split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[4] == ""  # blank line kept, one line per line

    from peft import PeftModel

    tokenizer = load_tokenizer(str(untrained_tiny_model))
    base = load_causal_lm(str(untrained_tiny_model), device="cpu", dtype="fp32")
    adapted = PeftModel.from_pretrained(load_causal_lm(str(untrained_tiny_model), device="cpu", dtype="fp32"), str(lake / "adapter_B"))
    expected = translate(adapted.eval(), tokenizer, sentences, "de", "fr", max_new_tokens=12)
    assert [lines[0], lines[2], lines[3]] == expected
    assert expected != translate(base, tokenizer, sentences, "de", "fr", max_new_tokens=12)  # the adapter counts

    with pytest.raises(LakeError, match="no adapter folder adapter_X and no asset adapter_X"):
        cli.main(["translate", str(tmp_path / "in.txt"), "--profile", str(profile), "--adapter", "adapter_X"])
