"""Profiles: one readable YAML file per setup, turned into the resources of the Definitions.

A profile is chosen by name (``demo``, ``paper``: files in mt_assets/profiles/) or by the path of
a YAML file of your own, through the ``MT_ASSETS_PROFILE`` environment variable; ``demo`` when
unset. The assets are the same for every profile: only resources differ, and with them the
executor (``executor``) and the evaluation schedule (``schedule``).

``extends: <profile name or path>`` starts from another profile: its sections are merged key by key
(a section whose ``type`` changes is replaced whole), so a profile can say only what differs.
"""


import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic
import yaml

from mt_assets.defs.data import Experiment, HuggingFaceCorpus, LocalCorpus, OodTest
from mt_assets.defs.evaluation import Evaluation
from mt_assets.defs.fusion import Fusion
from mt_assets.defs.io_manager import DataLakeIOManager
from mt_assets.defs.models import GgufBaseModel, HubBaseModel, TinyBaseModel
from mt_assets.defs.schedules import ScheduleSettings
from mt_assets.defs.synthetic import OpenAICompatibleTeacher, OracleTeacherCorpus, Synthesis, TransformersTeacherModel
from mt_assets.defs.training import Training

BACKENDS = {
    "corpus": ({"huggingface": HuggingFaceCorpus, "local": LocalCorpus}, "huggingface"),
    "base_model": ({"hub": HubBaseModel, "gguf": GgufBaseModel, "tiny": TinyBaseModel}, "hub"),
    "teacher": ({"openai": OpenAICompatibleTeacher, "transformers": TransformersTeacherModel,
                 "oracle": OracleTeacherCorpus}, "openai"),
}
"""Sections whose `type` picks one of several resource classes, and the default type."""
SETTINGS = {"experiment": Experiment, "synthesis": Synthesis, "training": Training, "fusion": Fusion,
            "evaluation": Evaluation}
"""Sections that configure one resource class."""

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_PROFILE = "demo"
PROFILE_TAG = "mt_assets/profile"
PROFILE_HASH_TAG = "mt_assets/profile_hash"


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (at any depth): plain
    SafeLoader keeps the last one and drops the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ProfileError(
                    f"line {key_node.start_mark.line + 1}: setting {key!r} is given twice (first on line "
                    f"{seen[key] + 1}); the second would silently replace the first: merge them into one"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _suggest(name: str, known) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, else nothing."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _refuse_unknown(profile: dict, where: str, given, known) -> None:
    """A ProfileError naming each key of `given` not in `known`, with the closest known key."""
    unknown = sorted(set(given) - set(known), key=str)
    if unknown:
        named = ", ".join(f"{where}{key}{_suggest(key, known)}" for key in unknown)
        raise ProfileError(f"{profile['file']}: unknown setting(s) {named}; known: {sorted(known)}")


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{package_data}", str(PACKAGE_DATA)).replace("{shared_data}", str(shared_data_dir()))
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        below = base.get(key)
        same_type = not isinstance(value, dict) or "type" not in value or (
            isinstance(below, dict) and below.get("type") == value["type"])
        merged[key] = _merge(below, value) if isinstance(value, dict) and isinstance(below, dict) and same_type else value
    return merged


def _read(path: Path, extended_by: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A profile file's settings, on top of those of the profile it `extends`."""
    with path.open(encoding="utf-8") as handle:
        try:
            profile = yaml.load(handle, Loader=_UniqueKeyLoader) or {}
        except ProfileError as err:
            raise ProfileError(f"profile file {path}, {err}") from None
    if not isinstance(profile, dict):
        raise ProfileError(f"profile file {path} must hold a mapping of settings")
    base = profile.pop("extends", None)
    if base is None:
        return profile
    relative = Path(str(base))
    base_path = profile_path(str(path.parent / relative) if relative.suffix in (".yaml", ".yml")
                             and not relative.is_absolute() else str(base))
    if base_path.resolve() in {p.resolve() for p in (path, *extended_by)}:
        raise ProfileError(f"profile file {path}: `extends: {base}` goes round in a circle")
    return _merge(_read(base_path, (path, *extended_by)), profile)


def load_profile(name_or_path: str | None = None) -> dict[str, Any]:
    """Read a profile (default: $MT_ASSETS_PROFILE, else demo) with placeholders expanded."""
    path = profile_path(name_or_path or os.environ.get("MT_ASSETS_PROFILE") or DEFAULT_PROFILE)
    profile = _expand(_read(path))
    profile["name"] = path.stem
    profile["file"] = str(path)
    return profile


def _section(profile: dict, key: str) -> dict:
    section = profile.get(key) or {}
    if not isinstance(section, dict):
        raise ProfileError(f"{profile['file']}: setting {key!r} must be a mapping")
    return dict(section)


def _build(cls, profile: dict, key: str, settings: dict):
    _refuse_unknown(profile, f"{key}.", settings, getattr(cls, "model_fields", settings))
    try:
        return cls(**settings)
    except pydantic.ValidationError as err:
        problems = "; ".join(f"{key}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ProfileError(f"{profile['file']}: invalid settings in {key!r}: {problems}") from None
    except Exception as err:
        raise ProfileError(f"{profile['file']}: invalid settings in {key!r}: {err}") from err


def _backend(profile: dict, key: str, settings: dict | None = None, kinds: str | None = None):
    """The resource of a section whose `type` picks its class (`kinds`: the BACKENDS entry, default `key`)."""
    settings = _section(profile, key) if settings is None else dict(settings)
    classes, default = BACKENDS[kinds or key]
    kind = settings.pop("type", default)
    if kind not in classes:
        raise ProfileError(f"{profile['file']}: {key}.type {kind!r} is not one of {sorted(classes)}")
    return _build(classes[kind], profile, key, settings)


def ood_resources(profile: dict) -> dict[str, Any]:
    """``ood_test`` (name, size) and ``ood_corpus`` (a corpus section) from the optional ``ood_test``
    section; none without it."""
    settings = _section(profile, "ood_test")
    if not settings:
        return {}
    corpus = settings.pop("corpus", None)
    if not isinstance(corpus, dict):
        raise ProfileError(f"{profile['file']}: ood_test.corpus must be a corpus section (type, path, format, ...)")
    return {"ood_test": _build(OodTest, profile, "ood_test", settings),
            "ood_corpus": _backend(profile, "ood_test.corpus", corpus, kinds="corpus")}


def ood_test_name(profile: dict) -> str | None:
    """The label of the profile's out-of-domain test set, None without one."""
    return ood_resources(profile)["ood_test"].name if _section(profile, "ood_test") else None


def build_resources(profile: dict) -> dict[str, Any]:
    """The resources for a loaded profile, keyed as the assets' parameters name them."""
    known = {"data_lake", "executor", "schedule", "ood_test", *BACKENDS, *SETTINGS}
    _refuse_unknown(profile, "", set(profile) - {"name", "file"}, known)
    resources: dict[str, Any] = {"io_manager": DataLakeIOManager(base_path=str(profile.get("data_lake", "data_lake")))}
    resources.update({key: _backend(profile, key) for key in BACKENDS})
    resources.update({key: _build(cls, profile, key, _section(profile, key)) for key, cls in SETTINGS.items()})
    resources.update(ood_resources(profile))
    return resources


def build_executor(profile: dict) -> dg.ExecutorDefinition | None:
    """The executor a profile's ``executor`` section names (``type``: multiprocess, in_process or k8s,
    ``config``: that executor's own settings); None, Dagster's default, without the section."""
    settings = _section(profile, "executor")
    if not settings:
        return None
    kind, config = settings.pop("type", "multiprocess"), settings.pop("config", None) or {}
    if settings:
        raise ProfileError(f"{profile['file']}: executor takes `type` and `config`, not {sorted(settings)}")
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor  # optional: pip install 'mt_assets[k8s]'

        return k8s_job_executor.configured(config, name="k8s")
    executors = {"multiprocess": dg.multiprocess_executor, "in_process": dg.in_process_executor}
    if kind not in executors:
        raise ProfileError(f"{profile['file']}: executor.type {kind!r} is not one of {sorted([*executors, 'k8s'])}")
    return executors[kind].configured(config, name=kind)


def schedule_settings(profile: dict) -> ScheduleSettings:
    """The evaluation schedule's settings from a profile's ``schedule`` section (weekly by default)."""
    return _build(ScheduleSettings, profile, "schedule", _section(profile, "schedule"))


def profile_tags(profile: dict) -> dict[str, str]:
    """The run tags that say which profile a run used: its name and a SHA-256 of its resolved settings.

    The hash covers the settings after `extends` and placeholders are resolved (not the file's name
    or path): an edited value gives a new hash, the same settings under another name the same one."""
    settings = {key: value for key, value in profile.items() if key not in ("name", "file")}
    content = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return {PROFILE_TAG: profile["name"], PROFILE_HASH_TAG: hashlib.sha256(content.encode()).hexdigest()}
