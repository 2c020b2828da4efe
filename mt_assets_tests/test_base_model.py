"""The base model resource: each load is the caller's own copy."""

from __future__ import annotations

import torch

from mt_assets_tests.e2e_support import tiny_base


def test_each_load_is_a_private_copy_that_an_adapter_does_not_reach(untrained_tiny_model):
    from peft import LoraConfig, get_peft_model

    base_model = tiny_base(untrained_tiny_model, pretrain_steps=0)
    first, second = base_model.load_model(), base_model.load_model()
    assert first is not second and not first.training
    weights = {name: tensor.clone() for name, tensor in second.state_dict().items()}
    adapted = get_peft_model(first, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert any("lora_" in name for name, _ in adapted.named_parameters())
    assert not any("lora_" in name for name, _ in second.named_parameters())  # the other copy is untouched
    assert all(torch.equal(weights[name], tensor) for name, tensor in second.state_dict().items())
    assert base_model.load_model() is not second
