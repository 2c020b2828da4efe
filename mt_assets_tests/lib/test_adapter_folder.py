"""lib.lora.adapter_folder: the training log shown without nan rows, the final losses as numbers, and
what the metadata says when there is no validation split."""

from __future__ import annotations

import math

from mt_assets.lib.lora.adapter_folder import (LOSS_CURVE_FILE, adapter_metadata, log_markdown, training_log,
                                               write_loss_curve, write_training_files)

# The Trainer's log history: a train loss every step, a validation loss every second step (its own entry).
HISTORY = [{"loss": 2.123456789, "step": 1, "epoch": 0.25}, {"loss": 1.9876543, "step": 2, "epoch": 0.5},
           {"eval_loss": 2.0011223344, "step": 2, "epoch": 0.5}, {"loss": 1.5, "step": 3, "epoch": 0.75},
           {"loss": 1.25, "step": 4, "epoch": 1.0}, {"eval_loss": 1.75, "step": 4, "epoch": 1.0},
           {"train_runtime": 3.0, "step": 4, "epoch": 1.0}]
SUMMARY = {"trainable_parameters": 10, "steps": 4, "first_train_loss": 2.123456789, "final_train_loss": 1.25,
           "validation_loss": 1.75, "weights_dtype": "float32", "mixed_precision": "no", "device": "cpu",
           "world_size": 1, "train_pairs": 36, "validation_pairs": 4}


def test_log_table_has_one_row_per_step_with_both_losses_and_no_nan():
    log = training_log(HISTORY)
    assert log["eval_loss"].isna().sum() == 4  # the file keeps the Trainer's rows, NaN where a row has no loss
    shown = log_markdown(log)
    assert "nan" not in shown.lower()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in shown.splitlines()[2:]]
    assert rows == [["1", "0.25", "2.1235", "-"], ["2", "0.50", "1.9877", "2.0011"], ["3", "0.75", "1.5000", "-"],
                    ["4", "1.00", "1.2500", "1.7500"]]


def test_metadata_has_the_final_losses_at_full_precision(tmp_path):
    write_training_files(tmp_path, training_log(HISTORY), SUMMARY)
    metadata = adapter_metadata(tmp_path)
    assert metadata["final_train_loss"] == 1.25 and metadata["final_validation_loss"] == 1.75
    assert metadata["first_train_loss"] == 2.123456789
    assert metadata["validation"] == "4 held-out pairs of the training table"
    assert "loss_curve" not in metadata  # until the asset draws it
    png = write_loss_curve(tmp_path, "B")
    assert (tmp_path / LOSS_CURVE_FILE).read_bytes() == png and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert LOSS_CURVE_FILE in adapter_metadata(tmp_path)["loss_curve"]


def test_without_a_validation_split_the_metadata_says_so_and_has_no_validation_loss(tmp_path):
    history = [h for h in HISTORY if "eval_loss" not in h]
    write_training_files(tmp_path, training_log(history), {**SUMMARY, "validation_loss": None, "validation_pairs": 0})
    metadata = adapter_metadata(tmp_path)
    assert "final_validation_loss" not in metadata
    assert metadata["validation"].startswith("no validation split (training.validation_fraction 0")
    assert math.isclose(metadata["final_train_loss"], 1.25)
    assert "nan" not in metadata["training_log"].lower() and metadata["training_log"].count("| -") == 4
