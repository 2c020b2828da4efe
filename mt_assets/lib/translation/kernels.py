"""Fused kernels for GPT-Neo that compute what transformers' eager code computes, faster.

- Attention: transformers runs GPT-Neo's attention in eager mode only. It builds the full score
  matrix in fp32 (it upcasts queries and keys), does not scale the scores by 1/sqrt(head_dim),
  and its local layers see only the last `window_size` tokens. `GPTNeoSdpaSelfAttention` computes
  the same with `torch.nn.functional.scaled_dot_product_attention` (scale 1.0, eager's additive
  mask, the same local window); on a GPU a fused kernel keeps the scores in fp32 registers
  instead of writing them, and their copies for the backward pass, to memory.
- GELU: GPT-Neo's `gelu_new` is the tanh approximation written as seven elementwise operations,
  each a pass over the (tokens x 4*hidden) MLP activations, most of them kept for the backward
  pass. transformers has the same function as one kernel, `gelu_pytorch_tanh`
  (`F.gelu(approximate="tanh")`, which computes half precision in fp32 inside): `with_fused_activation`
  overrides a config's activation with it before the model is built (lib.models.loading does so
  for every model it loads), so the GELU is fused whichever attention kernels run.

The attention weights are the same modules: `set_kernels(model, "fast")` / `set_kernels(model, "eager")`
swap the attention classes in place, for free and reversibly.

Plain Python: no Dagster here.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

KERNELS = ("fast", "eager")


class GPTNeoSdpaSelfAttention(GPTNeoSelfAttention):
    """GPT-Neo self-attention through `scaled_dot_product_attention`, numerically the eager one.

    Differences from eager that do not change results: the scores are not returned (callers that
    ask for `output_attentions` get the eager path), and on a CPU half-precision inputs are upcast
    to fp32 as a whole (eager upcasts queries and keys; SDPA takes one dtype).
    """

    def _attn(self, query, key, value, attention_mask=None):
        if getattr(self, "_return_weights", False):
            return super()._attn(query, key, value, attention_mask)
        query_length, key_length = query.size(-2), key.size(-2)
        # The layer's own causal (global) or sliding-window (local) pattern, the same slice as eager
        allowed = self.bias[:, :, key_length - query_length:key_length, :key_length]
        out_dtype = value.dtype
        if query.device.type == "cpu" and query.dtype != torch.float32:
            query, key, value = query.float(), key.float(), value.float()
        if attention_mask is None:
            attention_mask = torch.zeros((), dtype=query.dtype, device=query.device)
        lowest = torch.finfo(attention_mask.dtype).min
        # Eager replaces disallowed scores by `min`, then adds the mask: `mask + min` is that, to the bit
        mask = torch.where(allowed, attention_mask, attention_mask + lowest)
        if mask.dtype != query.dtype:
            if torch.finfo(mask.dtype).min < torch.finfo(query.dtype).min:  # e.g. fp32 mask, fp16 autocast
                mask = mask.clamp(min=torch.finfo(query.dtype).min)
            mask = mask.to(query.dtype)
        dropout = self.attn_dropout.p if self.training else 0.0
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=1.0)
        return output.to(out_dtype), None

    def forward(self, hidden_states, attention_mask=None, layer_past=None, use_cache=False,
                output_attentions=False, **kwargs):
        self._return_weights = bool(output_attentions)
        return super().forward(hidden_states, attention_mask=attention_mask, layer_past=layer_past,
                               use_cache=use_cache, output_attentions=output_attentions, **kwargs)


FUSED_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh"}
"""A config's `activation_function` -> transformers' name for the same function as one kernel."""


def fused_activation(config) -> dict[str, str]:
    """The config override that loads a model of `config` (GPT-Neo and the other GPT-2-family
    configs, which name their MLP activation `activation_function`) with its fused GELU; {} for
    a config without one."""
    fused = FUSED_ACTIVATIONS.get(getattr(config, "activation_function", None))
    return {"activation_function": fused} if fused else {}


def with_fused_activation(config):
    """`config`, changed in place, so that the model built or loaded from it runs its fused GELU."""
    for name, value in fused_activation(config).items():
        setattr(config, name, value)
    return config


SWAPS = {"fast": {GPTNeoSelfAttention: GPTNeoSdpaSelfAttention},
         "eager": {GPTNeoSdpaSelfAttention: GPTNeoSelfAttention}}


def set_kernels(model, kernels: str):
    """Run `model` with `kernels` ("fast" or "eager"); returns the model, changed in place.

    GPT-Neo attention layers (also inside a PEFT wrapper) switch classes over the same weights. A model without GPT-Neo attention that supports SDPA
    switches its attention implementation the transformers way.
    """
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}: use one of {KERNELS}")
    swaps = SWAPS[kernels]
    gpt_neo = False
    for module in model.modules():
        gpt_neo |= type(module) in (GPTNeoSelfAttention, GPTNeoSdpaSelfAttention)
        if type(module) in swaps:
            module.__class__ = swaps[type(module)]
    config = getattr(model, "config", None)
    if not gpt_neo and hasattr(model, "set_attn_implementation") and \
            getattr(config, "_attn_implementation", None) in ("sdpa", "eager"):
        model.set_attn_implementation("sdpa" if kernels == "fast" else "eager")
    return model


def kernels_of(model) -> str | None:
    """"fast" or "eager" for the first swappable module of `model` (None when it has none)."""
    for module in model.modules():
        if type(module) is GPTNeoSdpaSelfAttention:
            return "fast"
        if type(module) is GPTNeoSelfAttention:
            return "eager"
    return None
