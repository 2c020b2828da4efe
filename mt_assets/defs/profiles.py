"""Profiles: one readable YAML file per setup, turned into the resources of the Definitions.

A profile is chosen by name (``demo``, ``paper``: files in mt_assets/profiles/) or by the path of
a YAML file of your own, through the ``MT_ASSETS_PROFILE`` environment variable; ``demo`` when
unset. The assets are the same for every profile: only resources differ.
"""


import os
from pathlib import Path
from typing import Any

import yaml

from mt_assets.defs.evaluation import Evaluation
from mt_assets.defs.io_manager import DataLakeIOManager
from mt_assets.defs.models import HubBaseModel, TinyBaseModel
from mt_assets.defs.resources import Experiment, HuggingFaceCorpus, LocalCorpus
from mt_assets.defs.synthetic import OpenAICompatibleTeacher, OracleTeacherCorpus, Synthesis, TransformersTeacherModel
from mt_assets.defs.training import Training

BACKENDS = {
    "corpus": ({"huggingface": HuggingFaceCorpus, "local": LocalCorpus}, "huggingface"),
    "base_model": ({"hub": HubBaseModel, "tiny": TinyBaseModel}, "hub"),
    "teacher": ({"openai": OpenAICompatibleTeacher, "transformers": TransformersTeacherModel,
                 "oracle": OracleTeacherCorpus}, "openai"),
}
"""Sections whose `type` picks one of several resource classes, and the default type."""
SETTINGS = {"experiment": Experiment, "synthesis": Synthesis, "training": Training, "evaluation": Evaluation}
"""Sections that configure one resource class."""

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_PROFILE = "demo"


def shared_data_dir() -> Path:
    """The folder of shared corpora: $MT_ASSETS_SHARED_DATA, default ../shared/data beside the project."""
    configured = os.environ.get("MT_ASSETS_SHARED_DATA")
    if configured:
        return Path(configured)
    return PACKAGE_DATA.parent.parent.parent / "shared" / "data"


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the setting."""


def profile_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ProfileError(f"profile file {candidate} not found (MT_ASSETS_PROFILE={name_or_path})")
        return candidate
    builtin = PROFILE_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(
            f"unknown profile {name_or_path!r} (MT_ASSETS_PROFILE): use one of {known} or the path "
            "of a .yaml file"
        )
    return builtin


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{package_data}", str(PACKAGE_DATA)).replace("{shared_data}", str(shared_data_dir()))
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def load_profile(name_or_path: str | None = None) -> dict[str, Any]:
    """Read a profile (default: $MT_ASSETS_PROFILE, else demo) with placeholders expanded."""
    path = profile_path(name_or_path or os.environ.get("MT_ASSETS_PROFILE") or DEFAULT_PROFILE)
    with path.open(encoding="utf-8") as handle:
        profile = yaml.safe_load(handle) or {}
    if not isinstance(profile, dict):
        raise ProfileError(f"profile file {path} must hold a mapping of settings")
    profile = _expand(profile)
    profile["name"] = path.stem
    profile["file"] = str(path)
    return profile


def _section(profile: dict, key: str) -> dict:
    section = profile.get(key) or {}
    if not isinstance(section, dict):
        raise ProfileError(f"{profile['file']}: setting {key!r} must be a mapping")
    return dict(section)


def _build(cls, profile: dict, key: str, settings: dict):
    try:
        return cls(**settings)
    except Exception as err:  # pydantic validation errors: name the file and section
        raise ProfileError(f"{profile['file']}: invalid settings in {key!r}: {err}") from err


def _backend(profile: dict, key: str):
    settings = _section(profile, key)
    classes, default = BACKENDS[key]
    kind = settings.pop("type", default)
    if kind not in classes:
        raise ProfileError(f"{profile['file']}: {key}.type {kind!r} is not one of {sorted(classes)}")
    return _build(classes[kind], profile, key, settings)


def build_resources(profile: dict) -> dict[str, Any]:
    """The resources for a loaded profile, keyed as the assets' parameters name them."""
    unknown = set(profile) - {"name", "file", "data_lake", *BACKENDS, *SETTINGS}
    if unknown:
        raise ProfileError(f"{profile['file']}: unknown setting(s) {sorted(unknown)}; known: "
                           f"{sorted({'data_lake', *BACKENDS, *SETTINGS})}")
    resources: dict[str, Any] = {"io_manager": DataLakeIOManager(base_path=str(profile.get("data_lake", "data_lake")))}
    resources.update({key: _backend(profile, key) for key in BACKENDS})
    resources.update({key: _build(cls, profile, key, _section(profile, key)) for key, cls in SETTINGS.items()})
    return resources
