"""Fixtures of the lib tests that run models: a small pretrained GPT-Neo and one torch thread.

No Dagster here: the fast paths' equality tests also run on a GPU machine that has none
(benchmarks/gpu_check.sh loads this module as a pytest plugin, without the conftest above it).
`MT_ASSETS_TEST_DEVICE` (default cpu) puts their models and inputs on another device, e.g. cuda;
`MT_ASSETS_TEST_DTYPE` (default fp32) runs the ones that take a precision in bf16.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mt_assets

PACKAGE_DATA = Path(mt_assets.__file__).resolve().parent / "data"
DEVICE = os.environ.get("MT_ASSETS_TEST_DEVICE", "cpu")
"""Where the equality tests of the fast paths run their models (cpu, cuda, cuda:1)."""
DTYPE = os.environ.get("MT_ASSETS_TEST_DTYPE", "fp32")
"""fp32 (the default, tight tolerances) or bf16 (weights in bf16, tolerances of bf16 rounding)."""
if DTYPE not in ("fp32", "bf16"):
    raise ValueError(f"MT_ASSETS_TEST_DTYPE={DTYPE!r}: use fp32 or bf16")

SMALL_SPEC = dict(vocab_size=400, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=160,
                  window_size=16, block_size=64, batch_size=8, pretrain_steps=80, warmup_steps=8, seed=0)
"""A GPT-Neo with one global and one local layer whose 16-token window is shorter than a prompt, so
the local layer's sliding window matters; pretrained enough to end its lines."""


@pytest.fixture(scope="session")
def small_lm(tmp_path_factory) -> Path:
    """A small GPT-Neo and its tokenizer, pretrained on the demo corpus's sentences (built once)."""
    import pandas as pd
    import torch

    from mt_assets.lib.models.tiny import TinyModelSpec, build_tiny_base_model

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
