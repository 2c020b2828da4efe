"""System A_fewshot: the base model shown evaluation.fewshot_k worked examples from train_A (a draw
seeded by experiment.seed, never a test_A pair) before each sentence, scored like every system."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from mt_assets.defs.evaluation import Evaluation
from mt_assets.definitions import defs
from mt_assets.lib.data.sampling import split_train_test
from mt_assets.lib.translation.fewshot import draw_examples
from mt_assets.lib.translation.prompt import build_fewshot_prompt, check_prompts_fit, clean_output
from mt_assets_tests.e2e_support import graph_resources, tiny_base
from mt_assets_tests.lib.conftest import demo_pairs


def _split(seed: int = 42):
    return split_train_test(demo_pairs(40), 0.25, seed)


def test_fewshot_prompt_for_two_examples_is_the_training_format_repeated_then_the_query():
    prompt = build_fewshot_prompt([("Hallo.", "Bonjour."), ("Danke!", "Merci !")], "Ja.", "de", "fr")
    assert prompt == ("Translate German to French.\nGerman: Hallo.\nFrench: Bonjour.\n"
                      "Translate German to French.\nGerman: Danke!\nFrench: Merci !\n"
                      "Translate German to French.\nGerman: Ja.\nFrench:")
    assert build_fewshot_prompt([], "Ja.", "de", "fr") == "Translate German to French.\nGerman: Ja.\nFrench:"
    # a model that goes on with the pattern writes another example after its answer: only the first line counts
    assert clean_output(" Oui.\nTranslate German to French.\nGerman: Nein.", "de", "fr") == "Oui."


def test_examples_are_a_seeded_draw_from_train_only():
    train, test = _split()
    first, again, other = draw_examples(train, test, 3, 42), draw_examples(train, test, 3, 42), \
        draw_examples(train, test, 3, 7)
    assert len(first) == 3 and first.equals(again)
    assert list(first["pair_id"]) != list(other["pair_id"])
    assert set(first["pair_id"]) | set(other["pair_id"]) <= set(train["pair_id"])
    assert not (set(first["pair_id"]) | set(other["pair_id"])) & set(test["pair_id"])
    assert draw_examples(train, test, 0, 42).empty
    with pytest.raises(ValueError, match="evaluation.fewshot_k is 31 but train_A has 30 pairs"):
        draw_examples(train, test, 31, 42)


def test_an_example_from_test_A_is_an_error():
    train, test = _split()
    # every pair drawn: the test pairs among them must stop the draw
    with pytest.raises(ValueError, match="share a sentence with, test_A pairs"):
        draw_examples(pd.concat([train, test]), test, len(train) + len(test), 42)
    # a train pair whose source is a test source (other case, other target) is the same sentence
    copied = test.head(1).assign(source=lambda t: t["source"].str.upper(), target="autre", pair_id="f" * 16)
    with pytest.raises(ValueError, match="f" * 16):
        draw_examples(pd.concat([train, copied]), test, len(train) + 1, 42)


def test_prompt_fit_counts_the_examples(tiny_model_dir):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer, config = AutoTokenizer.from_pretrained(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    train, test = _split()
    examples = list(zip(train["source"], train["target"]))[:3]
    alone = max(len(tokenizer(build_fewshot_prompt([], s, "de", "fr"))["input_ids"]) for s in test["source"])
    config.max_position_embeddings = alone + 10
    check_prompts_fit(tokenizer, config, list(test["source"]), "de", "fr", 10, "test_A", test["pair_id"], "advice")
    with pytest.raises(ValueError, match="test_A: 10 sentence\\(s\\) too long"):
        check_prompts_fit(tokenizer, config, list(test["source"]), "de", "fr", 10, "test_A", test["pair_id"],
                          "advice", examples=examples)


@pytest.fixture(scope="module")
def fewshot_lake(tmp_path_factory, tiny_model_dir):
    lake = tmp_path_factory.mktemp("fewshot") / "lake"
    resources = graph_resources(lake, tiny_base(tiny_model_dir), training={"epochs": 1})
    resources["evaluation"] = Evaluation(batch_size=32, max_new_tokens=20, n_bootstrap=100, fewshot_k=2)
    with dg.instance_for_test() as instance:
        result = dg.materialize([*defs.assets, *defs.asset_checks], resources=resources, instance=instance)
        assert result.success
        yield lake, result, resources, instance


@pytest.mark.e2e
def test_fewshot_system_is_translated_scored_and_its_examples_recorded(fewshot_lake):
    lake, result, _, _ = fewshot_lake
    train, test = pd.read_parquet(lake / "train_A.parquet"), pd.read_parquet(lake / "test_A.parquet")
    translations = pd.read_parquet(lake / "translations.parquet")
    fewshot = translations[translations["system"] == "A_fewshot"]
    assert list(fewshot["pair_id"]) == list(test["pair_id"])
    expected = list(draw_examples(train, test, 2, 42)["pair_id"])
    assert set(fewshot["fewshot_pair_ids"]) == {",".join(expected)}
    assert set(translations.loc[translations["system"] != "A_fewshot", "fewshot_pair_ids"]) == {""}
    assert set(fewshot["adapter"]) == {""}  # the base model, adapters disabled
    table = pd.read_parquet(lake / "bleu_table.parquet").set_index("system")
    assert list(table.index) == ["A", "A_fewshot", "B", "C", "D", "E"]
    assert table.loc["A_fewshot", ["bleu_p_vs_A", "bleu_p_vs_B"]].notna().all()
    metadata = result.asset_materializations_for_node("bleu_table")[0].metadata
    assert metadata["fewshot_pair_ids"].value == expected
    assert "bleu/A_fewshot" in metadata
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["every_test_pair_translated"]


@pytest.mark.e2e
def test_fewshot_k_0_removes_the_system(fewshot_lake):
    lake, _, resources, instance = fewshot_lake
    resources = {**resources, "evaluation": Evaluation(batch_size=32, max_new_tokens=20, n_bootstrap=100,
                                                       fewshot_k=0)}
    result = dg.materialize([*defs.assets, *defs.asset_checks], resources=resources, instance=instance,
                            selection=["translations", "bleu_table"])
    assert result.success
    assert sorted(pd.read_parquet(lake / "translations.parquet")["system"].unique()) == ["A", "B", "C", "D", "E"]
    table = pd.read_parquet(lake / "bleu_table.parquet")
    assert list(table["system"]) == ["A", "B", "C", "D", "E"] and set(table["fewshot_pair_ids"]) == {""}
