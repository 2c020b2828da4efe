"""lib.translation.kernels: GPT-Neo's fast kernels (SDPA attention, fused GELU) compute what eager computes.

Tolerances: fp32 logits and gradients within 1e-5 (absolute; the logits are of order 1-10), bf16
logits within 0.05 (bf16 keeps 8 bits of mantissa: about 0.4% of a logit's size).
"""

from __future__ import annotations

import pytest
import torch

from mt_assets.lib.translation.kernels import GPTNeoSdpaSelfAttention, fused_activation, kernels_of, set_kernels
from mt_assets_tests.lib.conftest import DEVICE

pytestmark = pytest.mark.usefixtures("one_thread")


def gpt_neo(window_size: int = 5, layers: int = 4, dtype=torch.float32):
    """A random GPT-Neo with global and local layers whose window is shorter than the inputs."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(vocab_size=97, max_position_embeddings=64, hidden_size=32, num_layers=layers, num_heads=4,
                          attention_types=[[["global", "local"], layers // 2]], window_size=window_size,
                          bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return GPTNeoForCausalLM(config).to(device=DEVICE, dtype=dtype).eval()


def left_padded_batch(rows: int = 3, width: int = 12):
    """Random ids, left padding of 0, 4 and 9 tokens, and the positions `generate` would give."""
    torch.manual_seed(1)
    ids = torch.randint(1, 97, (rows, width))
    mask = torch.ones_like(ids)
    for row, pads in enumerate([0, 4, 9][:rows]):
        mask[row, :pads] = 0
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return ids.to(DEVICE), mask.to(DEVICE), positions.to(DEVICE)


def logits(model, kernels, **inputs):
    set_kernels(model, kernels)
    return model(**inputs).logits


def test_fast_logits_match_eager_with_local_layers_and_left_padding():
    model = gpt_neo(window_size=5)
    ids, mask, positions = left_padded_batch()
    with torch.no_grad():
        eager = logits(model, "eager", input_ids=ids, attention_mask=mask, position_ids=positions)
        fast = logits(model, "fast", input_ids=ids, attention_mask=mask, position_ids=positions)
    assert kernels_of(model) == "fast"
    assert torch.allclose(fast, eager, atol=1e-5, rtol=0)
    # The local window matters here: a window as long as the input gives other logits
    with torch.no_grad():
        wide = gpt_neo(window_size=64)
        wide.load_state_dict(model.state_dict())
        assert not torch.allclose(logits(wide, "fast", input_ids=ids, attention_mask=mask, position_ids=positions),
                                  fast, atol=1e-3)


def test_fast_matches_eager_step_by_step_with_a_kv_cache():
    from transformers import DynamicCache

    model = gpt_neo(window_size=5)
    ids, mask, positions = left_padded_batch()
    outputs = {}
    with torch.no_grad():
        for kernels in ("eager", "fast"):
            set_kernels(model, kernels)
            cache = DynamicCache()
            steps = [model(input_ids=ids[:, :8], attention_mask=mask[:, :8], position_ids=positions[:, :8],
                           cache=cache, use_cache=True).logits[:, -1]]
            for t in range(8, ids.shape[1]):  # one token at a time, past the 5-token window
                steps.append(model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                                   position_ids=positions[:, t:t + 1], cache=cache, use_cache=True).logits[:, -1])
            outputs[kernels] = torch.stack(steps)
    assert torch.allclose(outputs["fast"], outputs["eager"], atol=1e-5, rtol=0)


def test_fast_gradients_match_eager():
    """As training batches are: right padding, loss on the later tokens of each row only."""
    model = gpt_neo(window_size=5).train()
    torch.manual_seed(1)
    ids = torch.randint(1, 97, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 3:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100
    ids, mask, labels = ids.to(DEVICE), mask.to(DEVICE), labels.to(DEVICE)
    grads = {}
    for kernels in ("eager", "fast"):
        set_kernels(model, kernels)
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads[kernels] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["fast"].keys() == grads["eager"].keys()
    for name, grad in grads["eager"].items():
        assert torch.allclose(grads["fast"][name], grad, atol=1e-5, rtol=1e-4), name


def test_fast_in_bf16_stays_within_bf16_rounding_of_eager():
    model = gpt_neo(window_size=5, dtype=torch.bfloat16)
    ids, mask, positions = left_padded_batch()
    with torch.no_grad():
        eager = logits(model, "eager", input_ids=ids, attention_mask=mask, position_ids=positions).float()
        fast = logits(model, "fast", input_ids=ids, attention_mask=mask, position_ids=positions).float()
    real = mask.bool()
    assert (fast[real] - eager[real]).abs().max() < 0.05
    assert torch.isfinite(fast).all()


def test_set_kernels_swaps_classes_back_and_forth_and_keeps_the_weights():
    from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

    model = gpt_neo()
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    set_kernels(model, "fast")
    assert all(type(layer.attn.attention) is GPTNeoSdpaSelfAttention for layer in model.transformer.h)
    set_kernels(model, "eager")
    assert all(type(layer.attn.attention) is GPTNeoSelfAttention for layer in model.transformer.h)
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == before
    with pytest.raises(ValueError, match="unknown kernels"):
        set_kernels(model, "flash")


def test_fused_gelu_is_gelu_new():
    from transformers.activations import ACT2FN, NewGELUActivation

    assert fused_activation(gpt_neo().config) == {"activation_function": "gelu_pytorch_tanh"}
    x = torch.linspace(-8, 8, 10_001, device=DEVICE)
    assert torch.allclose(ACT2FN["gelu_pytorch_tanh"](x), NewGELUActivation()(x), atol=1e-6, rtol=0)


def test_a_loaded_gpt_neo_runs_the_fused_gelu_with_the_logits_and_gradients_of_gelu_new(tmp_path):
    """lib.models.loading loads GPT-Neo with `gelu_pytorch_tanh`: the fused kernel, the same model."""
    from transformers.activations import GELUTanh, NewGELUActivation

    from mt_assets.lib.models.loading import load_causal_lm

    reference = gpt_neo(window_size=5).train()
    reference.save_pretrained(tmp_path)
    loaded = load_causal_lm(str(tmp_path), device=DEVICE, dtype="fp32").train()
    assert all(type(layer.mlp.act) is NewGELUActivation for layer in reference.transformer.h)
    assert all(type(layer.mlp.act) is GELUTanh for layer in loaded.transformer.h)
    assert reference.config.activation_function == "gelu_new"  # the saved config is left as it is
    torch.manual_seed(1)
    ids = torch.randint(1, 97, (3, 12), device=DEVICE)
    grads, outputs = {}, {}
    for name, model in (("gelu_new", reference), ("fused", loaded)):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        outputs[name] = out.logits.detach()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert torch.allclose(outputs["fused"], outputs["gelu_new"], atol=1e-5, rtol=0)
    assert grads["fused"].keys() == grads["gelu_new"].keys()
    for name, grad in grads["gelu_new"].items():
        assert torch.allclose(grads["fused"][name], grad, atol=1e-5, rtol=1e-4), name


def test_fast_kernels_return_eager_attention_weights_when_asked():
    model = set_kernels(gpt_neo(), "fast")
    ids, mask, positions = left_padded_batch()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_attentions=True)
    assert len(out.attentions) == 4 and out.attentions[0].shape == (3, 4, 12, 12)


def test_set_kernels_reaches_layers_inside_a_peft_model():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(gpt_neo(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    set_kernels(model, "fast")
    assert kernels_of(model) == "fast"
