"""KeyedJsonlCache: the one append-only JSON Lines cache (answers, samples, transform rows, judges)."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from mllm.generation.cache import KeyedJsonlCache


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_entries_survive_a_reopen_and_the_last_write_wins(tmp_path):
    path = tmp_path / "sub" / "cache.jsonl"
    cache = KeyedJsonlCache(path, value_field="answer")
    cache.add("a", "yes", id="q1")
    cache.add("b", ["x", "y"])
    assert cache.get("a") == "yes" and not path.exists()  # in memory until flushed
    cache.flush()
    cache.put("a", "no")
    assert _lines(path) == [{"key": "a", "id": "q1", "answer": "yes"}, {"key": "b", "answer": ["x", "y"]},
                            {"key": "a", "answer": "no"}]

    again = KeyedJsonlCache(path, value_field="answer")
    assert len(again) == 2 and again.get("a") == "no" and again.get("b") == ["x", "y"]
    assert "c" not in again and again.get("c", "missing") == "missing"
    assert again.hits == 2 and again.skipped == 0


def test_a_torn_last_line_is_skipped_and_the_next_entry_starts_on_a_fresh_line(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    KeyedJsonlCache(path).put("a", 1)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"key": "b", "val')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="mllm.generation.cache"):
        cache = KeyedJsonlCache(path)
    assert cache.get("a") == 1 and "b" not in cache and cache.skipped == 1
    assert not caplog.records  # an interruption is expected: no warning
    cache.put("c", {"n": 3})
    reopened = KeyedJsonlCache(path)
    assert reopened.get("a") == 1 and reopened.get("c") == {"n": 3} and reopened.skipped == 1
    assert path.read_text(encoding="utf-8").splitlines()[-1] == '{"key": "c", "value": {"n": 3}}'


def test_a_bad_line_mid_file_is_skipped_with_a_warning_naming_file_and_line(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a", "value": 1}\n{"key": "b", "val{"key": "c", "value": 3}\n'
                    '["not", "an", "entry"]\n{"key": "d", "reply": 4}\n{"key": "e", "value": 5}\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="mllm.generation.cache"):
        cache = KeyedJsonlCache(path)
    assert {k: cache.get(k) for k in "ae"} == {"a": 1, "e": 5}
    assert len(cache) == 2 and cache.skipped == 3
    assert [f"line {n}" in r.getMessage() and str(path) in r.getMessage()
            for r, n in zip(caplog.records, (2, 3, 4))] == [True, True, True]


def test_a_torn_multibyte_character_is_a_torn_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    KeyedJsonlCache(path).put("a", "déjà vu")
    with open(path, "ab") as handle:
        handle.write('{"key": "b", "value": "é'.encode()[:-1])  # cut inside a UTF-8 character
    cache = KeyedJsonlCache(path)
    assert cache.get("a") == "déjà vu" and "b" not in cache and cache.skipped == 1


def test_keys_hash_everything_that_decides_the_value():
    key = KeyedJsonlCache.key
    base = {"model": "m", "prompt": "What colour?", "settings": {"t": 0, "n": 1}}
    assert key(base) == key({"settings": {"n": 1, "t": 0}, "prompt": "What colour?", "model": "m"})  # order-free
    assert len(key(base)) == 64
    others = [{**base, "model": "m2"}, {**base, "prompt": "What shape?"}, {**base, "settings": {"t": 1, "n": 1}}]
    assert len({key(base), *map(key, others)}) == 4
    assert key(["realign", {"name": "j"}, "sys", "p"]) == key(("realign", {"name": "j"}, "sys", "p"))


def test_in_memory_cache_writes_nothing(tmp_path):
    cache = KeyedJsonlCache(None)
    cache.put("a", "x")
    assert cache.get("a") == "x" and list(tmp_path.iterdir()) == []


def test_a_value_json_cannot_hold_fails_at_add_and_is_not_stored(tmp_path):
    cache = KeyedJsonlCache(tmp_path / "c.jsonl")
    with pytest.raises(TypeError):
        cache.add("a", object())
    assert "a" not in cache
    cache.flush()
    assert not (tmp_path / "c.jsonl").exists()


def test_with_block_flushes_and_threads_do_not_interleave_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    with KeyedJsonlCache(path) as cache:
        def work(start):
            for i in range(start, start + 50):
                cache.put(f"k{i}", "v" * 200)
        threads = [threading.Thread(target=work, args=(n * 50,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cache.add("last", 0)
    reopened = KeyedJsonlCache(path)
    assert len(reopened) == 201 and reopened.skipped == 0
