"""Pictures of the results: BLEU with confidence intervals, and training/validation loss curves."""

from __future__ import annotations

import io
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

COLORS = {"A": "#9e9e9e", "A_fewshot": "#616161", "B": "#1f77b4", "C": "#ff7f0e", "D": "#2ca02c", "E": "#9467bd"}
"""By system; a system named after one with a suffix (C_oracle, D_gemma) takes its color."""


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def bleu_bars(table: pd.DataFrame, title: str) -> bytes:
    """Bar chart of BLEU and chrF per system, with 95% bootstrap CI error bars: one row of two panels
    per test set (column ``test_set``; a table without it is one test set, test_A)."""
    sets = list(dict.fromkeys(table["test_set"])) if "test_set" in table else ["test_A"]
    figure, axes = plt.subplots(len(sets), 2, figsize=(9, 4 * len(sets)), squeeze=False)
    for row, name in zip(axes, sets):
        scores = table[table["test_set"] == name] if "test_set" in table else table
        for axis, metric, label in ((row[0], "bleu", "BLEU"), (row[1], "chrf", "chrF")):
            colors = [COLORS.get(s, COLORS.get(s.split("_")[0], "#8c564b")) for s in scores["system"]]
            bars = axis.bar(scores["system"], scores[metric], yerr=scores[f"{metric}_ci95"], capsize=6, color=colors)
            if max(len(s) for s in scores["system"]) > 4:  # long names (A_fewshot, C_oracle) would overlap
                axis.tick_params(axis="x", labelrotation=30)
                for tick in axis.get_xticklabels():
                    tick.set_horizontalalignment("right")
            axis.bar_label(bars, labels=[f"{v:.1f}" for v in scores[metric]], padding=3)
            axis.set_ylabel(label)
            axis.set_ylim(0, max(5.0, float((scores[metric] + scores[f"{metric}_ci95"].fillna(0)).max()) * 1.25))
            axis.set_title(f"{label} on {name} (95% CI)")
            axis.grid(axis="y", alpha=0.3)
    figure.subplots_adjust(hspace=0.6)  # room for rotated system names above the next row's titles
    figure.suptitle(title, y=1.03 if len(sets) == 1 else 0.97)
    return _png(figure)


def loss_curves(logs: Mapping[str, pd.DataFrame]) -> bytes:
    """Training and validation loss per adapter; each log has columns step, train_loss, eval_loss."""
    figure, axis = plt.subplots(figsize=(7, 3.8))
    for system, log in logs.items():
        color = COLORS.get(system, None)
        train = log.dropna(subset=["train_loss"])
        axis.plot(train["step"], train["train_loss"], color=color, label=f"{system} train")
        evals = log.dropna(subset=["eval_loss"])
        if len(evals):
            axis.plot(evals["step"], evals["eval_loss"], color=color, linestyle="--", marker="o",
                      label=f"{system} validation")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy (target tokens)")
    axis.set_title("LoRA training loss per adapter")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _png(figure)


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG as a Markdown image embedded in the text (a data URL), as Dagster's UI shows metadata."""
    import base64

    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
