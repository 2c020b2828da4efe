"""Building blocks for the end-to-end tests: a tiny base model built once per test session and
resources that point every asset at local files and a temporary data lake."""

from __future__ import annotations

from pathlib import Path

from mt_assets.defs.evaluation import Evaluation
from mt_assets.defs.fusion import Fusion
from mt_assets.defs.io_manager import DataLakeIOManager
from mt_assets.defs.models import TinyBaseModel
from mt_assets.defs.profiles import PACKAGE_DATA
from mt_assets.defs.data import Experiment, LocalCorpus
from mt_assets.defs.synthetic import OracleTeacherCorpus, Synthesis
from mt_assets.defs.training import Training

DEMO_TSV = PACKAGE_DATA / "demo_corpus.tsv"
DEMO_COLUMNS = {"source_column": "de", "target_column": "fr"}


TEST_PRETRAIN_STEPS = 150
"""Pretraining steps of the tests' tiny base model (the demo uses the TinyModelSpec default)."""


def tiny_base(model_dir: Path, pretrain_steps: int = TEST_PRETRAIN_STEPS) -> TinyBaseModel:
    return TinyBaseModel(path=str(model_dir), corpus_path=str(DEMO_TSV), corpus_format="tsv",
                         pretrain_steps=pretrain_steps, dtype="fp32", **DEMO_COLUMNS)  # as the tiny profile


def graph_resources(lake: Path, base_model: TinyBaseModel, *, sample_size: int = 60, seed: int = 42,
                    teacher=None, training: dict | None = None) -> dict:
    """Resources for the whole graph on the demo corpus, the tiny model and the oracle teacher."""
    recipe = {"r": 64, "alpha": 128, "dropout": 0.0, "target_modules": ["all-linear"],
              "learning_rate": 3e-3, "epochs": 6, "batch_size": 8, "max_length": 128, "logging_steps": 2,
              "mixed_precision": "no", **(training or {})}
    return {
        "io_manager": DataLakeIOManager(base_path=str(lake)),
        "experiment": Experiment(sample_size=sample_size, seed=seed, test_fraction=0.2),
        "corpus": LocalCorpus(path=str(DEMO_TSV), format="tsv", **DEMO_COLUMNS),
        "base_model": base_model,
        "teacher": teacher or OracleTeacherCorpus(path=str(DEMO_TSV), format="tsv", **DEMO_COLUMNS),
        "synthesis": Synthesis(cache_dir=str(lake / ".teacher_cache")),
        "training": Training(**recipe),  # staging: the default, .staging/ inside the lake
        "fusion": Fusion(),  # the default: an even linear merge of adapter_B and adapter_C
        "evaluation": Evaluation(batch_size=32, max_new_tokens=40, n_bootstrap=200),
    }
