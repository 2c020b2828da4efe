"""Data assets: the seeded corpus sample and its seeded train/test split, with their checks."""


import dagster as dg
import pandas as pd

from mt_assets.defs.resources import CorpusSource, Experiment, HuggingFaceCorpus
from mt_assets.defs.tables import PAIR_TABLE_METADATA, PairTable, pair_table_asset, preview
from mt_assets.defs.versioning import versioned
from mt_assets.lib.data import validators
from mt_assets.lib.models.hub import hub_commit
from mt_assets.lib.data.sampling import sample_pairs, split_train_test

DATA_KINDS = {"pandas", "parquet"}


@pair_table_asset(
    group_name="data",
    description="A seeded random sample of distinct, clean pairs from the configured corpus "
    "(OPUS-100 de-fr by default). What cleaning removed is counted in the metadata.",
)
def opus_sample(context: dg.AssetExecutionContext, experiment: Experiment,
                corpus: CorpusSource) -> dg.Output[pd.DataFrame]:
    source_lang, target_lang = experiment.check_languages()
    context.log.info(f"Sampling {experiment.sample_size} pairs from {corpus.origin} with seed {experiment.seed}")
    sample, report = sample_pairs(corpus.rows(source_lang, target_lang), experiment.sample_size,
                                  experiment.seed, source_lang, target_lang, corpus.origin,
                                  max_chars=experiment.max_chars)
    context.add_output_metadata({"cleaning": report, "seed": experiment.seed, "preview": preview(sample),
                                 "corpus_revision": corpus_revision(corpus)})
    return versioned(sample)


def corpus_revision(corpus: CorpusSource) -> str:
    """For lineage: the commit the Hub serves for a Hub dataset's configured revision (unset: its
    default branch); the configured revision when unresolved; empty for a local corpus."""
    if not isinstance(corpus, HuggingFaceCorpus):
        return ""
    return hub_commit(corpus.dataset, corpus.revision, "dataset") or corpus.revision or ""


@dg.multi_asset(
    group_name="data",
    outs={
        "train_A": dg.AssetOut(kinds=DATA_KINDS, code_version="1", dagster_type=PairTable, metadata=PAIR_TABLE_METADATA,
                               is_required=False, description="The training side of the seeded split of opus_sample."),
        "test_A": dg.AssetOut(kinds=DATA_KINDS, code_version="1", dagster_type=PairTable, metadata=PAIR_TABLE_METADATA,
                              is_required=False, description="The held-out side of the seeded split of opus_sample: "
                              "every system is scored on it, and nothing trains on it."),
    },
    can_subset=True,
)
def train_test_split(context: dg.AssetExecutionContext, experiment: Experiment, opus_sample: pd.DataFrame):
    """Split opus_sample into train_A and test_A (test share `experiment.test_fraction`).

    Either side can be materialized alone: the split is a function of opus_sample and the seed, so
    it matches the other side made from the same opus_sample (no_test_pair_in_train checks that)."""
    train, test = split_train_test(opus_sample, experiment.test_fraction, experiment.seed)
    context.log.info(f"Split {len(opus_sample)} pairs into {len(train)} train and {len(test)} test")
    selected = context.op_execution_context.selected_output_names
    for name, table in (("train_A", train), ("test_A", test)):
        if name in selected:
            yield versioned(table, output_name=name, metadata={"preview": preview(table)})


def check_result(finding: validators.Finding, passed: bool | None = None, severity=dg.AssetCheckSeverity.ERROR,
            **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=finding.ok if passed is None else passed,
        severity=severity,
        metadata={"flagged": finding.count, "rows": finding.total,
                  "examples": dg.MetadataValue.json(finding.examples), **metadata},
    )


def table_checks(asset_key: str) -> list[dg.AssetChecksDefinition]:
    """Text-quality checks shared by every pair table."""

    @dg.asset_check(asset=asset_key, name="no_blank_text",
                    description="No pair has an empty or whitespace-only source or target.")
    def no_blank_text(table: pd.DataFrame) -> dg.AssetCheckResult:
        return check_result(validators.blank_text(table))

    @dg.asset_check(asset=asset_key, name="no_duplicate_pairs",
                    description="No pair repeats another pair's source and target.")
    def no_duplicate_pairs(table: pd.DataFrame) -> dg.AssetCheckResult:
        return check_result(validators.duplicate_pairs(table))

    @dg.asset_check(asset=asset_key, name="source_differs_from_target",
                    description="No pair's target is a copy of its source.")
    def source_differs_from_target(table: pd.DataFrame) -> dg.AssetCheckResult:
        return check_result(validators.source_equals_target(table))

    return [no_blank_text, no_duplicate_pairs, source_differs_from_target]


@dg.asset_check(asset="opus_sample", description="The sample has the configured number of pairs.")
def sample_size_reached(opus_sample: pd.DataFrame, experiment: Experiment) -> dg.AssetCheckResult:
    return check_result(validators.size_shortfall(opus_sample, experiment.sample_size),
                   expected=experiment.sample_size, actual=len(opus_sample))


@dg.asset_check(asset="test_A", additional_ins={"train_A": dg.AssetIn("train_A")}, blocking=True,
                description="No test_A pair, and no test_A source sentence, occurs in train_A. "
                "Blocking: a leak would make every score meaningless.")
def no_test_pair_in_train(test_A: pd.DataFrame, train_A: pd.DataFrame) -> dg.AssetCheckResult:
    return check_result(validators.overlap(train_A, test_A))


data_assets = [opus_sample, train_test_split]
data_checks = [*table_checks("opus_sample"), *table_checks("train_A"), *table_checks("test_A"),
               sample_size_reached, no_test_pair_in_train]
