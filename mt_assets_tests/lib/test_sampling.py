"""Seeded sampling and splitting: determinism, cleaning with counts, and clear shortfalls."""

from __future__ import annotations

import pytest

from mt_assets.lib.data.corpus import CorpusError, RawPair
from mt_assets.lib.data.sampling import sample_pairs, split_train_test


def rows(n: int):
    return [RawPair(i + 1, f"Satz Nummer {i}.", f"Phrase numéro {i}.") for i in range(n)]


def draw(corpus, size=20, seed=1):
    return sample_pairs(corpus, size, seed, "de", "fr", "test-corpus")


def test_same_seed_same_sample_other_seed_other_sample():
    first, _ = draw(rows(200), seed=1)
    again, _ = draw(rows(200), seed=1)
    other, _ = draw(rows(200), seed=2)
    assert list(first["pair_id"]) == list(again["pair_id"])
    assert set(first["pair_id"]) != set(other["pair_id"])
    assert len(first) == 20 and first["pair_id"].is_unique


def test_cleaning_counts_everything_it_drops():
    corpus = rows(30) + [
        RawPair(31, "   ", "vide"),
        RawPair(32, "Gleich", "Gleich"),
        RawPair(33, "Satz Nummer 3.", "Une autre traduction."),  # repeated source
        RawPair(34, "", "", skipped="blank line"),
        RawPair(35, "A\x00&amp; B", "A &amp; B fr"),
    ]
    sample, report = draw(corpus, size=31)
    assert report["rows_read"] == 35
    assert report["dropped: blank text"] == 1
    assert report["dropped: source identical to target"] == 1
    assert report["dropped: repeated source sentence"] == 1
    assert report["skipped: blank line"] == 1
    assert report["nul_bytes_removed"] == 1
    assert report["html_entities_decoded"] == 2
    assert report["usable_pairs"] == 31
    assert "A& B" in set(sample["source"])


def test_fewer_pairs_than_requested_names_the_setting():
    with pytest.raises(CorpusError, match=r"only 10 usable pairs .* sample size is 50: lower setting experiment.sample_size"):
        draw(rows(10), size=50)


def test_split_is_seeded_disjoint_and_complete():
    sample, _ = draw(rows(100), size=50)
    train, test = split_train_test(sample, 0.2, seed=3)
    train2, test2 = split_train_test(sample, 0.2, seed=3)
    _, test3 = split_train_test(sample, 0.2, seed=4)
    assert (len(train), len(test)) == (40, 10)
    assert set(train["pair_id"]).isdisjoint(test["pair_id"])
    assert set(train["pair_id"]) | set(test["pair_id"]) == set(sample["pair_id"])
    assert list(test["pair_id"]) == list(test2["pair_id"]) and list(train["pair_id"]) == list(train2["pair_id"])
    assert set(test["pair_id"]) != set(test3["pair_id"])


@pytest.mark.parametrize("fraction", [0, 1, 1.5])
def test_split_rejects_bad_fractions(fraction):
    sample, _ = draw(rows(30))
    with pytest.raises(ValueError, match="experiment.test_fraction"):
        split_train_test(sample, fraction, seed=1)
