"""Profiles for tests that go through the command line or the UI: the tiny profile, smaller, with its
data lake, base model and Dagster instance in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_profile(path: Path, lake: Path, model_dir: Path, pretrain_steps: int, **sections) -> Path:
    """A profile file that `extends: tiny` with the end-to-end tests' sizes (60 pairs, 4 epochs)."""
    profile = {
        "extends": "tiny",
        "data_lake": str(lake),
        "experiment": {"sample_size": 60},
        "base_model": {"path": str(model_dir), "pretrain_steps": pretrain_steps},
        "synthesis": {"cache_dir": str(lake / ".teacher_cache")},
        "training": {"r": 32, "alpha": 64, "epochs": 4, "logging_steps": 2, "staging_dir": str(lake / ".staging")},
        "evaluation": {"max_new_tokens": 40, "n_bootstrap": 200},
    }
    for key, value in sections.items():
        profile[key] = {**profile.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path
