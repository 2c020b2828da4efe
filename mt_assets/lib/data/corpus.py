"""Reading parallel corpora from the Hugging Face Hub and from local files, as a stream of rows.

Every reader yields `RawPair`s (a 1-based row number, source text, target text) without loading
the whole corpus, and raises `CorpusError` naming the file, line or setting at fault.

Supported local formats:
- ``tsv``: a header line, then tab-separated rows; the source and target columns are named.
  Quoted fields are read as csv.writer and pandas ``to_csv(sep="\\t")`` write them.
- ``parquet``: a Parquet file with named source and target columns.
- ``moses``: a line-aligned pair ``<prefix>.<src>`` + ``<prefix>.<tgt>`` (each optionally ``.gz``).
- ``tatoeba``: Tatoeba's 4-column export ``<lang3> <lang3> <text> <text>`` (e.g. ``deu fra ...``).

Text lines end at LF (or CRLF) only, as ``wc -l`` counts them.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mt_assets.lib.data.languages import iso639_3

LOCAL_FORMATS = ("tsv", "parquet", "moses", "tatoeba")


class CorpusError(ValueError):
    """A corpus that cannot be read as configured; the message names the file, line or setting."""


@dataclass(frozen=True)
class RawPair:
    """One corpus row. Rows a reader passes over carry a `skipped` reason instead of text, so the
    caller can count them: nothing is dropped silently."""

    row: int
    source: str
    target: str
    skipped: str | None = None


LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
"""Characters that `str.splitlines` and universal newlines take as line ends. Corpus files end a
line at ``\n`` only (as ``wc -l`` counts), so these stay inside their line; cleaning later turns
them into spaces and counts them."""


def split_lines(text: str) -> list[str]:
    """Lines of a text split at ``\n`` only; a ``\r`` before the ``\n`` belongs to the line end."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _open_lines(path: Path, keep_cr: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) from a UTF-8 text file (gzip by suffix), streaming.

    Lines end at LF or CRLF only, as ``wc -l`` counts them: a lone CR or another Unicode line break
    stays inside its line. A leading byte-order mark is dropped; so is the CR of a CRLF unless
    `keep_cr` (a quoted TSV field may hold a CRLF).
    """
    if not path.is_file():
        raise CorpusError(f"corpus file {path} not found: check the corpus path setting")
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for raw in handle:
                line_no += 1
                raw = raw.removesuffix(b"\n")
                if not keep_cr:
                    raw = raw.removesuffix(b"\r")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise CorpusError(
                        f"{path}, line {line_no}: bytes are not valid UTF-8 (byte {err.start}: "
                        f"{raw[err.start:err.start + 1]!r}); re-encode the file as UTF-8"
                    ) from None
                if line_no == 1:
                    text = text.removeprefix("\ufeff")
                yield line_no, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise CorpusError(
            f"{path} cannot be read past line {line_no}: {err}. The file is truncated or corrupt; "
            "download or compress it again (check it with `gzip -t`)"
        ) from None


_CR_STAND_IN = "\uffff"
"""A Unicode noncharacter that carries a lone CR through the csv module, which would end a record
there: rows are split at LF only."""


def read_tsv(path: Path, source_column: str, target_column: str) -> Iterator[RawPair]:
    """A tab-separated file whose first line names the columns.

    Read as the csv module and pandas write it (``delimiter="\t"``): a field in double quotes may
    hold tabs, quotes (doubled) and line breaks, and the quotes are removed. A row's number is the
    line it starts on.
    """
    path = Path(path)
    current = {"line": 0}

    def physical_lines() -> Iterator[str]:
        for line_no, text in _open_lines(path, keep_cr=True):
            current["line"] = line_no
            text, end = (text[:-1], "\r\n") if text.endswith("\r") else (text, "\n")
            if "\r" in text:
                if _CR_STAND_IN in text:
                    raise CorpusError(f"{path}, line {line_no}: holds both a carriage return and U+FFFF, "
                                      "which this reader cannot tell apart; remove one of them")
                text = text.replace("\r", _CR_STAND_IN)
            yield text + end

    def restore(fields: list[str]) -> list[str]:
        return [f.replace(_CR_STAND_IN, "\r") if _CR_STAND_IN in f else f for f in fields]

    records = csv.reader(physical_lines(), delimiter="\t", quotechar='"', doublequote=True, strict=True)
    start = 1
    try:
        header = restore(next(records, None) or [])
        if not header:
            raise CorpusError(f"{path} has no header on line 1: expected a header line naming the columns")
        missing = [c for c in (source_column, target_column) if c not in header]
        if missing:
            raise CorpusError(
                f"{path}: column(s) {missing} not found; the header has {header}. Set the corpus "
                "source_column/target_column settings to the right names"
            )
        src_i, tgt_i = header.index(source_column), header.index(target_column)
        start = current["line"] + 1
        for fields in records:
            fields = restore(fields)
            if not any(field.strip() for field in fields):
                yield RawPair(start, "", "", skipped="blank line")
            elif len(fields) != len(header):
                raise CorpusError(
                    f"{path}, line {start}: {len(fields)} tab-separated fields, the header has "
                    f"{len(header)}; a tab inside a sentence must be in a quoted field (as csv.writer "
                    "and pandas to_csv write it), or a field is missing"
                )
            else:
                yield RawPair(start, fields[src_i], fields[tgt_i])
            start = current["line"] + 1
    except csv.Error as err:
        raise CorpusError(
            f"{path}, line {start}: cannot read the row as TSV ({err}). A field that starts with a "
            "double quote is read as a quoted field (closed by a quote before the next tab, with "
            "quotes inside doubled); quote such fields as csv.writer and pandas to_csv do"
        ) from None


def read_parquet(path: Path, source_column: str, target_column: str) -> Iterator[RawPair]:
    """A Parquet file of text columns, read in record batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} not found: check the corpus path setting")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise CorpusError(f"{path} is not a readable Parquet file ({err}): write it again, or set the "
                          "corpus format setting to the file's real format") from None
    schema = parquet.schema_arrow
    missing = [c for c in (source_column, target_column) if c not in schema.names]
    if missing:
        raise CorpusError(
            f"{path}: column(s) {missing} not found; the file has {schema.names}. Set the corpus "
            "source_column/target_column settings to the right names"
        )
    for column in (source_column, target_column):
        kind = schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise CorpusError(f"{path}: column {column!r} holds {kind}, not text: store the sentences as "
                              "strings, or set source_column/target_column to the text columns")
    row = 0
    try:
        for batch in parquet.iter_batches(columns=[source_column, target_column], batch_size=8192):
            for source, target in zip(*(batch.column(i).to_pylist() for i in range(2))):
                row += 1
                yield RawPair(row, source or "", target or "")
    except (pa.ArrowException, OSError) as err:
        raise CorpusError(f"{path} cannot be read past row {row} ({err}): the file is truncated or "
                          "corrupt; write it again") from None


def moses_files(prefix: Path, source_lang: str, target_lang: str) -> tuple[Path, Path]:
    """The two files of a Moses pair, preferring plain text over ``.gz``."""
    found = []
    for lang in (source_lang, target_lang):
        candidates = [Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            raise CorpusError(
                f"Moses file for language {lang!r} not found: looked for {candidates[0]} and "
                f"{candidates[1]}; check the corpus path (a prefix such as .../multi30k/train) "
                "and the language settings"
            )
        found.append(existing[0])
    return found[0], found[1]


def read_moses(prefix: Path, source_lang: str, target_lang: str) -> Iterator[RawPair]:
    """A line-aligned Moses pair; a length mismatch raises naming both files and line counts."""
    source_path, target_path = moses_files(Path(prefix), source_lang, target_lang)
    sentinel = (None, None)
    for left, right in itertools.zip_longest(
        _open_lines(source_path), _open_lines(target_path), fillvalue=sentinel
    ):
        if left is sentinel or right is sentinel:
            longer, line_no = (target_path, right[0]) if left is sentinel else (source_path, left[0])
            shorter = target_path if longer == source_path else source_path
            raise CorpusError(
                f"misaligned Moses pair: {longer} has a line {line_no} but {shorter} ends at line "
                f"{line_no - 1}; the two files must have the same number of lines"
            )
        yield RawPair(left[0], left[1], right[1])


def read_tatoeba(path: Path, source_lang: str, target_lang: str) -> Iterator[RawPair]:
    """Tatoeba's ``lang3 lang3 text text`` rows; rows in the reverse direction are swapped.

    Rows of other language pairs are passed over with the reason "other language pair".
    """
    want_src, want_tgt = iso639_3(source_lang, "languages.source"), iso639_3(target_lang, "languages.target")
    for line_no, line in _open_lines(Path(path)):
        if not line.strip():
            yield RawPair(line_no, "", "", skipped="blank line")
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise CorpusError(
                f"{path}, line {line_no}: {len(fields)} tab-separated fields; a Tatoeba file has 4 "
                "(lang, lang, text, text)"
            )
        lang_a, lang_b, text_a, text_b = fields
        if (lang_a, lang_b) == (want_src, want_tgt):
            yield RawPair(line_no, text_a, text_b)
        elif (lang_a, lang_b) == (want_tgt, want_src):
            yield RawPair(line_no, text_b, text_a)
        else:
            yield RawPair(line_no, "", "", skipped="other language pair")


def read_text(path: Path) -> Iterator[RawPair]:
    """A monolingual file, one sentence per line (gzip by suffix): rows whose target is empty."""
    for line_no, text in _open_lines(Path(path)):
        yield RawPair(line_no, text, "")


def read_local(fmt: str, path: Path, source_lang: str, target_lang: str,
               source_column: str | None = None, target_column: str | None = None) -> Iterator[RawPair]:
    """Dispatch on a local format name; column names default to the language codes."""
    if fmt not in LOCAL_FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r} in setting corpus.format; use one of {LOCAL_FORMATS}")
    if fmt == "tsv":
        return read_tsv(path, source_column or source_lang, target_column or target_lang)
    if fmt == "parquet":
        return read_parquet(path, source_column or source_lang, target_column or target_lang)
    if fmt == "moses":
        return read_moses(path, source_lang, target_lang)
    return read_tatoeba(path, source_lang, target_lang)


def read_hf_dataset(name: str, config: str | None, split: str, source_lang: str, target_lang: str,
                    revision: str | None = None, field: str = "translation",
                    streaming: bool = False) -> Iterator[RawPair]:
    """A Hugging Face dataset (a Hub id such as ``Helsinki-NLP/opus-100`` or a local folder).

    Rows hold a ``translation`` mapping from language code to text, as in OPUS-100.
    """
    import datasets

    try:
        dataset = datasets.load_dataset(name, config, split=split, revision=revision, streaming=streaming)
    except ValueError as err:
        raise CorpusError(
            f"Hugging Face dataset {name!r} (config {config!r}, split {split!r}) could not be "
            f"loaded: {err}. Check the corpus dataset/config/split settings"
        ) from err
    for row_no, row in enumerate(dataset, start=1):
        if field not in row:
            raise CorpusError(
                f"dataset {name!r} row {row_no} has no field {field!r} (fields: {sorted(row)}); "
                "set the corpus translation field setting"
            )
        mapping = row[field]
        missing = [lang for lang in (source_lang, target_lang) if lang not in mapping]
        if missing:
            raise CorpusError(
                f"dataset {name!r} config {config!r} has languages {sorted(mapping)}, not "
                f"{missing}; check the languages settings or the dataset config"
            )
        yield RawPair(row_no, mapping[source_lang] or "", mapping[target_lang] or "")
