"""Gemma 3 as a base model, on a tiny random Gemma 3 built here (the real one is in test_gguf.py):
BOS once at the start of prompts and training examples, EOS at the end of every training
completion, left padding and the same translations as `generate`, SDPA attention, the stop rule
built once per tokenizer, and the compact loss equal to the model's own (final-logit softcapping too).

Tolerances (fp32 on CPU): losses within 1e-5 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mt_assets.lib.models import loading
from mt_assets.lib.translation.decoding import newline_stop_rule
from mt_assets.lib.data.pairs import make_pairs
from mt_assets.lib.translation.prompt import build_prompt
from mt_assets.lib.lora.trainer import completion_loss
from mt_assets.lib.lora.adapter_folder import SUMMARY_FILE
from mt_assets.lib.lora.recipe import LoraRecipe
from mt_assets.lib.lora.train_loop import train_adapter
from mt_assets.lib.translation.translate import translate
from mt_assets_tests.e2e_support import DEMO_TSV

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
"""Gemma's special tokens at Gemma's ids (pad 0, eos 1, bos 2, unk 3)."""


def build_tiny_gemma(folder: Path, texts: list[str], softcap: float | None = None, seed: int = 0) -> Path:
    """A random Gemma 3 with a byte-level BPE tokenizer trained on `texts`, that adds BOS as Gemma's does."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    tokenizer = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                             special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
                              sliding_window=512, layer_types=["sliding_attention", "full_attention"],
                              final_logit_softcapping=softcap, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    corpus = pd.read_csv(DEMO_TSV, sep="\t")
    return make_pairs(corpus["de"], corpus["fr"], "de", "fr", "demo")


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory, demo) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("gemma") / "model", [*demo["source"], *demo["target"]])


def test_prompts_start_with_one_bos_and_batches_pad_on_the_left(tiny_gemma, demo):
    tokenizer = loading.load_tokenizer(str(tiny_gemma))
    prompts = [build_prompt(s, "de", "fr") for s in demo["source"][:4]]
    batch = tokenizer(prompts, padding=True)["input_ids"]
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == 0
    for ids in batch:
        real = [t for t in ids if t != tokenizer.pad_token_id]
        assert real[0] == tokenizer.bos_token_id and real.count(tokenizer.bos_token_id) == 1
        assert ids[-1] != tokenizer.pad_token_id  # padding goes on the left


def test_training_examples_have_one_bos_and_end_with_a_labelled_eos(tiny_gemma, demo, tmp_path):
    from transformers import TrainerCallback

    seen = []

    class Batches(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            seen.extend(list(train_dataloader))

    tokenizer = loading.load_tokenizer(str(tiny_gemma))
    table = demo.head(12)
    recipe = LoraRecipe(r=4, alpha=8, max_steps=1, batch_size=4, max_length=128, validation_fraction=0.0,
                        mixed_precision="no", logging_steps=1)
    train_adapter(loading.load_causal_lm(str(tiny_gemma), device="cpu", dtype="fp32"), tokenizer, table, recipe,
                  tmp_path / "adapter", callbacks=[Batches()])
    targets = {f" {t}\n" for t in table["target"]}
    rows = 0
    for batch in seen:
        for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                     batch["attention_mask"].tolist()):
            real = [t for t, m in zip(ids, mask) if m]
            assert real[0] == tokenizer.bos_token_id and real.count(tokenizer.bos_token_id) == 1
            labelled = [t for t in labels if t != -100]
            assert labelled[-1] == tokenizer.eos_token_id and labelled.count(tokenizer.eos_token_id) == 1
            assert tokenizer.decode(labelled[:-1]) in targets  # the loss covers the completion and its EOS only
            rows += 1
    assert rows == len(table)


def test_left_padded_fast_decoder_translates_as_generate(tiny_gemma, demo):
    tokenizer = loading.load_tokenizer(str(tiny_gemma))
    model = loading.load_causal_lm(str(tiny_gemma), device="cpu", dtype="fp32")
    sources = list(demo["source"][::37])  # sentences of different lengths share batches
    fast = translate(model, tokenizer, sources, "de", "fr", batch_size=4, max_new_tokens=12, decoder="fast")
    reference = translate(model, tokenizer, sources, "de", "fr", batch_size=4, max_new_tokens=12, decoder="generate")
    assert fast == reference
    assert model.config._attn_implementation == "sdpa"  # set by translate's fast kernels


def test_stop_rule_is_built_once_per_tokenizer_folder(tiny_gemma):
    first, second = loading.load_tokenizer(str(tiny_gemma)), loading.load_tokenizer(str(tiny_gemma))
    rule = newline_stop_rule(first, len(first), "cpu")
    assert newline_stop_rule(second, len(second), "cpu") is rule
    assert rule.eos.nonzero().flatten().tolist() == [first.eos_token_id]
    newline = first("\n", add_special_tokens=False)["input_ids"]
    assert rule.has_newline[newline].all() and not rule.has_text[newline].any()


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_compact_loss_is_the_models_own_loss(tiny_gemma, demo, tmp_path, softcap):
    folder = build_tiny_gemma(tmp_path / "model", [*demo["source"], *demo["target"]], softcap=softcap, seed=1)
    model = loading.load_causal_lm(str(folder), device="cpu", dtype="fp32")
    tokenizer = loading.load_tokenizer(str(folder))
    ids = tokenizer([build_prompt(s, "de", "fr") + " " + t for s, t in zip(demo["source"][:3], demo["target"][:3])],
                    return_tensors="pt", padding=True)
    labels = ids["input_ids"].masked_fill(ids["attention_mask"] == 0, -100)
    labels[:, :10] = -100  # a prompt part without loss
    with torch.no_grad():
        out = model(**ids, labels=labels, output_hidden_states=True)
        loss, _ = completion_loss(out.hidden_states[-1], labels, model.get_output_embeddings(),
                                  softcap=model.config.final_logit_softcapping)
    assert torch.isclose(loss, out.loss, rtol=1e-5, atol=0)


def test_compact_loss_trains_as_the_models_loss_with_softcapping(demo, tmp_path):
    folder = build_tiny_gemma(tmp_path / "model", [*demo["source"], *demo["target"]], softcap=5.0, seed=2)
    table = demo.head(16)
    losses = {}
    for impl in ("compact", "fused"):
        recipe = LoraRecipe(r=4, alpha=8, max_steps=3, batch_size=4, max_length=128, validation_fraction=0.0,
                            mixed_precision="no", logging_steps=1, loss_impl=impl, dropout=0.0)
        result = train_adapter(loading.load_causal_lm(str(folder), device="cpu", dtype="fp32"),
                               loading.load_tokenizer(str(folder)), table, recipe, tmp_path / impl)
        losses[impl] = result.log["train_loss"].dropna().to_numpy()
    assert len(losses["compact"]) == 3
    assert losses["compact"] == pytest.approx(losses["fused"], rel=1e-5)


def test_compact_loss_in_bf16_mixed_precision_trains_as_the_fused_loss(demo, tmp_path):
    """Under bf16 autocast the compact loss runs on the decoder's output with the frozen head cast once;
    TRL's fused head casts it at each call and sums in another order, so bf16 tolerances apply."""
    folder = build_tiny_gemma(tmp_path / "model", [*demo["source"], *demo["target"]], softcap=5.0, seed=3)
    losses = {}
    for impl in ("compact", "fused"):
        recipe = LoraRecipe(r=4, alpha=8, max_steps=3, batch_size=4, max_length=128, validation_fraction=0.25,
                            eval_steps=3, mixed_precision="bf16", logging_steps=1, loss_impl=impl, dropout=0.0)
        result = train_adapter(loading.load_causal_lm(str(folder), device="cpu", dtype="fp32"),
                               loading.load_tokenizer(str(folder)), demo.head(16), recipe, tmp_path / impl)
        losses[impl] = np.concatenate([result.log["train_loss"].dropna(), result.log["eval_loss"].dropna()])
    assert len(losses["compact"]) == 4 and np.isfinite(losses["compact"]).all()
    assert losses["compact"][0] != losses["compact"][2]  # it trained
    assert losses["compact"] == pytest.approx(losses["fused"], rel=2e-2)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_bf16_mixed_precision_trains_on_cpu_and_is_recorded(tiny_gemma, demo, tmp_path, dtype):
    """bf16 autocast on the CPU (what `mixed_precision: auto` picks on AMX or AVX512-BF16 CPUs), over
    fp32 or bf16 weights, with the compact loss; the adapter's summary says which precision ran."""
    recipe = LoraRecipe(r=4, alpha=8, max_steps=2, batch_size=4, max_length=128, validation_fraction=0.0,
                        mixed_precision="bf16", loss_impl="compact", logging_steps=1)
    result = train_adapter(loading.load_causal_lm(str(tiny_gemma), device="cpu", dtype=dtype),
                           loading.load_tokenizer(str(tiny_gemma)), demo.head(8), recipe, tmp_path / "adapter")
    summary = json.loads((tmp_path / "adapter" / SUMMARY_FILE).read_text())
    assert summary["mixed_precision"] == "bf16"
    assert summary["weights_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[dtype]
    assert result.log["train_loss"].notna().sum() == 2 and np.isfinite(result.log["train_loss"].dropna()).all()
