"""lib.translation.systems: adapters attached by system name, each system translated as its own
model translates, and the lineage columns each system's rows carry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mt_assets.lib.hashing import folder_hash, table_hash
from mt_assets.lib.lora.adapter_folder import LINEAGE_FILE
from mt_assets.lib.translation.systems import adapter_lineage, attach_adapters, base_model_mismatch, translate_systems
from mt_assets.lib.translation.translate import translate
from mt_assets_tests.lib.conftest import demo_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
MAX_NEW = 12


def _base(small_lm):
    from mt_assets.lib.models.loading import load_causal_lm

    return load_causal_lm(str(small_lm), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def adapters(small_lm, tmp_path_factory) -> dict[str, Path]:
    """Two saved LoRA adapters that change the outputs (random A and B), with their lineage files."""
    from peft import LoraConfig, get_peft_model

    folders = {}
    for seed, name in enumerate(("adapter_B", "adapter_C")):
        torch.manual_seed(seed)
        model = get_peft_model(_base(small_lm), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(str(folder))
        (folder / LINEAGE_FILE).write_text(json.dumps({"training_table": f"table_{name}",
                                                       "training_table_hash": f"hash_{name}",
                                                       "base_model": "the-base"}))
        folders[name] = folder
    return folders


def test_every_system_translates_as_its_own_model_with_its_lineage(small_lm, adapters):
    from peft import PeftModel

    from mt_assets.lib.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(small_lm))
    test = demo_pairs(6, offset=300)
    sources = list(test["source"])
    systems = {"A": None, "B": "adapter_B", "C": "adapter_C"}
    model = attach_adapters(_base(small_lm), {s: (a, adapters[a]) for s, a in systems.items() if a})
    logged = []
    table = translate_systems(model, tokenizer, test, systems, adapters, {"base_model": "the-base", "revision": None},
                              log=logged.append, batch_size=4, max_new_tokens=MAX_NEW)

    expected = {"A": translate(_base(small_lm), tokenizer, sources, "de", "fr", max_new_tokens=MAX_NEW)}
    for system in "BC":
        alone = PeftModel.from_pretrained(_base(small_lm), str(adapters[systems[system]])).eval()
        expected[system] = translate(alone, tokenizer, sources, "de", "fr", max_new_tokens=MAX_NEW)
    assert expected["A"] != expected["B"] != expected["C"]  # each adapter changes the outputs
    for system, hypotheses in expected.items():
        rows = table[table["system"] == system]
        assert rows["hypothesis"].tolist() == hypotheses, system
        assert rows["pair_id"].tolist() == test["pair_id"].tolist()
        assert rows["reference"].tolist() == test["target"].tolist()
    assert set(table["test_table_hash"]) == {table_hash(test)}
    assert set(table["base_model"]) == {"the-base"} and set(table["base_revision"]) == {""}
    b = table[table["system"] == "B"].iloc[0]
    assert (b["adapter"], b["adapter_hash"], b["training_table"], b["training_table_hash"]) == (
        "adapter_B", folder_hash(adapters["adapter_B"]), "table_adapter_B", "hash_adapter_B")
    assert set(table.loc[table["system"] == "A", "adapter_hash"]) == {""}
    assert "Translating 6 sentences with system C" in logged and "system C: 6/6 sentences" in logged


def test_a_damaged_adapter_is_named_before_any_is_loaded(small_lm, adapters, tmp_path):
    import shutil

    broken = tmp_path / "adapter_C"
    shutil.copytree(adapters["adapter_C"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"")
    base = _base(small_lm)
    with pytest.raises(ValueError, match=r"adapter adapter_C: the weights file .* is empty\. Materialize adapter_C "
                                         r"again \(mt-assets materialize --select adapter_C\)"):
        attach_adapters(base, {"B": ("adapter_B", adapters["adapter_B"]), "C": ("adapter_C", broken)})
    assert not hasattr(base, "peft_config")  # the intact adapter_B was not loaded either


def test_lineage_of_the_base_model_and_a_foreign_base(adapters, tmp_path):
    assert adapter_lineage(None, None) == {"adapter": "", "adapter_hash": "", "training_table": "",
                                           "training_table_hash": ""}
    assert base_model_mismatch(adapters["adapter_B"], "adapter_B", "the-base") is None
    assert base_model_mismatch(adapters["adapter_B"], "adapter_B", "other") == (
        "adapter_B was trained on the-base, this profile's base model is other")
    assert base_model_mismatch(tmp_path, str(tmp_path), "other") is None  # trained elsewhere: no lineage file


@pytest.fixture
def translate_with_cache(small_lm, adapters, tmp_path):
    """translate_systems on systems A and B with a TranslationCache in tmp_path; returns (table, stats, cache)."""
    from mt_assets.lib.models.loading import load_tokenizer
    from mt_assets.lib.translation.cache import TranslationCache

    tokenizer = load_tokenizer(str(small_lm))
    systems = {"A": None, "B": "adapter_B"}
    model = attach_adapters(_base(small_lm), {s: (a, adapters[a]) for s, a in systems.items() if a})

    def run(test, max_new_tokens=MAX_NEW, folders=adapters):
        cache, stats = TranslationCache(tmp_path / "cache"), {}
        table = translate_systems(model, tokenizer, test, systems, folders, {"base_model": "the-base", "revision": None},
                                  log=lambda _: None, cache=cache, cache_scope={"precision": "fp32"}, stats=stats,
                                  batch_size=4, max_new_tokens=max_new_tokens)
        return table, stats, cache

    return run


def test_a_system_whose_inputs_did_not_change_is_not_translated_again(translate_with_cache, tmp_path):
    test = demo_pairs(5, offset=310)
    first, made, cache = translate_with_cache(test)
    assert cache.counts() == {"reused": 0, "translated": 2, "unusable_entries": 0}
    assert {s: v["reused"] for s, v in made.items()} == {"A": False, "B": False}
    assert made["A"]["sentences"] == 5 and made["A"]["new_tokens"] > 0 and made["A"]["tokens_per_s"] > 0
    # what is stored is what comes back: mark every stored hypothesis and see the marks in the next run
    for entry in (tmp_path / "cache").glob("*.json"):
        stored = json.loads(entry.read_text())
        entry.write_text(json.dumps({**stored, "hypotheses": [f"stored {h}" for h in stored["hypotheses"]]}))
    second, stats, cache = translate_with_cache(test)
    assert cache.counts()["reused"] == 2 and all(v["reused"] for v in stats.values())
    assert list(second["hypothesis"]) == [f"stored {h}" for h in first["hypothesis"]]
    assert {s: {**v, "reused": False} for s, v in stats.items()} == made  # the statistics of the run that translated
    assert second.drop(columns="hypothesis").equals(first.drop(columns="hypothesis"))  # same lineage columns


def test_a_changed_setting_test_set_or_adapter_translates_again(translate_with_cache, adapters, tmp_path):
    test = demo_pairs(4, offset=320)
    translate_with_cache(test)
    assert translate_with_cache(test, max_new_tokens=MAX_NEW - 4)[2].counts()["reused"] == 0
    assert translate_with_cache(demo_pairs(4, offset=324))[2].counts()["reused"] == 0
    # adapter_B's folder holds other weights: A is reused, B translated again
    other = {**adapters, "adapter_B": adapters["adapter_C"]}
    _, stats, cache = translate_with_cache(test, folders=other)
    assert {s: v["reused"] for s, v in stats.items()} == {"A": True, "B": False}


@pytest.mark.parametrize("damage", ["truncated", "too_few", "not_text"])
def test_a_damaged_entry_is_not_used_but_counted(translate_with_cache, tmp_path, damage):
    test = demo_pairs(3, offset=330)
    first, _, _ = translate_with_cache(test)
    for entry in (tmp_path / "cache").glob("*.json"):
        stored = json.loads(entry.read_text())
        entry.write_text({"truncated": entry.read_text()[:20],
                          "too_few": json.dumps({**stored, "hypotheses": stored["hypotheses"][:-1]}),
                          "not_text": json.dumps({**stored, "hypotheses": [1] * len(stored["hypotheses"])})}[damage])
    second, stats, cache = translate_with_cache(test)
    assert cache.counts() == {"reused": 0, "translated": 2, "unusable_entries": 2}
    assert list(second["hypothesis"]) == list(first["hypothesis"])
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # every write was renamed into place
