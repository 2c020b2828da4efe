"""Teacher back ends: the OpenAI-compatible client against a loopback server with faults, the
in-process transformers teacher, and the oracle."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback

import pytest

from mt_assets.lib.data.pairs import make_pairs
from mt_assets.lib.synth.prompt import build_messages
from mt_assets.lib.synth.teachers.base import ChatTeacher, TeacherConfigError, TeacherUnavailableError
from mt_assets.lib.synth.teachers.local_transformers import TransformersTeacher
from mt_assets.lib.synth.teachers.openai_compatible import OpenAITeacher, RetryPolicy, parse_retry_after
from mt_assets.lib.synth.teachers.oracle import OracleTeacher
from mt_assets_tests.loopback_teacher import Fault, LoopbackTeacher

SECRET = "sk-test-SECRET-4f9c2e"
ENV = "MT_TEST_TEACHER_KEY"
POOL = [
    ("Ich bin müde.", "Je suis fatigué."),
    ("Wo ist der Bahnhof?", "Où est la gare ?"),
    ("Es regnet seit heute Morgen.", "Il pleut depuis ce matin."),
    ("Danke für deine Hilfe.", "Merci pour ton aide."),
    ("Wir fahren morgen nach Berlin.", "Nous partons demain pour Berlin."),
]
MESSAGES = build_messages(source_lang="de", target_lang="fr", topic="travel", n=5)
FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.02, backoff_max_s=0.1)


def make_teacher(server: LoopbackTeacher, **overrides) -> OpenAITeacher:
    settings = {"base_url": server.base_url, "model": "loopback/model", "api_key_env": ENV,
                "timeout_s": 2.0, "retry": FAST, **overrides}
    return OpenAITeacher(**settings)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    return SECRET


def serve(**kwargs) -> LoopbackTeacher:
    kwargs.setdefault("pairs_per_reply", 5)
    kwargs.setdefault("api_key", SECRET)
    return LoopbackTeacher(POOL, **kwargs)


def reply_pairs(text: str) -> list[tuple[str, str]]:
    return [(p["source"], p["target"]) for p in json.loads(text)["pairs"]]


# --- the happy path ---------------------------------------------------------------------------

def test_request_sends_model_messages_seed_and_key_and_returns_the_reply(key):
    with serve() as server:
        teacher = make_teacher(server)
        assert isinstance(teacher, ChatTeacher)
        reply = teacher.request(MESSAGES, seed=3, n=5)
        assert reply_pairs(reply) == server.clean_pairs(3)
        (recorded,) = server.requests
        assert recorded.body["model"] == "loopback/model"
        assert recorded.body["messages"] == MESSAGES
        assert recorded.body["seed"] == 3
        assert recorded.body["max_tokens"] == 256 + 128 * 5
        assert recorded.authorization == f"Bearer {SECRET}"


def test_key_is_read_from_the_environment_at_call_time(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with serve() as server:
        teacher = make_teacher(server)  # constructing needs no key
        monkeypatch.setenv(ENV, SECRET)
        teacher.request(MESSAGES, seed=0, n=5)
        assert server.requests[0].authorization == f"Bearer {SECRET}"


def test_no_auth_server_needs_no_key(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with serve(api_key=None) as server:
        teacher = make_teacher(server, api_key_env=None)
        assert reply_pairs(teacher.request(MESSAGES, seed=1, n=5)) == server.clean_pairs(1)


# --- retried faults ----------------------------------------------------------------------------

def test_429_with_retry_after_seconds_is_honoured(key):
    with serve(faults={0: Fault("rate_limit", retry_after="0.4")}) as server:
        teacher = make_teacher(server)
        start = time.monotonic()
        reply = teacher.request(MESSAGES, seed=2, n=5)
        assert reply_pairs(reply) == server.clean_pairs(2)
        assert server.count == 2
        gap = server.requests[1].time - server.requests[0].time
        assert gap >= 0.4, f"retried after {gap:.3f} s despite Retry-After: 0.4"
        assert time.monotonic() - start < 2
        assert teacher.stats["rate_limited"] == 1 and teacher.stats["retries"] == 1


def test_429_pauses_every_thread_of_the_teacher(key):
    """After a 429 with Retry-After, a request started by another thread waits too (no storm)."""
    with serve(faults={0: Fault("rate_limit", retry_after="0.5")}) as server:
        teacher = make_teacher(server, max_concurrency=2)
        first = threading.Thread(target=teacher.request, args=(MESSAGES,), kwargs={"seed": 0, "n": 5})
        first.start()
        while server.count == 0:
            time.sleep(0.005)
        time.sleep(0.1)  # the 429 has been answered; now a second thread asks
        teacher.request(MESSAGES, seed=1, n=5)
        first.join()
        times = sorted(r.time for r in server.requests)
        assert len(times) == 3
        assert times[1] - times[0] >= 0.45, "the second thread did not wait for the Retry-After pause"


def test_a_storm_of_429s_is_ridden_out(key):
    faults = {i: Fault("rate_limit", retry_after="0.05") for i in range(10)}
    with serve(faults=faults) as server:
        teacher = make_teacher(server, max_concurrency=4, retry=RetryPolicy(max_attempts=8, backoff_base_s=0.02))
        threads = [threading.Thread(target=teacher.request, args=(MESSAGES,), kwargs={"seed": s, "n": 5})
                   for s in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.count == 14
        assert sorted(server.answered_seeds()) == [0, 1, 2, 3]
        assert teacher.stats["rate_limited"] == 10


@pytest.mark.parametrize(
    "fault",
    [
        Fault("server_error"),
        Fault("hang", seconds=4.0),
        Fault("truncated_body"),
        Fault("invalid_http_json"),
        Fault("rate_limit"),  # no Retry-After: exponential backoff
    ],
    ids=lambda f: f.kind,
)
def test_transient_faults_are_retried(key, fault):
    """The client's own retries (its backoff: about 0.5 s, then 1 s) answer on the third attempt;
    a hang is cut short by timeout_s, long before the server would answer."""
    with serve(faults={0: fault, 1: fault}) as server:
        teacher = make_teacher(server, timeout_s=0.3)
        start = time.monotonic()
        reply = teacher.request(MESSAGES, seed=4, n=5)
        elapsed = time.monotonic() - start
        assert reply_pairs(reply) == server.clean_pairs(4)
        assert server.count == 3
        assert teacher.stats["retries"] == 2
        if fault.kind != "invalid_http_json":  # the client's own retries; a 200 it cannot parse is ours
            assert [r.client_retry for r in server.requests] == ["0", "1", "2"]
        assert elapsed < 4.0, f"took {elapsed:.2f} s: the timeout did not cut the hang short"


def test_a_reply_cut_off_at_the_token_limit_is_returned_and_counted_not_retried(key):
    with serve(faults={0: Fault("length")}) as server:
        teacher = make_teacher(server)
        reply = teacher.request(MESSAGES, seed=2, n=5)
        assert server.count == 1 and teacher.stats["truncated_replies"] == 1
        with pytest.raises(json.JSONDecodeError):
            json.loads(reply)  # synth.parse_reply will count it as a malformed reply


def test_persistent_500_fails_after_max_attempts_naming_the_settings(key):
    with serve(faults={i: Fault("server_error") for i in range(10)}) as server:
        teacher = make_teacher(server)
        with pytest.raises(TeacherUnavailableError) as caught:
            teacher.request(MESSAGES, seed=0, n=5)
        assert server.count == FAST.max_attempts
        message = str(caught.value)
        assert "HTTP 500" in message and server.base_url in message and "max_attempts" in message


def test_connection_refused_fails_with_a_clear_message(key):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    teacher = OpenAITeacher(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=ENV, timeout_s=1, retry=FAST)
    with pytest.raises(TeacherUnavailableError, match="connection failed") as caught:
        teacher.request(MESSAGES, seed=0, n=5)
    assert f"127.0.0.1:{port}" in str(caught.value) and "base_url" in str(caught.value)
    assert teacher.stats["connection_errors"] == FAST.max_attempts


def test_retry_after_beyond_the_cap_fails_at_once(key):
    with serve(faults={0: Fault("rate_limit", retry_after="3600")}) as server:
        teacher = make_teacher(server)
        start = time.monotonic()
        with pytest.raises(TeacherUnavailableError, match="max_retry_after_s"):
            teacher.request(MESSAGES, seed=0, n=5)
        assert time.monotonic() - start < 1 and server.count == 1


# --- fatal faults, and the key never leaks ------------------------------------------------------

def _everything_said(err: BaseException, caplog, capsys) -> str:
    text = [str(err), repr(err), "".join(traceback.format_exception(err)), caplog.text]
    out = capsys.readouterr()
    return "\n".join(text + [out.out, out.err])


def test_401_fails_fast_names_the_env_var_and_never_shows_the_key(key, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with serve(faults={0: Fault("unauthorized")}) as server:
        teacher = make_teacher(server)
        with pytest.raises(TeacherConfigError) as caught:
            teacher.request(MESSAGES, seed=0, n=5)
        assert server.count == 1, "a 401 must not be retried"
    err = caught.value
    assert ENV in str(err) and "401" in str(err)
    assert err.__cause__ is None and err.__context__ is None
    said = _everything_said(err, caplog, capsys) + repr(teacher) + str(teacher.stats)
    assert SECRET not in said


def test_wrong_key_is_refused_by_the_server(monkeypatch):
    monkeypatch.setenv(ENV, "sk-wrong-key-778")
    with serve() as server:
        with pytest.raises(TeacherConfigError, match=ENV) as caught:
            make_teacher(server).request(MESSAGES, seed=0, n=5)
        assert "sk-wrong-key-778" not in "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize(
    ("fault", "needle"),
    [("forbidden", ENV), ("not_found", "base_url"), ("bad_request", "max_tokens is too large")],
)
def test_other_client_errors_fail_fast(key, fault, needle):
    with serve(faults={0: Fault(fault)}) as server:
        with pytest.raises(TeacherConfigError, match=needle) as caught:
            make_teacher(server).request(MESSAGES, seed=0, n=5)
        assert server.count == 1
    assert SECRET not in str(caught.value)


def test_missing_key_names_the_variable_and_sends_nothing(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with serve() as server:
        with pytest.raises(TeacherConfigError, match=f"environment variable {ENV} is not set"):
            make_teacher(server).request(MESSAGES, seed=0, n=5)
        assert server.count == 0


def test_repr_shows_settings_but_not_the_key(key):
    teacher = OpenAITeacher(base_url="http://127.0.0.1:9/v1", api_key_env=ENV)
    text = repr(teacher)
    assert ENV in text and "Qwen/Qwen2.5-32B-Instruct" in text and SECRET not in text


@pytest.mark.parametrize(
    ("settings", "needle"),
    [({"base_url": "localhost:8000"}, "base_url"), ({"base_url": "http://x/v1", "max_concurrency": 0}, "max_concurrency"),
     ({"base_url": "http://x/v1", "timeout_s": 0}, "timeout_s")],
)
def test_invalid_settings_are_named(settings, needle):
    with pytest.raises(TeacherConfigError, match=needle):
        OpenAITeacher(**settings)


def test_the_teacher_resource_takes_its_settings_from_the_lib_teacher_and_retry_policy():
    from mt_assets.defs.synthetic import OpenAICompatibleTeacher

    assert set(OpenAICompatibleTeacher.model_fields) == {
        "base_url", "base_url_env", "model", "api_key_env", "max_concurrency", "timeout_s", "temperature",
        "max_attempts", "backoff_base_s", "backoff_max_s", "max_retry_after_s", "json_schema"}
    url = "http://127.0.0.1:9/v1"
    assert OpenAICompatibleTeacher(base_url=url).build(None, None, None) == OpenAITeacher(base_url=url)
    built = OpenAICompatibleTeacher(base_url=url, model="m", api_key_env=None, max_attempts=2, backoff_max_s=4.0,
                                    timeout_s=3.0, json_schema=True).build(None, None, None)
    assert built == OpenAITeacher(base_url=url, model="m", api_key_env=None, timeout_s=3.0, json_schema=True,
                                  retry=RetryPolicy(max_attempts=2, backoff_max_s=4.0))
    with pytest.raises(ValueError, match="setting max_attempts=0"):
        OpenAICompatibleTeacher(base_url=url, max_attempts=0).build(None, None, None)


# --- Retry-After parsing and backoff ------------------------------------------------------------

def test_parse_retry_after_forms():
    now = 1_700_000_000.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 7))
    assert parse_retry_after({"Retry-After": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(7, abs=1)
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    import random

    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=5.0)
    rng = random.Random(0)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (8, 5.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# --- in-process transformers teacher -------------------------------------------------------------

class _Batch(dict):
    pass


class StubTokenizer:
    """Records what it is asked; encodes characters as ids."""

    pad_token_id = 0
    eos_token_id = 0

    def __init__(self, chat_template=None):
        self.chat_template = chat_template
        self.prompts = []

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "<template>" + "|".join(f"{m['role']}={m['content']}" for m in messages) + "<assistant>"

    def __call__(self, text, return_tensors, add_special_tokens):
        import torch

        self.prompts.append((text, add_special_tokens))
        return _Batch(input_ids=torch.tensor([[ord(c) % 50 for c in text[:20]]]))

    def decode(self, ids, skip_special_tokens):
        return "".join(chr(97 + int(i) % 26) for i in ids)


class StubModel:
    name_or_path = "stub/model"

    def generate(self, input_ids, max_new_tokens, do_sample, pad_token_id, **kwargs):
        import torch

        new = torch.randint(0, 26, (1, 6))
        return torch.cat([input_ids, new], dim=1)


@pytest.mark.parametrize("template", [None, "{{ messages }}"])
def test_transformers_teacher_uses_the_chat_template_if_present(template):
    tokenizer = StubTokenizer(chat_template=template)
    teacher = TransformersTeacher(StubModel(), tokenizer)
    assert teacher.model == "stub/model" and teacher.backend == "transformers"
    first = teacher.request(MESSAGES, seed=5, n=3)
    again = teacher.request(MESSAGES, seed=5, n=3)
    other = teacher.request(MESSAGES, seed=6, n=3)
    assert first == again and len(first) == 6, "same seed, same reply; only new tokens decoded"
    assert first != other
    prompt, special = tokenizer.prompts[0]
    if template:
        assert prompt.startswith("<template>system=") and special is False
    else:
        assert prompt.startswith("System: ") and prompt.endswith("Assistant:") and special is True
        assert MESSAGES[1]["content"] in prompt


def test_transformers_teacher_loads_lazily_and_needs_a_name_with_a_loader():
    calls = []

    def loader():
        calls.append(1)
        return StubModel(), StubTokenizer()

    teacher = TransformersTeacher(loader=loader, model_name="base/model")
    assert calls == [] and teacher.cache_identity()["model"] == "base/model"
    teacher.request(MESSAGES, seed=0, n=2)
    teacher.request(MESSAGES, seed=1, n=2)
    assert calls == [1]
    with pytest.raises(TeacherConfigError, match="model_name"):
        TransformersTeacher(loader=loader)


def test_transformers_teacher_with_a_real_tiny_model():
    """A real (randomly initialised) GPT-2 and a real fast tokenizer with a chat template."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator([s for pair in POOL for s in pair] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=4096, n_embd=32, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    teacher = TransformersTeacher(model, tokenizer, model_name="tiny/gpt2", max_new_tokens=12)
    first = teacher.request(MESSAGES, seed=11, n=2)
    assert isinstance(first, str) and first == teacher.request(MESSAGES, seed=11, n=2)
    assert "Write 2 new German" not in first, "the prompt must not be echoed back"


# --- oracle ---------------------------------------------------------------------------------------

def test_oracle_serves_held_out_pairs_only_deterministically():
    pool = make_pairs(
        ["Ich bin müde.", "Es regnet.", "Wo ist der Bahnhof?", "Das Essen ist kalt.", "Guten Appetit!", "Ich lese."],
        ["Je suis fatigué.", "Il pleut.", "Où est la gare ?", "Le repas est froid.", "Bon appétit !", "Je lis."],
        "de", "fr", "tatoeba:pool", topic=["a", "b", "c", "d", "e", "f"])
    train = make_pairs(["Ich bin müde."], ["Je suis fatigué."], "de", "fr", "train")  # same pair id
    test = make_pairs(["Es regnet heute."], ["Il pleut."], "de", "fr", "test")     # shares a target text
    oracle = OracleTeacher(pool, train=train, test=test)
    assert oracle.excluded == {"pool_rows": 6, "excluded_pair_in_train_or_test": 1,
                               "excluded_text_in_train_or_test": 1, "eligible": 4}
    served = oracle.pairs(seed=3)
    assert set(served["source"]) == {"Wo ist der Bahnhof?", "Das Essen ist kalt.", "Guten Appetit!", "Ich lese."}
    assert (served["origin"] == "synthetic:oracle:tatoeba:pool").all()
    assert list(served.columns) == ["pair_id", "source", "target", "source_lang", "target_lang", "origin", "topic"]
    assert served.equals(oracle.pairs(seed=3))
    assert list(oracle.pairs(seed=4)["source"]) != list(served["source"]) or len(served) < 2
    by_source = dict(zip(served["source"], served["topic"]))
    assert by_source["Guten Appetit!"] == "e"


def test_oracle_rejects_a_pool_in_other_languages():
    pool = make_pairs(["Hello."], ["Bonjour."], "en", "fr", "pool")
    train = make_pairs(["Hallo."], ["Salut."], "de", "fr", "train")
    with pytest.raises(ValueError, match="languages"):
        OracleTeacher(pool, train=train, test=train.iloc[:0])
    with pytest.raises(ValueError, match="empty"):
        OracleTeacher(pool.iloc[:0], train=train, test=train)
