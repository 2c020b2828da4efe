"""Corpus readers: each local format, and errors that name the file, line or setting."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from mt_assets.lib.data import corpus
from mt_assets.lib.data.corpus import CorpusError

PAIRS = [("Guten Morgen.", "Bonjour."), ("Wo ist der Bahnhof?", "Où est la gare ?"),
         ("Ich habe Hunger.", "J'ai faim.")]


def texts(rows):
    return [(r.source, r.target) for r in rows if not r.skipped]


def write_moses(prefix: Path, pairs, gz: bool = False):
    for lang, column in (("de", 0), ("fr", 1)):
        data = "".join(p[column] + "\n" for p in pairs).encode()
        path = Path(f"{prefix}.{lang}" + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)


def test_tsv_with_named_columns(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("id\tgerman\tfrench\n" + "".join(f"{i}\t{d}\t{f}\n" for i, (d, f) in enumerate(PAIRS)))
    assert texts(corpus.read_tsv(path, "german", "french")) == PAIRS


def test_parquet_with_named_columns(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"de": [p[0] for p in PAIRS], "fr": [p[1] for p in PAIRS]}).to_parquet(path)
    assert texts(corpus.read_parquet(path, "de", "fr")) == PAIRS


@pytest.mark.parametrize("gz", [False, True])
def test_moses_pair(tmp_path, gz):
    write_moses(tmp_path / "train", PAIRS, gz=gz)
    assert texts(corpus.read_moses(tmp_path / "train", "de", "fr")) == PAIRS


def test_tatoeba_rows_in_either_direction_and_other_pairs_counted(tmp_path):
    path = tmp_path / "tatoeba.txt"
    path.write_text("deu\tfra\tGuten Morgen.\tBonjour.\n"
                    "fra\tdeu\tOù est la gare ?\tWo ist der Bahnhof?\n"
                    "eng\tfra\tHello.\tBonjour.\n")
    rows = list(corpus.read_tatoeba(path, "de", "fr"))
    assert texts(rows) == PAIRS[:2]
    assert [r.skipped for r in rows] == [None, None, "other language pair"]


def test_reader_handles_bom_and_mixed_line_endings(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes("\ufeffde\tfr\r\nGuten Morgen.\tBonjour.\nWo ist der Bahnhof?\tOù est la gare ?\r\n".encode())
    assert texts(corpus.read_tsv(path, "de", "fr")) == PAIRS[:2]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CorpusError, match="nope.tsv not found"):
        list(corpus.read_tsv(tmp_path / "nope.tsv", "de", "fr"))


def test_missing_columns_are_named_with_the_header(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("german\tenglish\nHallo\tHello\n")
    with pytest.raises(CorpusError, match=r"\['fr'\] not found; the header has \['german', 'english'\]"):
        list(corpus.read_tsv(path, "german", "fr"))


def test_missing_parquet_columns_are_named(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"de": ["a"]}).to_parquet(path)
    with pytest.raises(CorpusError, match=r"\['fr'\] not found"):
        list(corpus.read_parquet(path, "de", "fr"))


def test_misaligned_moses_pair_names_both_files(tmp_path):
    (tmp_path / "train.de").write_text("a\nb\nc\n")
    (tmp_path / "train.fr").write_text("x\ny\n")
    with pytest.raises(CorpusError, match=r"train.de has a line 3 but .*train.fr ends at line 2"):
        list(corpus.read_moses(tmp_path / "train", "de", "fr"))


def test_missing_moses_side_names_the_language(tmp_path):
    (tmp_path / "train.de").write_text("a\n")
    with pytest.raises(CorpusError, match="language 'fr' not found"):
        list(corpus.read_moses(tmp_path / "train", "de", "fr"))


def test_undecodable_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"de\tfr\nGuten Tag\tBonjour\nK\xe4se\tfromage\n")
    with pytest.raises(CorpusError, match=r"c.tsv, line 3: bytes are not valid UTF-8"):
        list(corpus.read_tsv(path, "de", "fr"))


def test_wrong_field_count_names_the_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("de\tfr\nGuten Tag\tBonjour\tzu viel\n")
    with pytest.raises(CorpusError, match="line 2: 3 tab-separated fields"):
        list(corpus.read_tsv(path, "de", "fr"))


def test_unknown_format_names_the_setting(tmp_path):
    with pytest.raises(CorpusError, match="corpus.format"):
        corpus.read_local("xml", tmp_path / "c.xml", "de", "fr")


def test_unknown_language_names_the_setting(tmp_path):
    with pytest.raises(ValueError, match="unknown language code 'xx' in setting languages.source"):
        list(corpus.read_tatoeba(tmp_path / "t.txt", "xx", "fr"))


def test_hugging_face_loader_reads_an_opus_style_dataset_folder(tmp_path):
    """The Hub code path, pointed at a local folder in OPUS-100's layout (no network here)."""
    folder = tmp_path / "opus"
    folder.mkdir()
    rows = [{"translation": {"de": d, "fr": f}} for d, f in PAIRS]
    pd.DataFrame(rows).to_json(folder / "test.jsonl", orient="records", lines=True, force_ascii=False)
    assert texts(corpus.read_hf_dataset(str(folder), None, "test", "de", "fr")) == PAIRS
    with pytest.raises(CorpusError, match=r"has languages \['de', 'fr'\], not \['en'\]"):
        list(corpus.read_hf_dataset(str(folder), None, "test", "de", "en"))


UNICODE_BREAKS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("mark", UNICODE_BREAKS, ids=repr)
def test_a_line_break_inside_a_line_does_not_split_it(tmp_path, mark):
    pairs = [(f"Guten{mark}Morgen.", "Bonjour."), ("Wo ist der Bahnhof?", f"Où est{mark}la gare ?"),
             ("Ich habe Hunger.", "J'ai faim."), (f"{mark}Hallo", "Salut.")]
    write_moses(tmp_path / "train", pairs)
    assert texts(corpus.read_moses(tmp_path / "train", "de", "fr")) == pairs
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(("de\tfr\r\n" + "".join(f"{d}\t{f}\r\n" for d, f in pairs)).encode())
    rows = list(corpus.read_tsv(tsv, "de", "fr"))
    assert texts(rows) == pairs and [r.row for r in rows] == [2, 3, 4, 5]
    assert corpus.split_lines("a\rb\nc\u2028d\r\ne\n") == ["a\rb", "c\u2028d", "e"]


def test_moses_line_count_in_the_error_is_the_one_wc_counts(tmp_path):
    (tmp_path / "train.de").write_bytes(b"eins\rzwei\ndrei\nvier\n")
    (tmp_path / "train.fr").write_bytes(b"un\ndeux\ntrois\nquatre\n")
    wc = {lang: (tmp_path / f"train.{lang}").read_bytes().count(b"\n") for lang in ("de", "fr")}
    assert wc == {"de": 3, "fr": 4}
    with pytest.raises(CorpusError, match=r"train.fr has a line 4 but .*train.de ends at line 3"):
        list(corpus.read_moses(tmp_path / "train", "de", "fr"))


@pytest.mark.parametrize("values", [[1, 2], [b"Hallo", b"Tag"], [["Hallo"], ["Tag"]], [1.5, 2.5]],
                         ids=["int", "bytes", "list", "float"])
def test_parquet_column_of_the_wrong_type_is_named(tmp_path, values):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"de": values, "fr": ["Bonjour", "Salut"]}).to_parquet(path)
    with pytest.raises(CorpusError, match=r"c.parquet: column 'de' holds .*, not text: store the sentences as strings"):
        list(corpus.read_parquet(path, "de", "fr"))


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    path = tmp_path / "c.parquet"
    path.write_text("de\tfr\nHallo\tSalut\n")
    with pytest.raises(CorpusError, match=r"c.parquet is not a readable Parquet file"):
        list(corpus.read_parquet(path, "de", "fr"))


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_a_truncated_gz_names_the_file_and_the_last_line_read(tmp_path, cut):
    write_moses(tmp_path / "train", PAIRS * 400, gz=True)
    data = (tmp_path / "train.fr.gz").read_bytes()
    (tmp_path / "train.fr.gz").write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(CorpusError, match=r"train.fr.gz cannot be read past line \d+: .*truncated or corrupt"):
        list(corpus.read_moses(tmp_path / "train", "de", "fr"))
