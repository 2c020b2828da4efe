"""`mt-assets export`: an adapter of the data lake merged into its base model, saved with its
tokenizer, lineage and README so that transformers loads it without PEFT and translates exactly as
base model + adapter do."""

from __future__ import annotations

import pytest
import torch

from mt_assets import cli
from mt_assets.defs.io_manager import LakeError
from mt_assets.lib.lora.export import GGUF_FILE, LLAMA_CPP_ENV, LINEAGE_FILE
from mt_assets.lib.models.loading import load_causal_lm, load_tokenizer
from mt_assets.lib.translation.prompt import build_prompt
from mt_assets.lib.translation.translate import translate
from mt_assets_tests.ops_support import write_profile

SENTENCES = ["Das Wetter ist heute schön.", "Ich trinke gern Kaffee am Morgen.", "Wo ist der Bahnhof?"]


@pytest.fixture(scope="module", params=["lora", "lora+embeddings"])
def trained(request, tmp_path_factory, untrained_tiny_model):
    """adapter_B of the tiny profile (smaller), materialized by `mt-assets materialize`: LoRA on every
    linear layer, and once also a trained copy of the (tied) embeddings (modules_to_save)."""
    folder = tmp_path_factory.mktemp("export")
    training = {"epochs": 2, "batch_size": 16}
    if request.param == "lora+embeddings":
        training["modules_to_save"] = ["wte"]
    profile = write_profile(folder / "export.yaml", folder / "lake", untrained_tiny_model, pretrain_steps=0,
                            executor={"type": "in_process"}, training=training)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DAGSTER_HOME", raising=False)  # an ephemeral instance
        assert cli.main(["materialize", "--profile", str(profile), "--select", "*adapter_B"]) == 0
    return profile, folder / "lake" / "adapter_B"


def test_exported_model_loads_without_peft_and_translates_as_the_adapter(trained, untrained_tiny_model, tmp_path,
                                                                         monkeypatch, capsys):
    profile, adapter = trained
    monkeypatch.delenv(LLAMA_CPP_ENV, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no llama.cpp converter here
    out = tmp_path / "model"
    assert cli.main(["export", "--profile", str(profile), "--adapter", "adapter_B", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"exported adapter_B merged into its base model to {out}" in printed
    assert "GGUF skipped" in printed and LLAMA_CPP_ENV in printed and not (out / GGUF_FILE).exists()
    assert (out / LINEAGE_FILE).read_bytes() == (adapter / LINEAGE_FILE).read_bytes()
    readme = (out / "README.md").read_text()
    assert "AutoModelForCausalLM.from_pretrained" in readme and "vllm serve" in readme
    assert build_prompt("<sentence>", "de", "fr").split("\n")[0] in readme
    assert not (out / "adapter_config.json").exists()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = AutoModelForCausalLM.from_pretrained(str(out)).eval()  # transformers alone, no PEFT
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    tokenizer.padding_side = "left"  # as the README says, for batched generation
    assert not any("lora" in name for name, _ in exported.named_parameters())
    adapted = PeftModel.from_pretrained(load_causal_lm(str(untrained_tiny_model), device="cpu", dtype="fp32"),
                                        str(adapter)).eval()
    base = load_causal_lm(str(untrained_tiny_model), device="cpu", dtype="fp32")
    expected = translate(adapted, load_tokenizer(str(untrained_tiny_model)), SENTENCES, "de", "fr", max_new_tokens=16)
    assert translate(exported, tokenizer, SENTENCES, "de", "fr", max_new_tokens=16) == expected
    assert expected != translate(base, tokenizer, SENTENCES, "de", "fr", max_new_tokens=16)  # the adapter counts
    batch = tokenizer([build_prompt(s, "de", "fr") for s in SENTENCES], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(exported(**batch).logits, adapted(**batch).logits, atol=1e-4)


def test_export_refuses_a_never_materialized_adapter_and_a_used_folder(trained, tmp_path):
    profile, _ = trained
    with pytest.raises(LakeError, match=r"no adapter folder adapter_C and no asset adapter_C .*"
                       r"mt-assets materialize --select adapter_C"):
        cli.main(["export", "--profile", str(profile), "--adapter", "adapter_C", "-o", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match=f"export folder {tmp_path / 'used'} already exists and is not empty"):
        cli.main(["export", "--profile", str(profile), "--adapter", "adapter_B", "-o", str(tmp_path / "used")])
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]


def test_export_refuses_a_damaged_adapter(trained, tmp_path):
    profile, adapter = trained
    damaged = tmp_path / "adapter"
    damaged.mkdir()
    (damaged / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    (damaged / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="weights file .* is empty"):
        cli.main(["export", "--profile", str(profile), "--adapter", str(damaged), "-o", str(tmp_path / "out")])


def test_a_llama_cpp_folder_without_the_converter_is_named(trained, tmp_path, monkeypatch):
    profile, _ = trained
    monkeypatch.setenv(LLAMA_CPP_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match=f"{LLAMA_CPP_ENV}={tmp_path}: no convert_hf_to_gguf.py there"):
        cli.main(["export", "--profile", str(profile), "--adapter", "adapter_B", "-o", str(tmp_path / "out")])


def test_export_refuses_an_adapter_of_another_base_model(trained, tmp_path):
    _, adapter = trained
    other = write_profile(tmp_path / "other.yaml", adapter.parent, tmp_path / "other_model", pretrain_steps=0)
    with pytest.raises(SystemExit, match=r"adapter_B was trained on .*, not on this profile's base model "
                       r".*other_model"):
        cli.main(["export", "--profile", str(other), "--adapter", "adapter_B", "-o", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
