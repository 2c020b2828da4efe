"""Length-bucketed batches under a token budget, for training and for translation.

Examples sorted by length are cut into batches whose padded size (rows x longest row) stays
within a token budget: short sentences go many to a batch, long ones few, and almost no compute
goes to padding. Every example is in exactly one batch per epoch.

Plain Python: no Dagster here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def token_budget_batches(lengths: Sequence[int], token_budget: int,
                         order: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of `lengths` in batches of at most `token_budget` padded tokens, longest first.

    `order` breaks ties between equal lengths (default: index order). An example longer than the
    budget gets a batch of its own.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    ties = list(order) if order is not None else list(range(len(lengths)))
    rank = {index: position for position, index in enumerate(ties)}
    ranked = sorted(range(len(lengths)), key=lambda i: (-lengths[i], rank[i]))
    batches: list[list[int]] = []
    for index in ranked:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class TokenBudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """A DataLoader `batch_sampler` of token-budget batches, reshuffled every epoch.

    Each epoch shuffles which of the equally long examples go together and the order of the
    batches, from (`seed`, epoch) only, so a resumed run sees the same batches. The batch sizes
    depend on the lengths alone, so every epoch has the same number of batches.
    """

    def __init__(self, lengths: Sequence[int], token_budget: int, *, shuffle: bool = True, seed: int = 0):
        self.lengths = list(lengths)
        self.token_budget = token_budget
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._count = len(token_budget_batches(self.lengths, token_budget))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        if not self.shuffle:
            return token_budget_batches(self.lengths, self.token_budget)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        ties = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches = token_budget_batches(self.lengths, self.token_budget, order=ties)
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return self._count
