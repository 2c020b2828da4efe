"""Data assets: the seeded corpus sample and its seeded train/test split, with their checks, and
their resources: the experiment's settings and the swappable corpus sources."""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd

from mt_assets.defs.common import AtLeastOne, Fraction, Seed, check_result, table_checks
from mt_assets.defs.tables import PAIR_TABLE_METADATA, PairTable, pair_table_asset, preview
from mt_assets.defs.versioning import versioned
from mt_assets.lib.data import validators
from mt_assets.lib.data.corpus import RawPair, read_hf_dataset, read_local
from mt_assets.lib.data.languages import language
from mt_assets.lib.models.hub import hub_commit
from mt_assets.lib.data.sampling import sample_pairs, split_train_test
from mt_assets.lib.data.text import sentence_key

DATA_KINDS = {"pandas", "parquet"}


class Experiment(dg.ConfigurableResource):
    """The experiment's language pair, sample size, seed and split; shared by every asset."""

    source_lang: str = "de"
    target_lang: str = "fr"
    sample_size: AtLeastOne = 1000
    seed: Seed = 42
    test_fraction: Fraction = 0.2
    max_chars: AtLeastOne = 1000
    """Pairs with a longer source or target are left out of the sample (and counted): one sentence
    of 100,000 characters would otherwise pass every check and exhaust memory in translation."""

    def check_languages(self) -> tuple[str, str]:
        """The validated language pair; an unknown code raises naming the setting."""
        language(self.source_lang, "experiment.source_lang")
        language(self.target_lang, "experiment.target_lang")
        if self.source_lang == self.target_lang:
            raise ValueError(
                f"experiment.source_lang and experiment.target_lang are both {self.source_lang!r}; "
                "set two different languages"
            )
        return self.source_lang, self.target_lang


class CorpusSource(dg.ConfigurableResource, ABC):
    """Where opus_sample draws its pairs from: one subclass per back end."""

    @abstractmethod
    def rows(self, source_lang: str, target_lang: str) -> Iterator[RawPair]:
        """Stream the corpus rows for a language pair."""

    @property
    @abstractmethod
    def origin(self) -> str:
        """A short label for the `origin` column, e.g. ``opus-100:de-fr:test``."""


class HuggingFaceCorpus(CorpusSource):
    """A dataset from the Hugging Face Hub (or a local dataset folder), OPUS-100 by default."""

    dataset: str = "Helsinki-NLP/opus-100"
    config: str | None = "de-fr"
    split: str = "test"
    revision: str | None = None
    translation_field: str = "translation"
    streaming: bool = False

    def rows(self, source_lang: str, target_lang: str) -> Iterator[RawPair]:
        return read_hf_dataset(self.dataset, self.config, self.split, source_lang, target_lang,
                                      self.revision, self.translation_field, self.streaming)

    @property
    def origin(self) -> str:
        return ":".join(part for part in (self.dataset.rstrip("/").split("/")[-1], self.config, self.split) if part)


class LocalCorpus(CorpusSource):
    """A local corpus file: ``tsv``, ``parquet``, ``moses`` (path is the prefix) or ``tatoeba``."""

    path: str
    format: str = "tsv"
    source_column: str | None = None
    target_column: str | None = None

    def rows(self, source_lang: str, target_lang: str) -> Iterator[RawPair]:
        return read_local(self.format, Path(self.path), source_lang, target_lang,
                                 self.source_column, self.target_column)

    @property
    def origin(self) -> str:
        return f"{Path(self.path).name}:{self.format}"


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


class OodTest(dg.ConfigurableResource):
    """An out-of-domain test set (profile section ``ood_test``): its label in the evaluation tables and
    its size; its pairs come from the ``ood_corpus`` resource (the section's ``corpus``)."""

    name: str = "ood"
    """The `test_set` label of its rows in translations and bleu_table (e.g. tatoeba)."""
    size: AtLeastOne = 200


@pair_table_asset(
    group_name="data",
    description="A seeded sample of the out-of-domain corpus (profile section ood_test), scored by every "
    "system beside test_A. Pairs whose source or target sentence occurs in opus_sample are left out and counted.",
)
def test_ood(context: dg.AssetExecutionContext, experiment: Experiment, ood_test: OodTest, ood_corpus: CorpusSource,
             opus_sample: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    source_lang, target_lang = experiment.check_languages()
    excluded = {"rows": 0}
    rows = unseen_rows(ood_corpus.rows(source_lang, target_lang), opus_sample, excluded)
    sample, report = sample_pairs(rows, ood_test.size, experiment.seed, source_lang, target_lang, ood_corpus.origin,
                                  max_chars=experiment.max_chars)
    context.log.info(f"Sampled {len(sample)} {ood_test.name} pairs from {ood_corpus.origin}; "
                     f"{excluded['rows']} left out as sentences of opus_sample")
    context.add_output_metadata({"excluded_seen_in_opus_sample": excluded["rows"], "cleaning": report,
                                 "test_set": ood_test.name, "seed": experiment.seed, "preview": preview(sample)})
    return versioned(sample)


def unseen_rows(rows: Iterator[RawPair], seen: pd.DataFrame, excluded: dict) -> Iterator[RawPair]:
    """The rows whose source and target sentences (sentence_key) are in neither column of `seen`;
    ``excluded["rows"]`` counts the others."""
    keys = {sentence_key(t) for t in (*seen["source"], *seen["target"])}
    for row in rows:
        if row.skipped is None and (sentence_key(row.source) in keys or sentence_key(row.target) in keys):
            excluded["rows"] += 1
        else:
            yield row


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
ood_assets = [test_ood]
"""Assets of the optional out-of-domain test set (definitions add them when the profile has ood_test)."""
ood_checks = table_checks("test_ood")
data_checks = [*table_checks("opus_sample"), *table_checks("train_A"), *table_checks("test_A"),
               sample_size_reached, no_test_pair_in_train]
