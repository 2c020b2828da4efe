"""Translations kept across runs: a system's translations of a test set are reused when nothing
that decides them changed.

The key is a SHA-256 of everything greedy decoding depends on: the adapter's content hash (empty
for the base model), the base model and its revision and precision, the test table's content hash,
the few-shot examples, the languages, the decoding settings, and FORMAT (raised when this code
changes what a translation is). One JSON file per key holds the hypotheses and the statistics of
the run that made them (sentences, tokens generated, seconds), so a reused system still reports
its speed. Writes are atomic (a temporary file renamed into place), so concurrent runs never read
half a file and a failed write leaves the previous entry; an unreadable or mismatched entry is not
used, and `skipped` counts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

FORMAT = 2  # 2: the LM head reads a contiguous input (lib.translation.decoding), bf16 rounding may differ


def cache_key(**decided) -> str:
    """The key of one system's translations of one test set: `decided` names everything they depend on."""
    text = json.dumps({"format": FORMAT, **decided}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class TranslationCache:
    """Translations by key in `folder` (created on first write)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.hits = self.misses = self.skipped = 0

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str, sentences: int) -> tuple[list[str], dict] | None:
        """The hypotheses and run statistics stored under `key`, or None. An entry that cannot be read
        or holds other than `sentences` hypotheses is not used (and counted in `skipped`)."""
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            hypotheses, stats = entry["hypotheses"], entry["stats"]
            usable = (isinstance(hypotheses, list) and len(hypotheses) == sentences
                      and all(isinstance(h, str) for h in hypotheses) and isinstance(stats, dict))
        except (OSError, ValueError, KeyError, TypeError):
            usable = False
        if not usable:
            self.skipped += 1
            self.misses += 1
            return None
        self.hits += 1
        return hypotheses, stats

    def put(self, key: str, hypotheses: list[str], stats: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{key[:12]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"hypotheses": hypotheses, "stats": stats}, handle, ensure_ascii=False)
            os.replace(tmp, self._path(key))
        except BaseException:  # a failed write (a full disk, an interrupt) leaves the old entry and no stray file
            Path(tmp).unlink(missing_ok=True)
            raise

    def counts(self) -> dict[str, int]:
        return {"reused": self.hits, "translated": self.misses, "unusable_entries": self.skipped}
