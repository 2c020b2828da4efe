"""lib.lora.trainer and the fast training settings of lib.lora.recipe give the reference losses.

Tolerances (fp32): losses within 1e-5 (relative), LoRA weights after training within 1e-5
(absolute; they are of order 0.1), gradients within 1e-5 relative. In bf16 (MT_ASSETS_TEST_DTYPE,
on a GPU): bf16 keeps 8 bits of mantissa (a rounding of 0.4%), and a loss or a gradient sums many
rounded terms, so losses within 2e-2 relative, gradients within 2e-2 of their norm, LoRA weights
after 2-3 steps within 5e-2 of their norm (Adam's first steps move a weight by about the learning
rate whatever its gradient's size, so a tiny gradient whose sign flips moves it the other way).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mt_assets.lib.lora.trainer import FrozenHead, completion_loss, decoder_of, loss_head, resolve_loss_impl
from mt_assets.lib.lora.recipe import LoraRecipe
from mt_assets.lib.lora.train_loop import to_prompt_completion, train_adapter
from mt_assets_tests.lib.conftest import DEVICE, DTYPE, demo_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
BF16 = DTYPE == "bf16"
LOSS_RTOL = 2e-2 if BF16 else 1e-5


def lora_model(folder: Path):
    from peft import LoraConfig, get_peft_model

    from mt_assets.lib.models.loading import load_causal_lm

    torch.manual_seed(0)
    model = load_causal_lm(str(folder), device=DEVICE, dtype=DTYPE)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False)).train()


def training_batch(tokenizer, n: int = 6):
    """Right-padded prompt+completion rows with labels on the completion only, as TRL builds them."""
    examples = to_prompt_completion(demo_pairs(n))
    rows, labels = [], []
    for example in examples:
        prompt = tokenizer(example["prompt"])["input_ids"]
        completion = tokenizer(example["completion"])["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt + completion)
        labels.append([-100] * len(prompt) + completion)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    target = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    return ids.to(DEVICE), mask.to(DEVICE), target.to(DEVICE)


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_completion_loss_matches_the_full_logits_loss_and_trl_fused_head(small_lm):
    from trl.trainer.utils import add_fused_lm_head

    from mt_assets.lib.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(small_lm))
    model = lora_model(small_lm)
    ids, mask, labels = training_batch(tokenizer)
    results = {}

    model.zero_grad()
    full = model(input_ids=ids, attention_mask=mask, labels=labels)  # transformers: full logits, mean CE
    full.loss.backward()
    results["full"] = (full.loss.detach(), lora_grads(model))
    with torch.no_grad():
        logits = full.logits[:, :-1][labels[:, 1:] != -100]
        expected_correct = (logits.argmax(-1) == labels[:, 1:][labels[:, 1:] != -100]).sum()

    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
    loss, stats = completion_loss(out.hidden_states[-1], labels, model.get_output_embeddings())
    loss.backward()
    results["compact"] = (loss.detach(), lora_grads(model))
    assert stats["tokens"] == (labels[:, 1:] != -100).sum() and stats["correct"] == expected_correct

    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    model.zero_grad()
    fused = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    fused.loss.backward()
    results["fused"] = (fused.loss.detach(), lora_grads(model))
    assert torch.isclose(stats["entropy_sum"].float(), fused.entropy.sum().float(), rtol=LOSS_RTOL)

    reference_loss, reference_grads = results["full"]
    for name in ("compact", "fused"):
        loss, grads = results[name]
        assert torch.isclose(loss.float(), reference_loss.float(), rtol=LOSS_RTOL, atol=0), name
        assert grads.keys() == reference_grads.keys() and grads
        for key, grad in reference_grads.items():
            if BF16:
                assert (grads[key].float() - grad.float()).norm() <= 2e-2 * grad.float().norm(), (name, key)
            else:
                assert torch.allclose(grads[key], grad, rtol=1e-5, atol=1e-7), (name, key)


def test_frozen_head_is_cast_once_and_gives_autocasts_results():
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 500, bias=False).requires_grad_(False)
    rows = torch.randn(7, 32, requires_grad=True)
    results = {}
    for name in ("autocast", "frozen"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module = head if name == "autocast" else loss_head(head, "bf16")
            logits = module(rows)
        (grad,) = torch.autograd.grad(logits.float().square().sum(), rows)
        results[name] = (logits, grad)
    assert isinstance(module, FrozenHead) and module.weight.dtype == torch.bfloat16
    assert torch.equal(results["frozen"][0], results["autocast"][0])  # the same cast, the same matmul
    assert torch.equal(results["frozen"][1], results["autocast"][1])
    assert loss_head(head, "bf16", module) is module  # cast once, reused while the weight is unchanged
    with torch.no_grad():
        head.weight.mul_(2)
    recast = loss_head(head, "bf16", module)
    assert recast is not module and torch.equal(recast.weight, head.weight.to(torch.bfloat16))


def test_loss_head_leaves_heads_that_autocast_does_not_recast():
    head = torch.nn.Linear(8, 20).requires_grad_(False)
    assert loss_head(head, "no") is head  # full precision
    assert loss_head(head.to(torch.bfloat16), "bf16") is head  # already in that dtype
    trained = torch.nn.Linear(8, 20)
    assert loss_head(trained, "bf16") is trained  # its weight needs a gradient
    wrapped = torch.nn.Sequential(torch.nn.Linear(8, 20).requires_grad_(False))
    assert loss_head(wrapped, "bf16") is wrapped  # not a plain linear layer (a LoRA-wrapped head, say)


def test_decoder_of_gives_the_lm_heads_input(small_lm):
    from mt_assets.lib.models.loading import load_tokenizer

    model = lora_model(small_lm).eval()
    ids, mask, _ = training_batch(load_tokenizer(str(small_lm)))
    decoder = decoder_of(model)
    assert decoder is not None and decoder is not model.get_base_model()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(hidden, expected)
    assert decoder_of(decoder) is None  # a bare decoder has no separate one


def test_loss_impl_auto_is_compact_on_cpu():
    assert resolve_loss_impl("auto", "cpu") == "compact"
    assert resolve_loss_impl("fused", "cpu") == "fused"


def train(folder: Path, out: Path, table, **recipe):
    from mt_assets.lib.models.loading import load_causal_lm, load_tokenizer

    settings = dict(r=4, alpha=8, dropout=0.1, max_length=128, batch_size=4, learning_rate=3e-3, max_steps=3,
                    logging_steps=1, validation_fraction=0.25, eval_steps=3, seed=5,
                    mixed_precision="bf16" if BF16 else "no")
    model = load_causal_lm(str(folder), device=DEVICE, dtype="fp32")
    result = train_adapter(model, load_tokenizer(str(folder)), table, LoraRecipe(**{**settings, **recipe}), out)
    from safetensors.torch import load_file

    return result, load_file(out / "adapter_model.safetensors")


def assert_same_training(a, b, rtol=LOSS_RTOL):
    (result_a, weights_a), (result_b, weights_b) = a, b
    losses_a, losses_b = result_a.log["train_loss"].dropna(), result_b.log["train_loss"].dropna()
    assert len(losses_a) == len(losses_b) > 0
    assert losses_a.to_numpy() == pytest.approx(losses_b.to_numpy(), rel=rtol)
    evals_a, evals_b = result_a.log["eval_loss"].dropna(), result_b.log["eval_loss"].dropna()
    assert evals_a.to_numpy() == pytest.approx(evals_b.to_numpy(), rel=rtol)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        if BF16:
            assert (weights_a[key] - weights_b[key]).norm() <= 5e-2 * weights_b[key].norm(), key
        else:
            assert torch.allclose(weights_a[key], weights_b[key], atol=1e-5, rtol=0), key


def test_fast_kernels_and_compact_loss_train_as_eager_kernels_and_trl_fused_loss(small_lm, tmp_path):
    """The defaults (fast kernels, compact loss on CPU) against the seed's code path, with LoRA dropout on."""
    table = demo_pairs(24)
    reference = train(small_lm, tmp_path / "reference", table, kernels="eager", loss_impl="fused")
    fast = train(small_lm, tmp_path / "fast", table)
    assert json.loads((tmp_path / "fast" / "training_summary.json").read_text())["recipe"]["kernels"] == "fast"
    assert_same_training(reference, fast)
    assert reference[0].summary["final_train_loss"] != reference[0].summary["first_train_loss"]  # it trained


def test_token_budget_batch_of_all_pairs_trains_as_batch_size_of_all_pairs(small_lm, tmp_path):
    """The budget batches pad and mask as the collator does: one batch of the same pairs gives the same
    steps. (Without LoRA dropout: its random masks follow the rows' order in the batch, which differs.)"""
    table = demo_pairs(16)  # 12 train, 4 validation
    by_count = train(small_lm, tmp_path / "count", table, batch_size=12, max_steps=2, eval_steps=2, dropout=0.0)
    by_budget = train(small_lm, tmp_path / "budget", table, token_budget=128 * 12, max_steps=2, eval_steps=2,
                      dropout=0.0)
    assert_same_training(by_count, by_budget)


def test_token_budget_sets_the_steps_of_an_epoch(small_lm, tmp_path):
    from mt_assets.lib.translation.batching import token_budget_batches
    from mt_assets.lib.models.loading import load_tokenizer

    table = demo_pairs(40)
    result, _ = train(small_lm, tmp_path / "budget", table, token_budget=256, max_steps=-1, epochs=1,
                      validation_fraction=0.0, eval_steps=None)
    tokenizer = load_tokenizer(str(small_lm))
    lengths = [min(128, len(tokenizer(e["prompt"])["input_ids"]) + len(tokenizer(e["completion"])["input_ids"]) + 1)
               for e in to_prompt_completion(table)]  # + EOS, cut at max_length
    assert result.summary["steps"] == len(token_budget_batches(lengths, 256)) != 40 // 4  # not batch_size's


def test_gradient_checkpointing_trains_as_without(small_lm, tmp_path):
    table = demo_pairs(16)
    plain = train(small_lm, tmp_path / "plain", table, max_steps=2, eval_steps=2, dropout=0.0)
    checkpointed = train(small_lm, tmp_path / "checkpointed", table, max_steps=2, eval_steps=2, dropout=0.0,
                         gradient_checkpointing=True)
    assert_same_training(plain, checkpointed)


def test_recipe_refuses_a_budget_shorter_than_max_length_and_unknown_settings():
    with pytest.raises(ValueError, match="token_budget"):
        LoraRecipe(max_length=256, token_budget=128)
    with pytest.raises(ValueError, match="kernels"):
        LoraRecipe(kernels="flash")
    with pytest.raises(ValueError, match="loss_impl"):
        LoraRecipe(loss_impl="liger")
