"""lib.translation.batching: token-budget batches hold every example once and stay within the budget."""

from __future__ import annotations

import random

import pytest

from mt_assets.lib.translation.batching import TokenBudgetBatchSampler, token_budget_batches

LENGTHS = [random.Random(0).randint(20, 90) for _ in range(300)]


@pytest.mark.parametrize("budget", [90, 256, 1000, 10_000])
def test_batches_cover_every_example_once_within_the_budget(budget):
    batches = token_budget_batches(LENGTHS, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(LENGTHS)))
    for batch in batches:
        longest = max(LENGTHS[i] for i in batch)
        assert len(batch) * longest <= budget
        assert LENGTHS[batch[0]] == longest  # longest first: the batch's padded width
    # Sorted by length, so a batch wastes little on padding
    padded = sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)
    assert padded <= 1.1 * sum(LENGTHS) or budget < 200


def test_an_example_longer_than_the_budget_gets_a_batch_of_its_own():
    assert token_budget_batches([50, 500, 40], 100) == [[1], [0, 2]]
    with pytest.raises(ValueError):
        token_budget_batches([1], 0)


def test_sampler_reshuffles_each_epoch_reproducibly_with_a_fixed_batch_count():
    sampler = TokenBudgetBatchSampler(LENGTHS, 1000, shuffle=True, seed=3)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0  # same epoch, same batches (a resumed run sees them again)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert len(epoch0) == len(epoch1) == len(sampler)
    assert epoch0 != epoch1
    for batches in (epoch0, epoch1):
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
        assert all(len(b) * max(LENGTHS[i] for i in b) <= 1000 for b in batches)
    other_seed = TokenBudgetBatchSampler(LENGTHS, 1000, shuffle=True, seed=4)
    assert list(other_seed) != epoch0
    assert list(TokenBudgetBatchSampler(LENGTHS, 1000, shuffle=False)) == token_budget_batches(LENGTHS, 1000)
