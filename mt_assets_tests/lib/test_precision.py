"""CPU bf16: `dtype: auto` and `mixed_precision: auto` pick bf16 on CPUs with AMX or AVX512-BF16 only,
and the tiny profile pins fp32 (its tests compare numbers within 1e-5)."""

from __future__ import annotations

import pytest
import torch

from mt_assets.defs.profiles import build_resources, load_profile
from mt_assets.lib.models import loading
from mt_assets.lib.lora.recipe import LoraRecipe, effective_precision

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ICE_LAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
COOPER_LAKE = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n"


@pytest.mark.parametrize("cpuinfo, expected", [(SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True), (ICE_LAKE, False),
                                                ("", False)])
def test_cpu_bf16_is_read_from_the_cpu_flags(cpuinfo, expected):
    assert loading.cpu_has_bf16(cpuinfo) is expected


def test_auto_follows_this_cpu():
    bf16 = loading.cpu_has_bf16()
    assert loading.pick_dtype("cpu", "auto") == (torch.bfloat16 if bf16 else torch.float32)
    assert loading.pick_dtype("cpu", "auto", for_training=True) == torch.float32  # bf16 comes from autocast
    assert effective_precision(LoraRecipe(), "cpu") == ("bf16" if bf16 else "no")
    assert loading.pick_dtype("cpu", "fp32") == torch.float32
    assert effective_precision(LoraRecipe(mixed_precision="no"), "cpu") == "no"


def test_bf16_is_allowed_on_any_cpu_and_fp16_on_none():
    assert effective_precision(LoraRecipe(mixed_precision="bf16"), "cpu") == "bf16"
    with pytest.raises(ValueError, match=r"fp16 needs a GPU.*training.mixed_precision"):
        effective_precision(LoraRecipe(mixed_precision="fp16"), "cpu")


def test_tiny_profile_pins_fp32():
    resources = build_resources(load_profile("tiny"))
    assert resources["base_model"].dtype == "fp32" and resources["base_model"].precision() == "float32"
    assert resources["training"].mixed_precision == "no"
