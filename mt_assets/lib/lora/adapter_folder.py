"""The adapter folder beside PEFT's own files: the training log, the training summary, the lineage,
the loss curve, and what an adapter's materialization reports from them (`adapter_metadata`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

LOG_FILE = "training_log.csv"
SUMMARY_FILE = "training_summary.json"
LINEAGE_FILE = "lineage.json"
"""Written by the adapter asset: the training table's name and hash, and the base model."""
LOSS_CURVE_FILE = "loss_curve.png"
"""Written by the adapter asset: training and validation loss against the optimizer step."""
RUN_FIELDS = ("wall_seconds", "resumed_from", "mean_train_loss")
"""Summary fields that differ between runs training the same adapter (the mean loss is over the steps
this run trained, after the checkpoint it resumed): returned and reported, but
kept out of the adapter folder's training_summary.json, so a retrained identical adapter hashes the same."""
METADATA_KEYS = ("trainable_parameters", "steps", "final_train_loss", "first_train_loss", "validation_loss",
                 "wall_seconds", "weights_dtype", "mixed_precision")
"""Summary fields reported as metadata (with the training log as Markdown, the device and world size)."""
MARKDOWN_KEYS = ("training_log", "loss_curve")
"""Metadata that is Markdown: the log as a table, the loss curve as an embedded image."""


def training_log(history: list[dict]) -> pd.DataFrame:
    """Trainer log history as a table: step, epoch, train_loss, eval_loss."""
    rows = [{"step": h.get("step"), "epoch": h.get("epoch"), "train_loss": h.get("loss"), "eval_loss": h.get("eval_loss")}
            for h in history if "loss" in h or "eval_loss" in h]
    return pd.DataFrame(rows, columns=["step", "epoch", "train_loss", "eval_loss"]).astype(
        {"train_loss": float, "eval_loss": float})


def write_training_files(folder: Path, log: pd.DataFrame, summary: dict) -> None:
    """The log and the summary (without the RUN_FIELDS) into the adapter folder."""
    log.to_csv(Path(folder) / LOG_FILE, index=False)
    kept = {key: value for key, value in summary.items() if key not in RUN_FIELDS}
    (Path(folder) / SUMMARY_FILE).write_text(json.dumps(kept, indent=2))


def write_lineage(folder: Path, lineage: dict) -> None:
    (Path(folder) / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2))


def read_lineage(folder: Path) -> dict:
    """What training recorded in the folder's LINEAGE_FILE; {} for a folder without one (an adapter
    trained elsewhere)."""
    path = Path(folder) / LINEAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_loss_curve(folder: Path, system: str) -> bytes:
    """The loss curve of the adapter in `folder` (its log's train and validation loss against the step),
    drawn as bleu_chart draws every adapter's, labelled `system`; written to LOSS_CURVE_FILE."""
    from mt_assets.lib.scoring.charts import loss_curves

    png = loss_curves({system: read_adapter_log(folder)})
    (Path(folder) / LOSS_CURVE_FILE).write_bytes(png)
    return png


def log_markdown(log: pd.DataFrame) -> str:
    """The training log as a Markdown table, one row per logged step: the train and validation loss of
    a step side by side ('-' where that step logged none), rounded for display."""
    merged = log.groupby("step", as_index=False, sort=True).agg(
        epoch=("epoch", "max"), train_loss=("train_loss", "first"), eval_loss=("eval_loss", "first"))
    shown = merged.astype(object).where(merged.notna(), None)
    return shown.to_markdown(index=False, floatfmt=("", ".2f", ".4f", ".4f"), missingval="-")


def read_adapter_log(adapter: Path) -> pd.DataFrame:
    with (Path(adapter) / LOG_FILE).open() as handle:
        return pd.read_csv(handle)


def read_adapter_summary(adapter: Path) -> dict:
    return json.loads((Path(adapter) / SUMMARY_FILE).read_text())


def adapter_metadata(folder: Path, run_report: Path | None = None) -> dict:
    """What the adapter's materialization records, read from the files rank 0 wrote: the summary
    fields (the run's own fields from `run_report`), the device, world size, the final losses at full
    precision, the log as Markdown and, once the asset has drawn it, the loss curve as an image."""
    from mt_assets.lib.scoring.charts import markdown_image

    summary = read_adapter_summary(folder)
    if run_report is not None:
        summary.update(json.loads(Path(run_report).read_text()))
    validation = summary.get("validation_pairs", 0)
    metadata = {
        **{key: summary.get(key) for key in METADATA_KEYS},
        "resumed_from": summary.get("resumed_from") or "",
        "device": summary["device"],
        "world_size": summary["world_size"],
        "validation": (f"{validation} held-out pairs of the training table" if validation else
                       "no validation split (training.validation_fraction 0, or under 4 pairs): no validation loss"),
        "training_log": log_markdown(read_adapter_log(folder)),
    }
    if summary.get("validation_loss") is not None:
        metadata["final_validation_loss"] = float(summary["validation_loss"])
    curve = Path(folder) / LOSS_CURVE_FILE
    if curve.is_file():
        image = markdown_image(curve.read_bytes(), "training and validation loss")
        metadata["loss_curve"] = f"{image}\n\n{LOSS_CURVE_FILE} in the adapter folder"
    return metadata
