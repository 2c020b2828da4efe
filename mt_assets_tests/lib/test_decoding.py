"""lib.translation.decoding and lib.translation.translate: the fast greedy decoder translates exactly as `generate` does.

Tolerance: none. On a small pretrained GPT-Neo in fp32 (a local layer whose window is shorter than
the prompts, rows that stop at different steps, a LoRA adapter), the translations are the same
strings and the tokens the same ids. In bf16 (MT_ASSETS_TEST_DTYPE, on a GPU) batches of other
shapes round differently, and a near tie between two tokens can flip: there, at least 90% of the
translations are the same strings.
"""

from __future__ import annotations

import pytest
import torch

from mt_assets.lib.translation.decoding import PreallocatedLayer, greedy_decode, newline_stop_rule
from mt_assets.lib.translation.prompt import build_prompt
from mt_assets.lib.translation.translate import translate
from mt_assets_tests.lib.conftest import DEVICE, DTYPE, demo_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
MAX_NEW = 24


@pytest.fixture(scope="module")
def lm(small_lm):
    from peft import LoraConfig, get_peft_model

    from mt_assets.lib.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(small_lm))
    base = load_causal_lm(str(small_lm), device=DEVICE, dtype=DTYPE)
    torch.manual_seed(0)  # a LoRA adapter that changes the outputs: random A and B
    adapted = get_peft_model(load_causal_lm(str(small_lm), device=DEVICE, dtype=DTYPE),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return tokenizer, base, adapted.eval()


@pytest.fixture(scope="module")
def sources():
    return list(demo_pairs(48, offset=300)["source"])


@pytest.fixture(scope="module")
def reference(lm, sources):
    """`generate` with `stop_strings`, batches of 4, eager kernels: the seed's way."""
    tokenizer, base, adapted = lm
    return {name: translate(model, tokenizer, sources, "de", "fr", decoder="generate", batch_size=4,
                            max_new_tokens=MAX_NEW, kernels="eager")
            for name, model in (("base", base), ("adapted", adapted))}


@pytest.mark.parametrize("model_name", ["base", "adapted"])
@pytest.mark.parametrize("settings", [dict(batch_size=4), dict(batch_size=64), dict(token_budget=1500),
                                      dict(batch_size=16, kernels="eager")], ids=str)
def test_fast_decoder_gives_the_translations_of_generate(lm, sources, reference, model_name, settings):
    tokenizer, base, adapted = lm
    model = base if model_name == "base" else adapted
    stats: dict = {}
    fast = translate(model, tokenizer, sources, "de", "fr", decoder="fast", max_new_tokens=MAX_NEW, stats=stats,
                     **{"kernels": "fast", **settings})
    if DTYPE == "fp32":
        assert fast == reference[model_name]
    else:
        same = sum(a == b for a, b in zip(fast, reference[model_name]))
        assert len(fast) == len(sources) and same >= 0.9 * len(sources), f"{same}/{len(sources)} the same"
    assert stats["sentences"] == len(sources) and 0 < stats["new_tokens"] <= len(sources) * MAX_NEW
    # The test is not vacuous: some rows stop early, others run to the limit, outputs differ
    lengths = {len(t) for t in fast}
    assert len(lengths) > 3 and len(set(fast)) > 3


def test_fast_tokens_are_a_prefix_of_generate_tokens_ending_at_a_stop(lm, sources):
    tokenizer, _, model = lm
    prompts = [tokenizer(build_prompt(s, "de", "fr"))["input_ids"] for s in sources[:16]]
    stop = newline_stop_rule(tokenizer, model.get_output_embeddings().weight.shape[0], DEVICE)
    fast = greedy_decode(model, prompts, stop, pad_id=tokenizer.pad_token_id, max_new_tokens=MAX_NEW)
    never_compacted = greedy_decode(model, prompts, stop, pad_id=tokenizer.pad_token_id, max_new_tokens=MAX_NEW,
                                    compact_fraction=2.0)
    assert fast == never_compacted  # dropping finished rows from the batch changes nothing
    for prompt, tokens in zip(prompts, fast):
        generated = model.generate(input_ids=torch.tensor([prompt], device=DEVICE),
                                   attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=DEVICE),
                                   do_sample=False, max_new_tokens=MAX_NEW, pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id)[0, len(prompt):].tolist()
        assert generated[:len(tokens)] == tokens
        last = tokens[-1]
        assert len(tokens) == MAX_NEW or last == tokenizer.eos_token_id or "\n" in tokenizer.decode([last])


class ScriptedLM(torch.nn.Module):
    """A stand-in causal LM that writes a fixed token script per row (to test the stop rule)."""

    def __init__(self, scripts: list[list[int]], vocab: int):
        super().__init__()
        from transformers import GPTNeoConfig

        self.scripts, self.vocab = scripts, vocab
        self.config = GPTNeoConfig(num_layers=2, attention_types=[[["global", "local"], 1]], vocab_size=vocab)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.rows = list(range(len(scripts)))
        self.step = 0

    def forward(self, input_ids, attention_mask, position_ids, cache, use_cache, logits_to_keep=0):
        if input_ids.shape[0] < len(self.rows):  # finished rows left the batch: keep the rows still there
            self.rows = [row for row, keep in zip(self.rows, self._alive) if keep]
        logits = torch.zeros(len(self.rows), 1, self.vocab)
        for i, row in enumerate(self.rows):
            script = self.scripts[row]
            logits[i, 0, script[min(self.step, len(script) - 1)]] = 1.0
        self.step += 1
        return type("Out", (), {"logits": logits})


@pytest.mark.parametrize("decoder", ["fast", "generate"])
def test_the_lm_head_of_a_frozen_model_reads_a_contiguous_input(lm, sources, decoder):
    """PEFT freezes the base model; for a frozen head, PyTorch's CPU matmul copies the head's weight
    once per row when its input is strided (the prefill's last position): both decoders hand it a
    contiguous one, and leave the model without their hook afterwards."""
    from mt_assets.lib.translation.translate import complete_lines

    tokenizer, _, model = lm
    head = model.get_output_embeddings()
    assert not head.weight.requires_grad  # frozen, as PEFT leaves a base model
    prompts = [build_prompt(s, "de", "fr") for s in sources[:8]]
    assert len({len(tokenizer(p)["input_ids"]) for p in prompts}) > 1  # the prefill has several positions a row
    seen: list[tuple[tuple[int, ...], bool]] = []
    probe = head.register_forward_hook(lambda _m, args, _out: seen.append((tuple(args[0].shape), args[0].is_contiguous())))
    try:
        before = dict(head._forward_pre_hooks)
        complete_lines(model, tokenizer, prompts, batch_size=8, max_new_tokens=4, decoder=decoder)
        assert dict(head._forward_pre_hooks) == before
    finally:
        probe.remove()
    assert seen[0][0] == (8, 1, head.weight.shape[1])  # the prefill: the last position of 8 rows
    assert all(contiguous for _, contiguous in seen), seen


def test_rows_stop_at_eos_or_a_newline_after_text_not_before(lm):
    tokenizer = lm[0]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token_id
    scripts = [encode(" \nBonjour\nencore des mots"),  # a leading newline does not stop the row
               encode("Salut") + [eos] + encode(" et plus"),
               encode("a b c d e f g h i j k l m n o p q r s t u v w x y z")]
    model = ScriptedLM(scripts, vocab=len(tokenizer))
    stop = newline_stop_rule(tokenizer, len(tokenizer), "cpu")
    original_select = PreallocatedLayer.batch_select_indices

    def select(layer, indices):  # tell the stand-in which rows were kept
        model._alive = torch.zeros(len(model.rows), dtype=torch.bool).index_fill_(0, indices, True).tolist()
        original_select(layer, indices)

    PreallocatedLayer.batch_select_indices = select
    try:
        out = greedy_decode(model, [[1, 2], [3], [4, 5, 6]], stop, pad_id=eos, max_new_tokens=10)
    finally:
        PreallocatedLayer.batch_select_indices = original_select
    texts = [tokenizer.decode(tokens, skip_special_tokens=True) for tokens in out]
    assert texts[0].startswith(" \nBonjour") and texts[0].rstrip(" ").endswith("\n") and "encore" not in texts[0]
    assert out[1][-1] == eos and texts[1] == "Salut"
    assert len(out[2]) == 10


def test_preallocated_cache_refuses_to_overflow():
    layer = PreallocatedLayer(capacity=4)
    keys = torch.zeros(2, 1, 3, 8)
    layer.update(keys, keys)
    assert layer.get_seq_length() == 3 and layer.keys.shape == (2, 1, 3, 8)
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape == (1, 1, 3, 8)
    with pytest.raises(ValueError, match="KV cache full"):
        layer.update(keys[:1, :, :2], keys[:1, :, :2])


def test_translate_refuses_an_unknown_decoder(lm):
    tokenizer, base, _ = lm
    with pytest.raises(ValueError, match="unknown decoder"):
        translate(base, tokenizer, ["Hallo"], "de", "fr", decoder="beam")
