"""Translate mode (sequence-level distillation): the source pool minus train_A and test_A, the
plain-text prompt, line parsing, and generate_synthetic against the loopback server's completions
endpoint (prompt content, filter counts, cache), and the oracle serving a pool's references."""

from __future__ import annotations

import json

import pytest

from mt_assets.lib.data.text import sentence_key
from mt_assets.lib.synth.cache import RequestCache
from mt_assets.lib.synth.generation import SynthesisShortfall, generate_synthetic
from mt_assets.lib.synth.parsing import MalformedReply, parse_line
from mt_assets.lib.synth.planning import SynthConfig
from mt_assets.lib.synth.prompt import build_translation_prompt
from mt_assets.lib.synth.teachers.oracle import OracleTeacher
from mt_assets.lib.synth.translate_mode import TRANSLATE_TOPIC, TranslationPlanner, eligible_sources
from mt_assets_tests.lib.test_synth import corpus, loopback, openai_teacher  # noqa: F401 (fixture)

TRANSLATE = SynthConfig(mode="translate", few_shot=2)
LINE_FAULT_OF_SEED = {1: "multiline", 2: "label_only", 3: "labelled", 4: "empty", 5: "copy_source",
                      6: "next_example", 7: "leading_blank"}


def line_faults(seed: int) -> list[str]:
    kind = LINE_FAULT_OF_SEED.get(seed % 10)
    return [kind] if kind else []


# --- prompt and parsing -------------------------------------------------------------------------

def test_translation_prompt_shows_the_examples_then_the_sentence_one_per_line():
    prompt, stop = build_translation_prompt(
        source_lang="de", target_lang="fr", sentence="Das ist der erste Teil,\u2028und das der  zweite.",
        examples=[("Ich bin müde.", "Je suis fatigué."), ("Wo ist der Bahnhof?", "Où est la gare ?")])
    assert prompt == ("German: Ich bin müde.\nFrench: Je suis fatigué.\n\n"
                      "German: Wo ist der Bahnhof?\nFrench: Où est la gare ?\n\n"
                      "German: Das ist der erste Teil, und das der zweite.\nFrench:")
    assert prompt.splitlines() == prompt.split("\n")  # no other line break survives
    assert stop == ["\nGerman:"]


@pytest.mark.parametrize(("reply", "expected"), [
    (" Je suis là.", ("Je suis là.", 0)),
    ("French: Je suis là.\n", ("Je suis là.", 0)),
    ("\n\n  FRENCH :Je suis là.", ("Je suis là.", 0)),
    ("Je suis là.\nEt encore une ligne.\n\nEt une autre.", ("Je suis là.", 2)),
    ("Je suis là.\u2028Deuxième ligne.", ("Je suis là.", 1)),
])
def test_parse_line_takes_the_first_nonempty_line_without_its_label(reply, expected):
    assert parse_line(reply, "French") == expected


@pytest.mark.parametrize("reply", ["", "  \n \n", "French:", " french :  \nJe suis là."])
def test_parse_line_refuses_a_reply_without_a_translation(reply):
    with pytest.raises(MalformedReply):
        parse_line(reply, "French")


# --- the source pool ----------------------------------------------------------------------------

def test_pool_loses_train_and_test_sentences_repeats_and_blanks_all_counted(corpus):  # noqa: F811
    train, test = corpus["train"], corpus["test"]
    clean = [s for s, _ in corpus["pool"][:20]]
    rows = ([(s, None) for s in clean]
            + [(train["source"][0], None), (train["target"][1].upper(), None),  # same sentence as train_A
               (test["source"][2], None), (test["source"][3].rstrip(".!?") + " !!", None),  # test_A, near
               (clean[0], None), (clean[1].lower(), None), ("  \u200b ", None),  # repeats, blank
               ("Erster Teil\u2028zweiter Teil.", None)])
    pool = eligible_sources(rows, train, test, seed=3, origin="mine:moses", skipped=2)
    assert pool.counts == {"pool_rows": 28, "pool_skipped": 2, "pool_blank": 1,
                           "pool_excluded_same_as_train_or_test": 3, "pool_excluded_near_train_or_test": 1,
                           "pool_duplicates": 2, "pool_eligible": 21}
    assert sorted(pool.sentences) == sorted([*clean, "Erster Teil zweiter Teil."])
    assert list(pool.sentences) != [*clean, "Erster Teil zweiter Teil."]  # seeded order, not file order
    assert eligible_sources(rows, train, test, seed=3, origin="mine:moses").sentences == pool.sentences
    taken = {sentence_key(t) for frame in (train, test) for c in ("source", "target") for t in frame[c]}
    assert not taken & set(map(sentence_key, pool.sentences))


def test_pool_equal_to_train_is_a_clear_error_naming_the_setting_and_numbers(corpus):  # noqa: F811
    train, test = corpus["train"], corpus["test"]
    pool = eligible_sources(zip(train["source"], train["target"]), train, test, seed=0, origin="train.tsv:tsv")
    assert pool.counts["pool_eligible"] == 0 and pool.counts["pool_excluded_same_as_train_or_test"] == len(train)
    with pytest.raises(ValueError, match=r"synthesis\.source_pool \(train\.tsv:tsv\) has 0 usable sentences "
                       r"but synthesis needs 10.*of its 40 rows, 40 are sentences of train_A or test_A"):
        generate_synthetic(OracleTeacher(train, train=train.iloc[:0], test=test.iloc[:0]), train, test,
                           config=SynthConfig(mode="translate", size=10), source_pool=pool, progress=False)


def test_translate_mode_without_a_pool_names_the_setting(corpus):  # noqa: F811
    with pytest.raises(ValueError, match="synthesis.source_pool"):
        generate_synthetic(object(), corpus["train"], corpus["test"], config=TRANSLATE, cache_dir="x",
                           progress=False)


# --- against the loopback server ----------------------------------------------------------------

def test_translate_mode_against_the_loopback_completions_endpoint(corpus, tmp_path):  # noqa: F811
    train, test = corpus["train"], corpus["test"]
    clean = [s for s, _ in corpus["pool"][:60]]
    rows = [(s, None) for s in clean] + [(s, None) for s in train["source"][:5]] + [(test["source"][0], None)]
    pool = eligible_sources(rows, train, test, seed=0, origin="pool:text")
    config = SynthConfig(mode="translate", size=30, few_shot=2)
    with loopback(corpus, line_faults=line_faults) as server:
        teacher = openai_teacher(server)
        table, report = generate_synthetic(teacher, train, test, config=config, cache_dir=tmp_path / "cache",
                                           progress=False, source_pool=pool)
        prompts = server.prompts()
        assert server.count == len(prompts)  # translate mode uses /v1/completions only
        processed = report["requests_processed"]
        expected = server.injected_total(range(processed))
        # a second run: everything from the cache, the same table
        again, report2 = generate_synthetic(openai_teacher(server), train, test, config=config,
                                            cache_dir=tmp_path / "cache", progress=False, source_pool=pool)
        assert server.count == len(prompts)
    assert len(table) == 30 and report["rows"] == 30 and report["mode"] == "translate"
    assert report["pool_excluded_same_as_train_or_test"] == 6 and report["pool_eligible"] == 60
    # prompt content: the few-shot pairs from train_A, then a pool sentence; no test_A sentence anywhere
    train_pairs = set(zip(train["source"], train["target"]))
    test_keys = {sentence_key(t) for c in ("source", "target") for t in test[c]}
    train_keys = {sentence_key(t) for c in ("source", "target") for t in train[c]}
    for prompt in prompts:
        lines = prompt.splitlines()
        assert len(lines) == 3 * 2 + 2 and lines[-1] == "French:"  # 2 examples, blank lines, request
        examples = {(lines[i].removeprefix("German: "), lines[i + 1].removeprefix("French: ")) for i in (0, 3)}
        assert examples <= train_pairs
        asked = lines[-2].removeprefix("German: ")
        assert asked in clean and sentence_key(asked) not in train_keys
        assert not any(sentence_key(line.split(": ", 1)[-1]) in test_keys for line in lines)
    assert len(set(prompts)) == len(prompts)  # each pool sentence asked once
    # parsing and filter counts match what the server injected in the processed replies
    assert report["replies_malformed"] == expected["label_only"] + expected["empty"] > 0
    assert report["reply_lines_dropped"] == expected["multiline"] > 0
    assert report["filtered_wrong_language_target"] == expected["copy_source"] > 0
    assert report["items_received"] == processed - report["replies_malformed"]
    assert report["accepted"] + report["filtered_total"] == report["items_received"]
    assert set(table["topic"]) == {TRANSLATE_TOPIC}
    assert set(table["origin"]) == {"synthetic:openai:loopback/qwen"}
    translations = dict(corpus["pool"])
    assert all(translations[s] == t for s, t in zip(table["source"], table["target"]))
    assert report2["requests_sent"] == 0 and report2["requests_cached"] >= processed
    assert again.equals(table)


def test_translate_cache_keys_name_the_mode_and_the_source(corpus, tmp_path):  # noqa: F811
    train, test = corpus["train"], corpus["test"]
    pool = eligible_sources([(s, None) for s, _ in corpus["pool"][:5]], train, test, 0, "p:text")
    planner = TranslationPlanner(train, TRANSLATE, "de", "fr", pool)
    first, second = planner.plan(0), planner.plan(1)
    assert first.cache_extra()["mode"] == "translate" and first.cache_extra()["source"] == pool.sentences[0]
    identity = {"backend": "openai", "model": "m"}
    keys = {RequestCache.request_key(identity, p.messages, p.seed, **p.cache_extra()) for p in (first, second)}
    same_seed = RequestCache.request_key(identity, (), first.seed, **{**first.cache_extra(), "source": "x"})
    assert len(keys | {same_seed, RequestCache.request_key(identity, (), first.seed)}) == 4


def test_oracle_in_translate_mode_serves_the_pool_references_or_refuses(corpus):  # noqa: F811
    train, test = corpus["train"], corpus["test"]
    pairs = corpus["pool"][:30]
    own_pool = OracleTeacher(test.iloc[:5], train=train.iloc[:0], test=train.iloc[:0])
    parallel = eligible_sources(pairs, train, test, 1, "held:moses")
    table, report = generate_synthetic(own_pool, train, test, config=SynthConfig(mode="translate", size=12),
                                       source_pool=parallel, progress=False)
    assert len(table) == 12 and report["pool_eligible"] == 30
    assert set(zip(table["source"], table["target"])) <= set(pairs)
    assert set(table["origin"]) == {"synthetic:oracle:held:moses"}
    monolingual = eligible_sources([(s, None) for s, _ in pairs], train, test, 1, "held:text")
    with pytest.raises(ValueError, match=r"held:text has no target side"):
        generate_synthetic(own_pool, train, test, config=SynthConfig(mode="translate", size=12),
                           source_pool=monolingual, progress=False)


def test_a_teacher_that_never_answers_usably_is_a_shortfall_with_counts(corpus, tmp_path):  # noqa: F811
    train, test = corpus["train"], corpus["test"]
    pool = eligible_sources([(s, None) for s, _ in corpus["pool"][:20]], train, test, 0, "p:text")
    with loopback(corpus, line_faults=lambda seed: ["label_only"]) as server:
        with pytest.raises(SynthesisShortfall, match=r"0 valid pairs of 5.*replies_malformed=15") as raised:
            generate_synthetic(openai_teacher(server), train, test, config=SynthConfig(mode="translate", size=5),
                               cache_dir=tmp_path, progress=False, source_pool=pool)
    assert raised.value.report["replies_malformed"] == 15 and raised.value.report["pool_eligible"] == 20


def test_topics_mode_prompts_carry_train_A_examples_and_never_a_test_A_sentence(corpus, tmp_path):  # noqa: F811
    train, test = corpus["train"], corpus["test"]
    config = SynthConfig(pairs_per_request=5, size=20, few_shot=3)
    with loopback(corpus) as server:
        _, report = generate_synthetic(openai_teacher(server), train, test, config=config, cache_dir=tmp_path,
                                       progress=False)
        users = [next(m["content"] for m in r.body["messages"] if m["role"] == "user") for r in server.requests]
    assert report["mode"] == "topics" and report["rows"] == 20 and users
    for user in users:
        shown = [(s, t) for s, t in zip(train["source"], train["target"])
                 if json.dumps({"source": s, "target": t}, ensure_ascii=False) in user]
        assert len(shown) == 3
        assert not any(s in user or t in user for s, t in zip(test["source"], test["target"]))
