"""Fixtures of the lib tests that run models: a small pretrained GPT-Neo and one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from mt_assets.defs.profiles import PACKAGE_DATA

SMALL_SPEC = dict(vocab_size=400, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=160,
                  window_size=16, block_size=64, batch_size=8, pretrain_steps=80, warmup_steps=8, seed=0)
"""A GPT-Neo with one global and one local layer whose 16-token window is shorter than a prompt, so
the local layer's sliding window matters; pretrained enough to end its lines."""


@pytest.fixture(scope="session")
def small_lm(tmp_path_factory) -> Path:
    """A small GPT-Neo and its tokenizer, pretrained on the demo corpus's sentences (built once)."""
    import pandas as pd
    import torch

    from mt_assets.lib.tiny_model import TinyModelSpec, build_tiny_base_model

    corpus = pd.read_csv(PACKAGE_DATA / "demo_corpus.tsv", sep="\t")
    texts = list(corpus["de"]) + list(corpus["fr"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_tiny_base_model(texts, tmp_path_factory.mktemp("small_lm") / "model", TinyModelSpec(**SMALL_SPEC))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One torch thread: on a shared machine, more threads than free cores make small models slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def demo_pairs(n: int, offset: int = 0):
    """`n` German-French pairs of the demo corpus as a pair table."""
    import pandas as pd

    corpus = pd.read_csv(PACKAGE_DATA / "demo_corpus.tsv", sep="\t").iloc[offset:offset + n]
    return pd.DataFrame({"pair_id": [f"demo-{i}" for i in corpus.index], "source": corpus["de"].tolist(),
                         "target": corpus["fr"].tolist(), "source_lang": "de", "target_lang": "fr"})
