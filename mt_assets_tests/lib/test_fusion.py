"""lib.lora.fusion: the merged adapter's weights are PEFT's formulas applied to the parents'
matrices; the folder loads like a trained adapter and records both parents; mismatched parents
are refused naming the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mt_assets.lib.hashing import folder_hash
from mt_assets.lib.lora.adapter_folder import LINEAGE_FILE
from mt_assets.lib.lora.fusion import FUSION_FILE, FusionRecipe, fuse_adapters
from mt_assets.lib.translation.translate import check_adapter_folder

MODULE = "transformer.h.0.attn.attention.q_proj"
BASE = {"base_model": "tiny-gpt-neo", "revision": "sha256:0123"}


def tiny_model():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, max_position_embeddings=32,
                          attention_types=[[["global"], 2]], intermediate_size=32)
    return GPTNeoForCausalLM(config).eval()


def make_adapter(folder: Path, seed: int, r: int, alpha: int, table: str, modules=("q_proj", "v_proj"),
                 **extra) -> Path:
    """A LoRA adapter on the tiny model with random (non-zero) A and B, saved as a trained one is."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(modules),
                                                    lora_dropout=0.0, **extra))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(str(folder))
    (folder / LINEAGE_FILE).write_text(json.dumps({"training_table": table, "training_table_hash": f"hash-{table}",
                                                   **BASE}))
    return folder


def parent_matrices(folder: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    weights = load_file(str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    prefix = f"base_model.model.{MODULE}"
    return weights[f"{prefix}.lora_A.weight"], weights[f"{prefix}.lora_B.weight"], config["lora_alpha"] / config["r"]


@pytest.fixture
def parents(tmp_path) -> dict[str, Path]:
    return {"adapter_B": make_adapter(tmp_path / "B", 1, r=4, alpha=8, table="train_A"),
            "adapter_C": make_adapter(tmp_path / "C", 2, r=4, alpha=16, table="synth_B")}


def fuse(parents, tmp_path, **recipe) -> Path:
    output = tmp_path / "E"
    fuse_adapters(tiny_model(), parents, FusionRecipe(**recipe), output, BASE)
    return output


def merged_delta(folder: Path) -> torch.Tensor:
    a, b, scaling = parent_matrices(folder)
    return scaling * b @ a


def test_linear_merge_scales_a_and_b_by_the_square_root_of_weight_times_scaling(parents, tmp_path):
    weights = [0.7, 0.4]
    fused = fuse(parents, tmp_path, method="linear", weights=weights)
    (a_b, b_b, s_b), (a_c, b_c, s_c) = (parent_matrices(f) for f in parents.values())
    root_b, root_c = (0.7 * s_b) ** 0.5, (0.4 * s_c) ** 0.5
    expected = (root_b * b_b + root_c * b_c) @ (root_b * a_b + root_c * a_c)
    a, b, scaling = parent_matrices(fused)
    assert scaling == 1.0 and a.shape == a_b.shape  # PEFT sets lora_alpha = r on the merged adapter
    torch.testing.assert_close(merged_delta(fused), expected, rtol=1e-5, atol=1e-6)
    # linear is not the weighted sum of the deltas (cross terms): the formula above is what PEFT does
    assert not torch.allclose(expected, 0.7 * s_b * b_b @ a_b + 0.4 * s_c * b_c @ a_c, atol=1e-4)


def test_cat_merge_is_exactly_the_weighted_sum_of_the_parents_deltas(parents, tmp_path):
    fused = fuse(parents, tmp_path, method="cat", weights=[0.3, 1.2])
    (a_b, b_b, s_b), (a_c, b_c, s_c) = (parent_matrices(f) for f in parents.values())
    a, _, _ = parent_matrices(fused)
    assert a.shape[0] == 8  # ranks add up
    torch.testing.assert_close(merged_delta(fused), 0.3 * s_b * b_b @ a_b + 1.2 * s_c * b_c @ a_c,
                               rtol=1e-5, atol=1e-6)


def test_ties_merge_follows_peft_ties_on_a_and_b(parents, tmp_path):
    from peft.utils.merge_utils import ties

    fused = fuse(parents, tmp_path, method="ties", weights=[0.5, 0.5], density=0.6)
    (a_b, b_b, s_b), (a_c, b_c, s_c) = (parent_matrices(f) for f in parents.values())
    roots = torch.tensor([(0.5 * s_b) ** 0.5, (0.5 * s_c) ** 0.5])
    expected_a = ties([a_b, a_c], roots, 0.6, "total")
    expected_b = ties([b_b, b_c], roots, 0.6, "total")
    a, b, _ = parent_matrices(fused)
    torch.testing.assert_close(a, expected_a)
    torch.testing.assert_close(b, expected_b)
    assert (a == 0).any() and (a != 0).any(), "ties trims the smallest entries, keeps the rest"


def test_dare_ties_is_repeatable_by_its_seed(parents, tmp_path):
    first = fuse(parents, tmp_path / "1", method="dare_ties", density=0.5, seed=3)
    second = fuse(parents, tmp_path / "2", method="dare_ties", density=0.5, seed=3)
    assert folder_hash(first) == folder_hash(second)


def test_fused_folder_loads_like_a_trained_adapter_and_records_both_parents(parents, tmp_path):
    from peft import PeftModel

    fused = fuse(parents, tmp_path)
    check_adapter_folder(fused, "adapter_E")
    assert sorted(p.name for p in fused.iterdir()) == sorted(
        ["adapter_config.json", "adapter_model.safetensors", LINEAGE_FILE, FUSION_FILE, "README.md"])
    model = PeftModel.from_pretrained(tiny_model(), str(fused))
    state = {k: v for k, v in model.state_dict().items() if MODULE in k and "lora_A" in k}
    assert state and all(v.abs().sum() > 0 for v in state.values())
    lineage = json.loads((fused / LINEAGE_FILE).read_text())
    assert lineage["training_table"] == "adapter_B:train_A+adapter_C:synth_B"
    assert lineage["training_table_hash"] == "hash-train_A+hash-synth_B"
    assert [p["adapter_hash"] for p in lineage["parents"]] == [folder_hash(f) for f in parents.values()]
    assert (lineage["base_model"], lineage["revision"]) == (BASE["base_model"], BASE["revision"])
    summary = json.loads((fused / FUSION_FILE).read_text())
    assert (summary["method"], summary["weights"], summary["r"]) == ("linear", [0.5, 0.5], 4)


def test_modules_trained_whole_merge_as_task_vectors_beside_the_lora_merge(tmp_path):
    from peft import PeftModel

    parents = {"adapter_B": make_adapter(tmp_path / "B", 1, r=4, alpha=8, table="train_A", modules_to_save=["wte"]),
               "adapter_C": make_adapter(tmp_path / "C", 2, r=4, alpha=8, table="synth_B", modules_to_save=["wte"])}
    fused = fuse(parents, tmp_path, method="cat", weights=[0.25, 0.5])
    key = "base_model.model.transformer.wte.weight"
    base = tiny_model().state_dict()["transformer.wte.weight"]
    m_b, m_c = (load_file(str(f / "adapter_model.safetensors"))[key] for f in parents.values())
    merged = load_file(str(fused / "adapter_model.safetensors"))[key]
    torch.testing.assert_close(merged, base + 0.25 * (m_b - base) + 0.5 * (m_c - base))
    (a_b, b_b, s_b), (a_c, b_c, s_c) = (parent_matrices(f) for f in parents.values())
    torch.testing.assert_close(merged_delta(fused), 0.25 * s_b * b_b @ a_b + 0.5 * s_c * b_c @ a_c,
                               rtol=1e-5, atol=1e-6)
    assert json.loads((fused / "adapter_config.json").read_text())["modules_to_save"] == ["wte"]
    loaded = PeftModel.from_pretrained(tiny_model(), str(fused))
    torch.testing.assert_close(loaded.get_input_embeddings().weight, merged)


@pytest.mark.parametrize("change, setting", [
    ({"r": 8, "alpha": 16}, "training.r"),
    ({"modules": ("q_proj",)}, "training.target_modules"),
    ({"modules_to_save": ["wte"]}, "training.modules_to_save"),
])
def test_mismatched_parents_are_refused_naming_the_setting(parents, tmp_path, change, setting):
    other = {"r": 4, "alpha": 8, **change}
    parents["adapter_C"] = make_adapter(tmp_path / "other", 5, table="synth_B", **other)
    with pytest.raises(ValueError, match=setting.replace(".", r"\.")):
        fuse(parents, tmp_path)


def test_parents_of_another_base_model_are_refused(parents, tmp_path):
    lineage = parents["adapter_C"] / LINEAGE_FILE
    lineage.write_text(json.dumps({**json.loads(lineage.read_text()), "base_model": "other-model"}))
    with pytest.raises(ValueError, match="same base_model setting"):
        fuse(parents, tmp_path)
    with pytest.raises(ValueError, match="materialize adapter_B and adapter_C again"):
        fuse_adapters(tiny_model(), {"adapter_B": parents["adapter_B"]} | {"adapter_C": parents["adapter_B"]},
                      FusionRecipe(), tmp_path / "x", {"base_model": "elsewhere", "revision": None})


@pytest.mark.parametrize("settings, named", [({"method": "svd"}, "fusion.method"),
                                             ({"weights": [1.0]}, "fusion.weights"),
                                             ({"density": 0.0}, "fusion.density")])
def test_bad_fusion_settings_are_refused_naming_the_setting(settings, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        FusionRecipe(**settings)
