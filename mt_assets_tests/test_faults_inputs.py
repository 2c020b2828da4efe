"""Fault suite, inputs and settings: line breaks inside lines, quoted TSV, profile mistakes,
settings out of range, damaged corpora and `translate` inputs, over-long sentences, and the exit
code of `mt-assets materialize`. Each fault counts into the session's summary line (conftest)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mt_assets.defs.data import opus_sample
from mt_assets.defs.io_manager import DataLakeIOManager
from mt_assets.defs.data import Experiment, LocalCorpus
from mt_assets.lib.data.corpus import CorpusError
from mt_assets.lib.data.text import normalize_text


def sample_of(corpus: LocalCorpus, lake: Path, instance, size: int) -> tuple[pd.DataFrame, dict]:
    """opus_sample materialized from `corpus` (seed 3): the table and its cleaning report."""
    resources = {"io_manager": DataLakeIOManager(base_path=str(lake)),
                 "experiment": Experiment(sample_size=size, seed=3), "corpus": corpus}
    result = dg.materialize([opus_sample], resources=resources, instance=instance)
    (event,) = result.asset_materializations_for_node("opus_sample")
    return pd.read_parquet(lake / "opus_sample.parquet"), event.metadata["cleaning"].value


def pairs_of(table: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(table["source"], table["target"]))


# --- line breaks inside a line -------------------------------------------------------------------

BREAK_PAIRS = [("Guten\rMorgen.", "Bonjour."), ("Wo ist\u2028der Bahnhof?", "Où est\x0cla gare ?"),
               ("Ich habe Hunger.", "J'ai\x85faim."), ("Danke\x1e schön.", "Merci\rbeaucoup.")]


def test_line_breaks_inside_moses_lines_keep_the_pairs_aligned(ledger, tmp_path, instance):
    with ledger.fault("corpus: lone CR and Unicode line breaks inside Moses lines") as fault:
        for lang, side in (("de", 0), ("fr", 1)):
            (tmp_path / f"train.{lang}").write_bytes("".join(p[side] + "\n" for p in BREAK_PAIRS).encode())
        sample, cleaning = sample_of(LocalCorpus(path=str(tmp_path / "train"), format="moses"),
                                     tmp_path / "lake", instance, size=len(BREAK_PAIRS))
        expected = [(normalize_text(s), normalize_text(t)) for s, t in BREAK_PAIRS]
        fault.kept(pairs_of(sample) == expected, f"4 lines in, pairs out: {pairs_of(sample)}")
        assert list(sample["corpus_row"]) == [1, 2, 3, 4]
        assert cleaning["rows_read"] == 4 and cleaning["line_breaks_replaced"] == 6, cleaning

    with ledger.fault("corpus: a lone CR in one Moses file only") as fault:
        (tmp_path / "one.de").write_bytes(b"eins\rzwei\ndrei\nvier\n")
        (tmp_path / "one.fr").write_bytes(b"un\ndeux\ntrois\nquatre\n")
        with pytest.raises(CorpusError) as raised:
            list(LocalCorpus(path=str(tmp_path / "one"), format="moses").rows("de", "fr"))
        lines = (tmp_path / "one.de").read_bytes().count(b"\n")  # what `wc -l` says
        assert f"one.de ends at line {lines}" in str(raised.value), raised.value


# --- quoted TSV ----------------------------------------------------------------------------------

QUOTED_PAIRS = [('Er sagte "Hallo".', 'Il a dit "Salut".'), ('"Ja", sagte sie.', '« Oui », dit-elle.'),
                ("Spalte\tmit Tab", "colonne\tavec tabulation"), ("zwei\nZeilen", "deux\r\nlignes"),
                ("Ein ''Zitat''", 'Un ""double"" guillemet'), ("Ganz normal.", "Tout à fait normal.")]


def write_with_csv_writer(path: Path, pairs) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["id", "de", "fr"])
        writer.writerows((i, s, t) for i, (s, t) in enumerate(pairs))


def write_with_pandas(path: Path, pairs) -> None:
    pd.DataFrame(pairs, columns=["de", "fr"]).to_csv(path, sep="\t", index=False)


@pytest.mark.parametrize("writer", [write_with_csv_writer, write_with_pandas], ids=["csv.writer", "pandas"])
def test_quoted_tsv_is_read_as_written(ledger, tmp_path, instance, writer):
    with ledger.fault(f"corpus: TSV quoted by {writer.__name__.removeprefix('write_with_')}") as fault:
        path = tmp_path / "quoted.tsv"
        writer(path, QUOTED_PAIRS)
        assert '""' in path.read_text(encoding="utf-8")  # the writer did quote
        rows = list(LocalCorpus(path=str(path), format="tsv", **{"source_column": "de",
                                                                  "target_column": "fr"}).rows("de", "fr"))
        fault.kept([(r.source, r.target) for r in rows] == QUOTED_PAIRS, "quotes kept or fields cut")
        assert [r.row for r in rows] == [2, 3, 4, 5, 8, 9]  # the line each row starts on (wc -l)
        sample, cleaning = sample_of(LocalCorpus(path=str(path), format="tsv", source_column="de",
                                                 target_column="fr"), tmp_path / "lake", instance, len(QUOTED_PAIRS))
        assert pairs_of(sample) == [(normalize_text(s), normalize_text(t)) for s, t in QUOTED_PAIRS]
        assert cleaning["line_breaks_replaced"] == 1, cleaning  # the CR of "deux\r\nlignes"


def test_an_unclosed_quote_names_the_line(ledger, tmp_path):
    with ledger.fault("corpus: TSV with an unclosed quote") as fault:
        path = tmp_path / "raw.tsv"
        path.write_text('de\tfr\nHallo.\tSalut.\n"Ja, sagte sie.\tOui, dit-elle.\nDanke.\tMerci.\n')
        with pytest.raises(CorpusError, match=r"raw.tsv, line 3: cannot read the row as TSV .*quote"):
            list(LocalCorpus(path=str(path), format="tsv", source_column="de", target_column="fr").rows("de", "fr"))
        fault.notes.append("refused naming line 3")


# --- profile mistakes ----------------------------------------------------------------------------

PROFILE_MISTAKES = {
    "unknown key inside a section": ("experiment: {sampel_size: 50}\n",
                                     r"unknown setting\(s\) experiment\.sampel_size \(did you mean 'sample_size'\?\)"),
    "unknown key inside a typed section": ("corpus: {type: local, path: x.tsv, fromat: tsv}\n",
                                           r"corpus\.fromat \(did you mean 'format'\?\)"),
    "section given twice": ("training: {r: 8}\nevaluation: {batch_size: 4}\ntraining: {epochs: 2}\n",
                            r"line 4: setting 'training' is given twice \(first on line 2\)"),
    "key given twice inside a section": ("training:\n  r: 8\n  alpha: 16\n  r: 4\n",
                                         r"line 5: setting 'r' is given twice \(first on line 3\)"),
}


@pytest.mark.parametrize("case", PROFILE_MISTAKES)
def test_profile_mistakes_are_refused_naming_the_key(ledger, tmp_path, case):
    from mt_assets.defs.profiles import ProfileError, build_resources, load_profile

    text, message = PROFILE_MISTAKES[case]
    with ledger.fault(f"profile: {case}"):
        path = tmp_path / "mine.yaml"
        path.write_text("extends: demo\n" + text)
        with pytest.raises(ProfileError, match=message) as raised:
            build_resources(load_profile(str(path)))
        assert str(path) in str(raised.value)


# --- settings out of range -----------------------------------------------------------------------

SETTINGS_OUT_OF_RANGE = {
    "epochs: 0": ("training: {epochs: 0}", r"training\.epochs: Input should be greater than 0"),
    "training batch_size: 0": ("training: {batch_size: 0}",
                               r"training\.batch_size: Input should be greater than or equal to 1"),
    "evaluation batch_size: 0": ("evaluation: {batch_size: 0}",
                                 r"evaluation\.batch_size: Input should be greater than or equal to 1"),
    "max_new_tokens: 0": ("evaluation: {max_new_tokens: 0}",
                          r"evaluation\.max_new_tokens: Input should be greater than or equal to 1"),
    "seed: -1": ("experiment: {seed: -1}", r"experiment\.seed: Input should be greater than or equal to 0"),
    "training seed: -1": ("training: {seed: -1}", r"training\.seed: Input should be greater than or equal to 0"),
    "test_fraction: 1": ("experiment: {test_fraction: 1}", r"experiment\.test_fraction: Input should be less than 1"),
}


@pytest.mark.parametrize("case", SETTINGS_OUT_OF_RANGE)
def test_settings_out_of_range_are_refused_naming_setting_and_range(ledger, tmp_path, case):
    from mt_assets.definitions import build_definitions
    from mt_assets.defs.profiles import ProfileError, load_profile

    text, message = SETTINGS_OUT_OF_RANGE[case]
    with ledger.fault(f"setting: {case}"):
        path = tmp_path / "mine.yaml"
        path.write_text(f"extends: demo\n{text}\n")
        with pytest.raises(ProfileError, match=message) as raised:
            build_definitions(load_profile(str(path)))  # refused when the definitions load, before any run
        assert str(path) in str(raised.value)


# --- the command line ----------------------------------------------------------------------------

STARTER = """
import sys, time
from pathlib import Path
from mt_assets import cli  # everything imported before the start signal: the runs start together
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
sys.exit(cli.main(["run", "--profile", sys.argv[3], "--select", "opus_sample"]))
"""


def test_first_runs_on_a_fresh_dagster_home_at_once_all_succeed(ledger, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from mt_assets_tests.ops_support import write_profile

    with ledger.fault("command line: four first runs on a fresh DAGSTER_HOME at once"):
        profile = write_profile(tmp_path / "p.yaml", tmp_path / "lake", tmp_path / "model", pretrain_steps=0,
                                executor={"type": "in_process"})
        home, go = tmp_path / "dagster_home", tmp_path / "go"
        home.mkdir()
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        runs = [subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path / f"ready{i}"), str(go), str(profile)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for i in range(4)]
        while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
            assert all(run.poll() is None for run in runs), [run.communicate()[0][-2000:] for run in runs]
            time.sleep(0.05)
        go.touch()
        outputs = [run.communicate(timeout=300)[0] for run in runs]
        failed = [out[-1500:] for run, out in zip(runs, outputs) if run.returncode != 0]
        assert not failed, f"{len(failed)} of 4 runs failed: {failed}"
        import dagster as dg

        with dg.DagsterInstance.from_config(str(home)) as instance:
            statuses = [run.status for run in instance.get_runs()]
        assert statuses == [dg.DagsterRunStatus.SUCCESS] * 4, statuses


@pytest.fixture
def translate_profile(tmp_path, untrained_tiny_model) -> Path:
    from mt_assets_tests.ops_support import write_profile

    return write_profile(tmp_path / "p.yaml", tmp_path / "lake", untrained_tiny_model, pretrain_steps=0)


def translate_file(profile: Path, tmp_path: Path, data: bytes, *options: str) -> list[str]:
    """`mt-assets translate` of a file holding `data`: the output's lines (split at LF, as wc -l)."""
    from mt_assets import cli

    (tmp_path / "in.txt").write_bytes(data)
    assert cli.main(["translate", str(tmp_path / "in.txt"), "--profile", str(profile), "-o",
                     str(tmp_path / "out.txt"), "--max-new-tokens", "4", *options]) == 0
    return (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")[:-1]


def test_translate_input_lines_are_split_at_lf_only(ledger, translate_profile, tmp_path):
    with ledger.fault("translate: lone CR and Unicode line breaks inside input lines") as fault:
        data = "Guten\rMorgen.\r\nWo ist\u2028der Bahnhof?\n\nDanke\x0c\x85schön.\n".encode()
        assert data.count(b"\n") == 4
        lines = translate_file(translate_profile, tmp_path, data)
        fault.kept(len(lines) == 4 and lines[2] == "", f"4 lines in, {len(lines)} out: {lines}")


BAD_TRANSLATE_INPUTS = {
    "empty input": (b"", r"in.txt holds no sentence to translate \(0 blank line"),
    "blank input": (b"\n \n\t\n", r"in.txt holds no sentence to translate \(3 blank line"),
    "binary input": (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", r"in.txt is not a text file \(a NUL byte at offset 5\)"),
    "Latin-1 input": ("Guten Tag\nKäse\n".encode("latin-1"), r"in.txt, line 2: bytes are not valid UTF-8"),
    "a 5,000-character line": (("Hallo.\n" + "Wort " * 1000 + "\nDanke.\n").encode(),
                               r"in.txt: 1 sentence\(s\) too long for the model's context of 256 tokens with "
                               r"max_new_tokens 4: line 2 \(\d+ tokens\)"),
}


@pytest.mark.parametrize("case", BAD_TRANSLATE_INPUTS)
def test_bad_translate_input_stops_naming_the_file(ledger, translate_profile, tmp_path, case):
    data, message = BAD_TRANSLATE_INPUTS[case]
    with ledger.fault(f"translate: {case}"):
        with pytest.raises(SystemExit, match=message):
            translate_file(translate_profile, tmp_path, data)
        assert not (tmp_path / "out.txt").exists()


def test_translate_refuses_a_zero_batch_size_or_token_count(ledger, translate_profile, tmp_path, capsys):
    with ledger.fault("translate: --batch-size 0 and --max-new-tokens 0"):
        for option in ("--batch-size", "--max-new-tokens"):
            with pytest.raises(SystemExit):
                translate_file(translate_profile, tmp_path, b"Hallo.\n", option, "0")
            assert f"argument {option}: 0 is not allowed: give an integer of at least 1" in capsys.readouterr().err


# --- over-long sentences and partial selections of the data assets -------------------------------------

def test_a_100k_character_sentence_is_left_out_of_the_sample_and_counted(ledger, tmp_path, instance):
    from mt_assets_tests.e2e_support import DEMO_TSV

    with ledger.fault("corpus: a sentence of 100,000 characters") as fault:
        demo = pd.read_csv(DEMO_TSV, sep="\t")[["de", "fr"]].head(30)
        long = "Das ist ein sehr langer Satz. " * 3400
        assert len(long) > 100_000
        demo.loc[len(demo)] = [long, "Une phrase très longue."]
        path = tmp_path / "corpus.tsv"
        demo.to_csv(path, sep="\t", index=False)
        sample, cleaning = sample_of(LocalCorpus(path=str(path), format="tsv", source_column="de", target_column="fr"),
                                     tmp_path / "lake", instance, size=30)
        assert cleaning["dropped: longer than max_chars"] == 1, cleaning
        fault.kept(len(sample) == 30, f"{len(sample)} of the 30 short pairs kept")
        assert sample["source"].str.len().max() <= Experiment().max_chars


def test_the_model_context_check_names_the_rows_too_long(untrained_tiny_model):
    from transformers import AutoConfig, AutoTokenizer

    from mt_assets.lib.translation.prompt import build_prompt, check_prompts_fit, prompts_too_long

    tokenizer = AutoTokenizer.from_pretrained(untrained_tiny_model)
    config = AutoConfig.from_pretrained(untrained_tiny_model)
    sources = ["Hallo.", "Wort " * 300, "Danke.", "x" * 900]
    limit, long_rows = prompts_too_long(tokenizer, config, sources, "de", "fr", max_new_tokens=40)
    assert limit == 256 and [i for i, _ in long_rows] == [1, 3] and all(n + 40 > 256 for _, n in long_rows)
    prompt = len(tokenizer(build_prompt("Hallo.", "de", "fr"))["input_ids"])
    assert prompts_too_long(tokenizer, config, ["Hallo."], "de", "fr", max_new_tokens=256 - prompt)[1] == []
    assert prompts_too_long(tokenizer, config, ["Hallo."], "de", "fr", max_new_tokens=257 - prompt)[1] == [(0, prompt)]
    with pytest.raises(ValueError, match=r"test_A: 2 sentence\(s\) too long .*: pair b \(\d+ tokens\), pair d"):
        check_prompts_fit(tokenizer, config, sources, "de", "fr", 40, "test_A", ["pair a", "pair b", "pair c", "pair d"],
                          "Lower setting experiment.max_chars")


@pytest.mark.parametrize("alone", ["test_A", "train_A"])
def test_one_side_of_the_split_can_be_materialized_alone(ledger, tmp_path, instance, alone):
    from mt_assets.defs.data import data_assets, data_checks
    from mt_assets_tests.conftest import data_resources
    from mt_assets_tests.e2e_support import DEMO_COLUMNS, DEMO_TSV

    with ledger.fault(f"selection: {alone} alone (one output of a multi-asset)") as fault:
        lake = tmp_path / "lake"
        resources = data_resources(lake, LocalCorpus(path=str(DEMO_TSV), format="tsv", **DEMO_COLUMNS))
        dg.materialize([*data_assets, *data_checks], resources=resources, instance=instance,
                       selection=["opus_sample", "train_A", "test_A"])
        both = {name: pd.read_parquet(lake / f"{name}.parquet") for name in ("train_A", "test_A")}
        (lake / f"{alone}.parquet").unlink()
        other = "train_A" if alone == "test_A" else "test_A"
        before = (lake / f"{other}.parquet").stat().st_mtime_ns
        result = dg.materialize([*data_assets, *data_checks], resources=resources, instance=instance, selection=[alone])
        assert result.success
        assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == [alone]
        fault.kept(pd.read_parquet(lake / f"{alone}.parquet").equals(both[alone]), f"{alone} differs from the split")
        assert (lake / f"{other}.parquet").stat().st_mtime_ns == before  # the other side is left as it was
        checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks and all(checks.values()), checks
        if alone == "test_A":
            assert checks["no_test_pair_in_train"]


# --- damaged corpora -----------------------------------------------------------------------------

def damaged_corpus(case: str, folder: Path) -> LocalCorpus:
    """A corpus of 600 demo-like pairs damaged one way: a truncated Moses .gz, or Parquet non-text columns."""
    pairs = [(f"Satz Nummer {i}.", f"Phrase numéro {i}.") for i in range(600)]
    if case == "truncated .gz":
        for lang, side in (("de", 0), ("fr", 1)):
            data = gzip.compress("".join(p[side] + "\n" for p in pairs).encode())
            (folder / f"train.{lang}.gz").write_bytes(data if lang == "de" else data[:len(data) * 2 // 3])
        return LocalCorpus(path=str(folder / "train"), format="moses")
    table = pd.DataFrame(pairs, columns=["de", "fr"])
    table["fr"] = range(len(table))  # ids where the sentences should be
    table.to_parquet(folder / "corpus.parquet")
    return LocalCorpus(path=str(folder / "corpus.parquet"), format="parquet")


DAMAGED = {"truncated .gz": r"train.fr.gz cannot be read past line \d+: .* truncated or corrupt",
           "Parquet column of integers": r"corpus.parquet: column 'fr' holds int64, not text"}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_corpus_fails_naming_the_file(ledger, tmp_path, instance, case):
    import re

    with ledger.fault(f"corpus: {case}"):
        resources = {"io_manager": DataLakeIOManager(base_path=str(tmp_path / "lake")),
                     "experiment": Experiment(sample_size=50, seed=3), "corpus": damaged_corpus(case, tmp_path)}
        result = dg.materialize([opus_sample], resources=resources, instance=instance, raise_on_error=False)
        assert not result.success
        failure = "\n".join(e.step_failure_data.error.to_string() for e in result.get_step_failure_events())
        assert re.search(DAMAGED[case], failure), failure[-2000:]
        assert not (tmp_path / "lake" / "opus_sample.parquet").exists()
