"""Resources: the experiment's settings and the swappable corpus sources."""


from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import dagster as dg
import pydantic

from mt_assets.lib.data import corpus
from mt_assets.lib.data.languages import language


AtLeastOne = Annotated[int, pydantic.Field(ge=1)]
"""A count that 0 would make meaningless (batch sizes, tokens to generate): refused as a setting."""
Positive = Annotated[float, pydantic.Field(gt=0)]
Seed = Annotated[int, pydantic.Field(ge=0, le=2**32 - 1)]
"""A seed every generator takes (numpy's and torch's refuse negative ones)."""
Fraction = Annotated[float, pydantic.Field(gt=0, lt=1)]


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
