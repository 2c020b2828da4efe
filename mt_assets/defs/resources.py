"""Resources: the experiment's settings and the swappable corpus sources."""


from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from mt_assets.lib import corpus
from mt_assets.lib.languages import language


class Experiment(dg.ConfigurableResource):
    """The experiment's language pair, sample size, seed and split; shared by every asset."""

    source_lang: str = "de"
    target_lang: str = "fr"
    sample_size: int = 1000
    seed: int = 42
    test_fraction: float = 0.2

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
    def rows(self, source_lang: str, target_lang: str) -> Iterator[corpus.RawPair]:
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

    def rows(self, source_lang: str, target_lang: str) -> Iterator[corpus.RawPair]:
        return corpus.read_hf_dataset(self.dataset, self.config, self.split, source_lang, target_lang,
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

    def rows(self, source_lang: str, target_lang: str) -> Iterator[corpus.RawPair]:
        return corpus.read_local(self.format, Path(self.path), source_lang, target_lang,
                                 self.source_column, self.target_column)

    @property
    def origin(self) -> str:
        return f"{Path(self.path).name}:{self.format}"
