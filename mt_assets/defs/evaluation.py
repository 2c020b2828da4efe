"""Evaluation assets: translations of test_A by every system, the BLEU table and its chart.

Every row of `translations` and `bleu_table` carries lineage: the content hashes of test_A, of the
table the adapter was trained on, and of the adapter folder, plus the base model reference.
"""

import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from mt_assets.defs.common import GPU_POOL, GPU_TAGS, AtLeastOne, NonNegative
from mt_assets.defs.fusion import FUSED_ADAPTERS
from mt_assets.defs.io_manager import Folder
from mt_assets.defs.data import Experiment
from mt_assets.defs.models import BaseModel
from mt_assets.defs.tables import BLEU_TABLE_SCHEMA, TRANSLATIONS_SCHEMA
from mt_assets.defs.versioning import versioned
from mt_assets.lib.lora.adapter_folder import read_adapter_log
from mt_assets.lib.data import langid
from mt_assets.lib.scoring.charts import bleu_bars, loss_curves, markdown_image
from mt_assets.lib.scoring.metrics import score_systems
from mt_assets.lib.translation.cache import TranslationCache
from mt_assets.lib.translation.fewshot import draw_examples, example_pairs
from mt_assets.lib.translation.prompt import check_prompts_fit
from mt_assets.lib.translation.systems import attach_adapters, translate_systems

SYSTEMS = {"A": None, "A_fewshot": None, "B": "adapter_B", "C": "adapter_C", "D": "adapter_D", "E": "adapter_E"}
"""System name -> the adapter asset it uses (A is the base model, zero-shot; A_fewshot the base model
shown evaluation.fewshot_k examples from train_A before each sentence; E is adapter_B and adapter_C merged)."""
FEWSHOT_SYSTEM = "A_fewshot"
BASELINES = ("A", "B")


class Evaluation(dg.ConfigurableResource):
    """How systems are run and scored on test_A."""

    batch_size: AtLeastOne = 16
    """Sentences per batch, when token_budget is None."""
    max_new_tokens: AtLeastOne = 128
    decoder: str = "fast"
    """fast: lib.translation.decoding's greedy loop (preallocated KV cache, finished rows leave the batch);
    generate: transformers' generate, the reference. Both give the same translations."""
    token_budget: int | None = None
    """fast decoder: batches of as many sentences as fit in this many tokens of prompt plus
    max_new_tokens (e.g. 65536 on an 80 GB GPU for a 1.3B model); None: batch_size sentences."""
    kernels: str = "fast"
    """fast (fused attention) or eager attention: the same translations. The GELU is fused either way
    (lib.translation.kernels)."""
    n_bootstrap: int = 1000
    test_set_name: str = "test_A"
    """The `test_set` label of test_A's rows in translations and bleu_table."""
    fewshot_k: NonNegative = 3
    """Worked examples from train_A (a draw seeded by experiment.seed, never a test_A pair) that system
    A_fewshot shows the base model before each sentence; 0: no A_fewshot system."""
    cache_dir: str | None = None
    """A folder where each system's translations of each test set are kept (lib.translation.cache); a later
    run reuses them while the adapter, base model, test set, examples and these settings are unchanged.
    None: every run translates everything."""

    def systems(self) -> dict[str, str | None]:
        """The systems this evaluation runs: SYSTEMS, without A_fewshot when fewshot_k is 0."""
        return {s: a for s, a in SYSTEMS.items() if s != FEWSHOT_SYSTEM or self.fewshot_k > 0}


def _adapter_ins() -> dict[str, dg.AssetIn]:
    return {asset: dg.AssetIn(asset) for asset in SYSTEMS.values() if asset}


def build_translations(ood_name: str | None) -> dg.AssetsDefinition:
    """The translations asset: test_A, and test_ood (labelled `ood_name`) when the profile has one."""
    ood_in = {"test_ood": dg.AssetIn("test_ood")} if ood_name else {}

    @dg.asset(
        name="translations",
        group_name="evaluation",
        code_version="3",
        kinds={"pytorch", "pandas", "parquet"},
        pool=GPU_POOL,
        op_tags=GPU_TAGS,
        ins={"test_A": dg.AssetIn("test_A"), "train_A": dg.AssetIn("train_A"), **ood_in, **_adapter_ins()},
        metadata={"dagster/column_schema": TRANSLATIONS_SCHEMA},
        description="Greedy translations of test_A (and of test_ood when configured) by system A (base model, "
        "zero-shot), A_fewshot (base model shown evaluation.fewshot_k examples from train_A) and systems B, C, D, "
        "E (the base model with adapter_B, adapter_C, adapter_D, adapter_E), one row per test set, pair and system, with lineage.",
    )
    def translations(context: dg.AssetExecutionContext, base_model: BaseModel, evaluation: Evaluation,
                     experiment: Experiment, **inputs) -> dg.Output[pd.DataFrame]:
        train_A, test_A = inputs.pop("train_A"), inputs.pop("test_A")
        test_sets = {evaluation.test_set_name: test_A}
        if ood_name:
            if ood_name == evaluation.test_set_name:
                raise ValueError(f"ood_test.name and evaluation.test_set_name are both {ood_name!r}: the two test "
                                 "sets' rows would mix; give them different names")
            test_sets[ood_name] = inputs.pop("test_ood")
        systems = evaluation.systems()
        examples = draw_examples(train_A, test_A, evaluation.fewshot_k, experiment.seed)  # raises on a test_A pair
        tokenizer = base_model.load_tokenizer()
        model = base_model.load_model()
        for name, test in test_sets.items():  # before any work
            check_prompts_fit(tokenizer, model.config, list(test["source"]), test["source_lang"].iloc[0],
                              test["target_lang"].iloc[0], evaluation.max_new_tokens, name,
                              (f"pair {p}" for p in test["pair_id"]),
                              "Lower setting experiment.max_chars (samples leave longer pairs out), "
                              "evaluation.max_new_tokens or evaluation.fewshot_k", examples=example_pairs(examples))
        # the IO manager has checked each folder against its recorded content hash
        model = attach_adapters(model, {system: (asset, inputs[asset]) for system, asset in systems.items() if asset})
        fewshot = {FEWSHOT_SYSTEM: examples} if FEWSHOT_SYSTEM in systems else {}
        cache = TranslationCache(evaluation.cache_dir) if evaluation.cache_dir else None
        decoding = {name: {} for name in test_sets}
        table = pd.concat([translate_systems(
            model, tokenizer, test, systems, inputs, base_model.reference(), log=context.log.info, fewshot=fewshot,
            cache=cache, cache_scope={"precision": base_model.precision()}, stats=decoding[name],
            batch_size=evaluation.batch_size, max_new_tokens=evaluation.max_new_tokens, decoder=evaluation.decoder,
            token_budget=evaluation.token_budget, kernels=evaluation.kernels).assign(test_set=name)
            for name, test in test_sets.items()], ignore_index=True)
        context.add_output_metadata({
            "fewshot_pair_ids": dg.MetadataValue.json(list(examples["pair_id"])),
            "test_sets": dg.MetadataValue.json({name: len(test) for name, test in test_sets.items()}),
            "empty_hypotheses": {s: int((g["hypothesis"] == "").sum()) for s, g in table.groupby("system")},
            "base_model_dtype": base_model.precision(),
            "decoding": dg.MetadataValue.json(decoding),
            **({"translation_cache": dg.MetadataValue.json(cache.counts())} if cache else {}),
            "examples": dg.MetadataValue.md(table.groupby("system").head(2)[
                ["system", "source", "reference", "hypothesis"]].to_markdown(index=False)),
        })
        return versioned(table)

    return translations


LINEAGE_COLUMNS = ["test_table_hash", "adapter", "adapter_hash", "training_table", "training_table_hash",
                   "base_model", "base_revision", "fewshot_pair_ids"]


@dg.asset(
    group_name="evaluation",
    code_version="3",
    kinds={"pandas", "parquet"},
    metadata={"dagster/column_schema": BLEU_TABLE_SCHEMA},
    description="Per system and test set: sacreBLEU BLEU and chrF with signatures and 95% bootstrap confidence intervals, "
    "paired bootstrap p-values against A and against B within the test set, the off-target rate, and lineage hashes.",
)
def bleu_table(context: dg.AssetExecutionContext, translations: pd.DataFrame,
               evaluation: Evaluation) -> dg.Output[pd.DataFrame]:
    if "test_set" not in translations:  # a table from before test sets were labelled
        translations = translations.assign(test_set=evaluation.test_set_name)
    names = [evaluation.test_set_name, *sorted(set(translations["test_set"]) - {evaluation.test_set_name})]
    table = pd.concat([_score_test_set(translations[translations["test_set"] == name], evaluation).assign(test_set=name)
                       for name in names], ignore_index=True)
    lineage = translations.groupby(["system", "test_set"])[LINEAGE_COLUMNS].first()
    table = table.join(lineage, on=["system", "test_set"])
    table.insert(1, "test_set", table.pop("test_set"))
    plots = {}  # floats per system, so the UI's Plots tab charts them run over run
    for row in table.itertuples():
        prefix = "" if row.test_set == evaluation.test_set_name else f"{row.test_set}/"
        plots[f"bleu/{prefix}{row.system}"] = dg.MetadataValue.float(float(row.bleu))
        plots[f"chrf/{prefix}{row.system}"] = dg.MetadataValue.float(float(row.chrf))
        if not pd.isna(row.bleu_p_vs_A):
            plots[f"p_vs_A/{prefix}{row.system}"] = dg.MetadataValue.float(float(row.bleu_p_vs_A))
    fewshot = table.loc[table["fewshot_pair_ids"] != "", "fewshot_pair_ids"]
    plots["fewshot_pair_ids"] = dg.MetadataValue.json(fewshot.iloc[0].split(",") if len(fewshot) else [])
    context.add_output_metadata({**plots, "scores": dg.MetadataValue.md(
        table[["system", "test_set", "bleu", "bleu_ci95", "chrf", "chrf_ci95", "off_target_rate"]].round(2).to_markdown(index=False))})
    return versioned(table)


@dg.asset(
    group_name="evaluation",
    code_version="3",
    kinds={"matplotlib", "png"},
    ins={"bleu_table": dg.AssetIn("bleu_table"), **_adapter_ins()},
    description="PNG charts: BLEU and chrF per system with 95% CI error bars, and train/validation loss "
    "curves per trained adapter (not E, merged). Shown on this asset's page in the UI.",
)
def bleu_chart(context: dg.AssetExecutionContext, bleu_table: pd.DataFrame, **adapters) -> dg.Output[Folder]:
    folder = Path(tempfile.mkdtemp(prefix="bleu_chart-"))
    signature = bleu_table["bleu_signature"].iloc[0].split("|version")[0]
    bars = bleu_bars(bleu_table, f"{len(bleu_table)} systems, {int(bleu_table['segments'].iloc[0])} test pairs")
    curves = loss_curves({system: read_adapter_log(adapters[asset]) for system, asset in SYSTEMS.items()
                         if asset and asset not in FUSED_ADAPTERS})  # merged adapters have no training log
    (folder / "bleu.png").write_bytes(bars)
    (folder / "loss.png").write_bytes(curves)
    context.add_output_metadata({
        "bleu_chart": dg.MetadataValue.md(markdown_image(bars, "BLEU per system")),
        "loss_curves": dg.MetadataValue.md(markdown_image(curves, "loss curves")),
        "bleu_signature": signature,
    })
    return versioned(Folder(folder))


def _score_test_set(translations: pd.DataFrame, evaluation: Evaluation) -> pd.DataFrame:
    """One row per system of one test set's translations: scores, p-values against A and B, off-target rate."""
    references = translations.loc[translations["system"] == "A", "reference"].tolist()
    systems = {s: g["hypothesis"].tolist() for s, g in translations.groupby("system", sort=True)}
    table = score_systems(systems, references, BASELINES, n_bootstrap=evaluation.n_bootstrap)
    target_lang = translations["target_lang"].iloc[0]
    candidates = langid.candidates_for(target_lang, translations["source_lang"].iloc[0])
    table["off_target_rate"] = [langid.off_target_rate(systems[s], target_lang, candidates) for s in table["system"]]
    table["empty_outputs"] = [sum(1 for h in systems[s] if not h.strip()) for s in table["system"]]
    return table



@dg.asset_check(asset="translations", additional_ins={"test_A": dg.AssetIn("test_A")},
                description="Every test_A pair has a translation from every system.")
def every_test_pair_translated(translations: pd.DataFrame, test_A: pd.DataFrame,
                               evaluation: Evaluation) -> dg.AssetCheckResult:
    expected = set(test_A["pair_id"])
    translations = translations[translations["test_set"] == evaluation.test_set_name]
    systems = evaluation.systems()
    missing = {s: len(expected - set(translations.loc[translations["system"] == s, "pair_id"])) for s in systems}
    empty = {s: int(((translations["system"] == s) & (translations["hypothesis"].str.strip() == "")).sum())
             for s in systems}
    return dg.AssetCheckResult(passed=sum(missing.values()) == 0,
                               metadata={"missing": missing, "empty_outputs": empty, "test_pairs": len(expected)})


@dg.asset_check(asset="bleu_table", description="System B (LoRA on train_A) scores above system A (the base "
                "model) in BLEU, or in chrF when their BLEU ties. A warning with the numbers when it does not.")
def b_beats_a(bleu_table: pd.DataFrame, evaluation: Evaluation) -> dg.AssetCheckResult:
    scores = bleu_table[bleu_table["test_set"] == evaluation.test_set_name].set_index("system")
    bleu_a, bleu_b = float(scores.loc["A", "bleu"]), float(scores.loc["B", "bleu"])
    chrf_a, chrf_b = float(scores.loc["A", "chrf"]), float(scores.loc["B", "chrf"])
    # On a small test set both BLEU scores can be 0 (no 4-gram matches); chrF then decides.
    return dg.AssetCheckResult(
        passed=bleu_b > bleu_a or (bleu_b == bleu_a and chrf_b > chrf_a), severity=dg.AssetCheckSeverity.WARN,
        metadata={"bleu_A": bleu_a, "bleu_B": bleu_b, "chrf_A": float(scores.loc["A", "chrf"]),
                  "chrf_B": float(scores.loc["B", "chrf"]), "p_value": float(scores.loc["B", "bleu_p_vs_A"])},
    )


def build_evaluation_assets(ood_name: str | None) -> list[dg.AssetsDefinition]:
    """The evaluation assets; translations also reads test_ood when `ood_name` (its label) is given."""
    return [build_translations(ood_name), bleu_table, bleu_chart]


evaluation_assets = build_evaluation_assets(None)
evaluation_checks = [every_test_pair_translated, b_beats_a]
