"""Synthetic-data assets: synth_B written by a teacher, and combined_C = train_A + synth_B.

Teacher back ends are one abstract resource with a subclass each: an OpenAI-compatible endpoint,
an in-process transformers model, and the oracle (real held-out pairs: the offline demo default
and the perfect-teacher control).
"""

import dataclasses
import os
import typing
from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
import pandas as pd
import pydantic

from mt_assets.defs.common import check_result, table_checks
from mt_assets.defs.data import Experiment
from mt_assets.defs.tables import pair_table_asset, preview
from mt_assets.defs.versioning import versioned
from mt_assets.lib.data import corpus
from mt_assets.lib.models import loading
from mt_assets.lib.synth import filters, generation, planning
from mt_assets.lib.data import validators
from mt_assets.lib.synth.teachers import base as teacher_base, local_transformers, oracle
from mt_assets.lib.synth.teachers.openai_compatible import OpenAITeacher, RetryPolicy
from mt_assets.lib.data.sampling import all_pairs
from mt_assets.lib.quiet import QUIET_ENV

def _settings_from(*configs, base: type = dg.ConfigurableResource, only: tuple[str, ...] | None = None,
                   skip: tuple[str, ...] = ()) -> type:
    """A ConfigurableResource base whose fields are those of the lib dataclasses ``configs`` (their
    types and defaults; tuples become lists, which configuration files hold): the settings are
    defined once, in lib, and profile keys are the dataclass field names."""
    namespace: dict = {"__annotations__": {}}
    for config in configs:
        hints = typing.get_type_hints(config)
        for item in dataclasses.fields(config):
            if not item.init or item.name in skip or (only is not None and item.name not in only):
                continue
            hint, default = hints[item.name], item.default
            if default is dataclasses.MISSING:
                default = item.default_factory()
            if typing.get_origin(hint) is tuple:
                hint, default = list[typing.get_args(hint)[0]], list(default)
            namespace["__annotations__"][item.name] = hint
            namespace[item.name] = pydantic.Field(default=default, description=item.metadata.get("help"))
    return type(f"{configs[0].__name__}Settings", (base,), namespace)


def _build(config, settings: dg.ConfigurableResource, **given):
    """The lib dataclass ``config`` from the resource fields named like its fields (lists back to
    tuples), plus ``given``."""
    values = {item.name: getattr(settings, item.name) for item in dataclasses.fields(config)
              if item.init and item.name not in given and item.name in type(settings).model_fields}
    return config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, **given)


class Teacher(dg.ConfigurableResource, ABC):
    """The model that writes synth_B."""

    @abstractmethod
    def build(self, experiment: Experiment, train_A: pd.DataFrame, test_A: pd.DataFrame):
        """A lib.synth.teachers back end ready to serve requests for this experiment's split."""


TEACHER_SETTINGS = ("model", "api_key_env", "max_concurrency", "timeout_s", "temperature", "json_schema")
"""The OpenAITeacher settings a profile may set (besides base_url, base_url_env and the RetryPolicy)."""


class OpenAICompatibleTeacher(_settings_from(OpenAITeacher, RetryPolicy, base=Teacher,
                                             only=(*TEACHER_SETTINGS, *RetryPolicy.__dataclass_fields__))):
    """Any OpenAI-compatible chat-completions endpoint: vLLM, TGI, Ollama, HF Inference Providers,
    OpenAI. The API key is read from the environment variable named by `api_key_env` (never from
    configuration); set `api_key_env` to null for a server without authentication. The other
    settings, their defaults and checks are lib's OpenAITeacher and RetryPolicy."""

    base_url: str = ""
    """The API root, e.g. http://localhost:8000/v1. Shown (in logs, errors) without its user
    information and query string."""
    base_url_env: str | None = None
    """Instead of base_url: the name of an environment variable holding it, for a URL that carries
    credentials (user:password@, ?token=), which then appears in no setting either."""

    @pydantic.model_validator(mode="after")
    def _an_endpoint(self):
        # Only when neither is set: a validation error repeats the settings, base_url included.
        if not self.base_url and not self.base_url_env:
            raise ValueError("set teacher.base_url (the API root, e.g. http://localhost:8000/v1) or "
                             "teacher.base_url_env (an environment variable holding it)")
        return self

    def build(self, experiment: Experiment, train_A: pd.DataFrame, test_A: pd.DataFrame):
        base_url = self.base_url
        if self.base_url_env:
            base_url = os.environ.get(self.base_url_env, "").strip()
            if not base_url or self.base_url:
                raise teacher_base.TeacherConfigError(
                    f"setting teacher.base_url_env names environment variable {self.base_url_env}, which is "
                    "not set: export it with the teacher's API root, e.g. http://localhost:8000/v1"
                    if not base_url else "set one of teacher.base_url and teacher.base_url_env, not both")
        return _build(OpenAITeacher, self, base_url=base_url, retry=_build(RetryPolicy, self))


class TransformersTeacherModel(Teacher):
    """A causal LM run in this process, loaded like the base model (Hub id or local folder)."""

    name_or_path: str
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    temperature: float = 0.7

    def build(self, experiment: Experiment, train_A: pd.DataFrame, test_A: pd.DataFrame):
        def loader():
            return (loading.load_causal_lm(self.name_or_path, self.revision, self.device, self.dtype,
                                          setting="teacher.name_or_path"),
                    loading.load_tokenizer(self.name_or_path, self.revision))

        return local_transformers.TransformersTeacher(loader=loader, model_name=self.name_or_path, temperature=self.temperature)


class OracleTeacherCorpus(Teacher):
    """Real pairs from a held-out corpus, minus everything in train_A and test_A: the perfect-teacher
    upper bound. Its rows are labelled ``synthetic:oracle:...`` in the origin column."""

    path: str
    format: str = "tsv"
    source_column: str | None = None
    target_column: str | None = None

    def build(self, experiment: Experiment, train_A: pd.DataFrame, test_A: pd.DataFrame):
        """An oracle over every usable pair of the corpus (cleaned like opus_sample), minus train_A
        and test_A."""
        source_lang, target_lang = experiment.check_languages()
        rows = corpus.read_local(self.format, Path(self.path), source_lang, target_lang,
                                 self.source_column, self.target_column)
        pool, _ = all_pairs(rows, source_lang, target_lang, f"{Path(self.path).name}:{self.format}")
        return oracle.OracleTeacher(pool, train=train_A, test=test_A)


class Synthesis(_settings_from(planning.SynthConfig, filters.FilterConfig, skip=("filters", "language_confusers"))):
    """How much synthetic data to make, from which prompt, and how it is filtered: the fields of lib's
    SynthConfig and FilterConfig (defaults and checks), and where the teacher's replies are kept."""

    cache_dir: str = "data_lake/.teacher_cache"
    """One file per answered request: a rerun sends only what is missing."""

    @pydantic.model_validator(mode="after")
    def _valid(self):
        self.config()  # lib's checks, when the profile is read
        return self

    def config(self) -> planning.SynthConfig:
        return _build(planning.SynthConfig, self, filters=_build(filters.FilterConfig, self))


@pair_table_asset(
    group_name="synthetic",
    description="Synthetic parallel pairs written by the teacher from the designed prompt (role, topics, "
    "few-shot examples from train_A only), twice the size of train_A by default, after quality filters "
    "whose counts are in the metadata. Rows from the oracle teacher are real held-out pairs.",
)
def synth_B(context: dg.AssetExecutionContext, train_A: pd.DataFrame, test_A: pd.DataFrame,
            experiment: Experiment, teacher: Teacher, synthesis: Synthesis) -> dg.Output[pd.DataFrame]:
    backend = teacher.build(experiment, train_A, test_A)
    config = synthesis.config()
    context.log.info(f"Generating {config.target_size(len(train_A))} pairs with the {backend.backend} teacher")

    def on_progress(snapshot: dict) -> None:
        done = snapshot.get("requests_processed", 0)
        if done and done % 10 == 0:  # the console draws its bar from this line; tqdm's own bar is off then
            context.log.info(f"synthetic pairs: {min(snapshot['accepted'], snapshot['target_size'])}/"
                             f"{snapshot['target_size']} kept ({snapshot})")

    table, report = generation.generate_synthetic(backend, train_A, test_A, config=config,
                                                  cache_dir=synthesis.cache_dir, on_progress=on_progress,
                                                  progress=os.environ.get(QUIET_ENV) != "1")
    distribution = generation.topic_distribution(table)
    counts = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    context.add_output_metadata({
        **{f"report/{k}": v for k, v in counts.items()},
        "backend": report["backend"], "model": str(report["model"]),
        "topic_distribution": dg.MetadataValue.md(distribution.to_markdown(index=False)),
        "preview": preview(table),
    })
    return versioned(table)


@pair_table_asset(
    group_name="synthetic",
    description="train_A followed by synth_B, with the origin column telling them apart.",
)
def combined_C(context: dg.AssetExecutionContext, train_A: pd.DataFrame,
               synth_B: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    table, report = generation.combine_train_synth(train_A, synth_B)
    context.add_output_metadata({**report, "origins": dg.MetadataValue.json(table["origin"].value_counts().to_dict())})
    return versioned(table)


@dg.asset_check(asset="synth_B", additional_ins={"test_A": dg.AssetIn("test_A")}, blocking=True,
                description="No synth_B source or target occurs in test_A (contamination). Blocking: adapters "
                "trained on contaminated data would be scored on their own training sentences.")
def no_test_contamination(synth_B: pd.DataFrame, test_A: pd.DataFrame) -> dg.AssetCheckResult:
    return check_result(filters.contamination(synth_B, test_A))


@dg.asset_check(asset="synth_B", additional_ins={"train_A": dg.AssetIn("train_A")},
                description="synth_B has the configured number of pairs (size_factor x train_A by default).")
def synth_size_reached(synth_B: pd.DataFrame, train_A: pd.DataFrame, synthesis: Synthesis) -> dg.AssetCheckResult:
    expected = synthesis.config().target_size(len(train_A))
    return check_result(validators.size_shortfall(synth_B, expected), expected=expected, actual=len(synth_B))


@dg.asset_check(asset="combined_C", additional_ins={"train_A": dg.AssetIn("train_A"), "synth_B": dg.AssetIn("synth_B")},
                description="combined_C holds every train_A pair and every synth_B pair, told apart by origin.")
def combined_sizes_and_origins(combined_C: pd.DataFrame, train_A: pd.DataFrame,
                               synth_B: pd.DataFrame) -> dg.AssetCheckResult:
    from_train = combined_C["pair_id"].isin(set(train_A["pair_id"])) & combined_C["origin"].isin(set(train_A["origin"]))
    from_synth = combined_C["origin"].str.startswith("synthetic:")
    passed = (len(combined_C) == len(train_A) + len(synth_B) and int(from_train.sum()) == len(train_A)
              and int(from_synth.sum()) == len(synth_B))
    return dg.AssetCheckResult(passed=passed, metadata={
        "rows": len(combined_C), "train_A_rows": len(train_A), "synth_B_rows": len(synth_B),
        "rows_from_train_A": int(from_train.sum()), "rows_from_synth_B": int(from_synth.sum()),
        "origins": dg.MetadataValue.json(combined_C["origin"].value_counts().to_dict())})


synthetic_assets = [synth_B, combined_C]
synthetic_checks = [no_test_contamination, synth_size_reached, combined_sizes_and_origins,
                    *table_checks("synth_B"), *table_checks("combined_C")]
