"""The translation cache under concurrent runs and failed writes (lib.translation.cache)."""

from __future__ import annotations

import multiprocessing

import pytest

from mt_assets.lib.translation.cache import TranslationCache, cache_key

SENTENCES = 300


def _entry(writer: int) -> list[str]:
    # long lines with separators a line-based format would split (U+2028, U+0085, a newline)
    return [f"writer {writer} sentence {i}: la phrase\u2028suite\u0085fin\n" + "x" * 200 for i in range(SENTENCES)]


def _write(folder: str, key: str, writer: int, rounds: int) -> None:
    cache = TranslationCache(folder)
    for _ in range(rounds):
        cache.put(key, _entry(writer), {"writer": writer})


def _read(folder: str, key: str, rounds: int, seen) -> None:
    cache = TranslationCache(folder)
    for _ in range(rounds):
        stored = cache.get(key, SENTENCES)
        if stored is not None:
            hypotheses, stats = stored
            seen.append((stats["writer"], hypotheses == _entry(stats["writer"])))
    seen.append(("unusable", cache.skipped))


def test_concurrent_writers_never_give_a_reader_a_partial_or_mixed_entry(tmp_path):
    folder, key = str(tmp_path / "cache"), cache_key(system="B", test="t")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        seen = manager.list()
        workers = [context.Process(target=_write, args=(folder, key, w, 60)) for w in (1, 2)]
        workers.append(context.Process(target=_read, args=(folder, key, 400, seen)))
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [worker.exitcode for worker in workers] == [0, 0, 0]
        seen = list(seen)
    reads, (label, unusable) = seen[:-1], seen[-1]
    assert label == "unusable" and unusable == 0  # no read ever met a half-written file
    assert reads and all(whole for _, whole in reads)  # every entry read is one writer's, whole
    assert {writer for writer, _ in reads} <= {1, 2}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.json"]  # no temporary file left
    hypotheses, stats = TranslationCache(folder).get(key, SENTENCES)
    assert hypotheses == _entry(stats["writer"])


def test_a_failed_write_keeps_the_previous_entry_and_leaves_no_temporary_file(tmp_path):
    cache, key = TranslationCache(tmp_path), cache_key(system="A")
    cache.put(key, ["une phrase"], {"seconds": 1.0})
    with pytest.raises(TypeError):
        cache.put(key, ["autre"], {"seconds": object()})  # not JSON: fails half way through the write
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.json"]
    assert cache.get(key, 1) == (["une phrase"], {"seconds": 1.0})
    assert cache.counts() == {"reused": 1, "translated": 0, "unusable_entries": 0}
