"""The openai judge against a local chat-completions server (no network); caching; secrecy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

from mllm.testing import ChatCompletionsServer  # noqa: E402
from mllm_eval.judges import JudgeError, OpenAIJudge, OpenAIJudgeConfig, judge_key  # noqa: E402

SECRET = "sk-test-4f9a1c2e-never-write-me"


def make_judge(server, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
    return OpenAIJudge(OpenAIJudgeConfig(model="judge-model", base_url=server.url, api_key_env="MY_JUDGE_KEY",
                                         cache=str(tmp_path / "cache.jsonl"), max_retries=0, **kw))


def test_openai_judge_speaks_chat_completions_and_caches(tmp_path, monkeypatch, caplog):
    caplog.set_level("DEBUG")
    with ChatCompletionsServer(lambda prompt, n: f"echo: {prompt}") as server:
        judge = make_judge(server, tmp_path, monkeypatch)
        assert judge.complete("hello", system="be fair") == "echo: hello"
        assert judge.complete("hello", system="be fair") == "echo: hello"  # from the cache
        assert len(server.requests) == 1
        sent = server.requests[0]
        assert sent["path"] == "/v1/chat/completions" and sent["model"] == "judge-model"
        assert sent["messages"] == [{"role": "system", "content": "be fair"}, {"role": "user", "content": "hello"}]
        assert server.auth[0] == f"Bearer {SECRET}"
        # a new judge on the same cache file answers without a request
        again = make_judge(server, tmp_path, monkeypatch)
        assert again.complete("hello", system="be fair") == "echo: hello"
        assert len(server.requests) == 1
        # other settings are another request
        other = make_judge(server, tmp_path, monkeypatch, temperature=0.5)
        other.complete("hello", system="be fair")
        assert len(server.requests) == 2
    cache_text = (tmp_path / "cache.jsonl").read_text()
    assert SECRET not in cache_text
    assert "echo: hello" in cache_text
    assert SECRET not in caplog.text


def test_openai_judge_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(JudgeError, match=r"\$NO_SUCH_KEY_VAR"):
        OpenAIJudge(OpenAIJudgeConfig(api_key_env="NO_SUCH_KEY_VAR"))


def test_judge_cache_key_depends_on_model_prompt_and_settings():
    m = [{"role": "user", "content": "x"}]
    k = judge_key("a", m, {"t": 0})
    assert k == judge_key("a", m, {"t": 0})
    assert len({k, judge_key("b", m, {"t": 0}), judge_key("a", m, {"t": 1}),
                judge_key("a", [{"role": "user", "content": "y"}], {"t": 0})}) == 4


def test_a_cache_file_written_before_the_shared_cache_class_still_answers(tmp_path, monkeypatch):
    """judge_cache.jsonl files of earlier runs: same keys, same ``{"key", "model", "reply"}`` lines."""
    import hashlib

    messages = [{"role": "user", "content": "hello, café"}]
    settings = {"temperature": 0.0, "max_tokens": 1024, "base_url": "http://127.0.0.1:9"}
    old_key = hashlib.sha256(json.dumps({"model": "judge-model", "messages": messages, "settings": settings},
                                        sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    assert judge_key("judge-model", messages, settings) == old_key
    (tmp_path / "cache.jsonl").write_text(json.dumps({"key": old_key, "model": "judge-model", "reply": "old verdict"})
                                          + "\n" + '{"key": "torn', encoding="utf-8")
    monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
    judge = OpenAIJudge(OpenAIJudgeConfig(model="judge-model", base_url="http://127.0.0.1:9", api_key_env="MY_JUDGE_KEY",
                                          cache=str(tmp_path / "cache.jsonl"), max_retries=0))
    assert judge.complete("hello, café") == "old verdict"  # no request: nothing listens on port 9


def test_llava_bench_with_openai_judge_counts_unparsed(tmp_path, monkeypatch):
    from mllm.records import EvalItem
    from mllm_eval.llava_bench import LlavaBench, LlavaBenchConfig

    rule = {"conv": {"role": "Assistant", "prompt": "rate"}, "default": {"role": "Assistant", "prompt": "rate"}}
    (tmp_path / "rule.json").write_text(json.dumps(rule))
    (tmp_path / "refs.jsonl").write_text('{"question_id": 0, "text": "ref0"}\n{"question_id": 1, "text": "ref1"}\n')

    def reply(prompt, n):
        return "8 6\nok" if "model answer 0" in prompt else "I cannot decide."

    with ChatCompletionsServer(reply) as server:
        monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
        cfg = LlavaBenchConfig(references=str(tmp_path / "refs.jsonl"), rule=str(tmp_path / "rule.json"),
                               judge={"name": "openai", "model": "m", "base_url": server.url,
                                      "api_key_env": "MY_JUDGE_KEY", "max_retries": 0})
        items = [EvalItem(id=str(i), prompt="<image>\nq", images=("x.jpg",), check_files=False,
                          metadata={"question": "q", "image": "x.jpg", "category": "conv"}) for i in range(2)]
        m = LlavaBench(cfg).score(items, {"0": "model answer 0", "1": "model answer 1"})
        assert "[Assistant 1]\nref0" in server.requests[0]["messages"][-1]["content"]
    assert m["unparsed"] == 1 and m["n"] == 2
    # LLaVA's rule: the unparsed review counts as [-1, -1]: means 3.5 and 2.5
    assert m["overall"] == round(2.5 / 3.5 * 100, 1)


def test_plugin_module_stays_light():
    code = ("import sys, mllm_eval.plugin; from mllm.plugins.registry import Registry; Registry(); "
            "bad = [m for m in ('torch', 'transformers', 'openai', 'mllm_eval.judges', 'mllm_eval.pope') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_all_components_registered():
    from mllm.plugins.registry import Registry

    registry = Registry()
    for name in ("scienceqa", "pope", "mmvet", "llava-bench", "mtbench", "shr"):
        spec = registry.get("benchmark", name)
        impl, config = spec.load(), spec.load_config()
        assert impl.metric_keys and callable(impl.score_files)
        bench = impl(config())
        assert bench.answer_mode in ("generate", "choice") and bench.max_new_tokens > 0
    for name in ("openai", "hf-local"):
        registry.get("judge", name).load_config()


def test_mtbench_answers_judged_through_openai(tmp_path, monkeypatch):
    from mllm_eval.mtbench import MTBench

    (tmp_path / "q.jsonl").write_text(json.dumps({"question_id": 81, "category": "writing", "turns": ["Q1", "Q2"]}))
    (tmp_path / "a.jsonl").write_text(json.dumps({"question_id": 81, "choices": [{"turns": ["A1", "A2"]}]}))
    # the repository's shared real data ($MLLM_SHARED_DATA, else <repo>/../shared/data)
    shared = Path(os.environ.get("MLLM_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"))
    prompts = str(shared / "mt-bench" / "judge_prompts.jsonl")
    if not os.path.isfile(prompts):  # the real FastChat prompts when present, else a stand-in
        prompts_path = tmp_path / "p.jsonl"
        prompts_path.write_text("\n".join(json.dumps(r) for r in [
            {"name": "single-v1", "system_prompt": "s", "prompt_template": "[Question]\n{question}\n{answer}"},
            {"name": "single-v1-multi-turn", "system_prompt": "s",
             "prompt_template": "{question_1}{answer_1}{question_2}{answer_2}"}]))
        prompts = str(prompts_path)

    def reply(prompt, n):
        return "Good. Rating: [[9]]" if "Q2" not in prompt else "no rating given"

    with ChatCompletionsServer(reply) as server:
        monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
        m = MTBench.score_files(answers=str(tmp_path / "a.jsonl"), questions=str(tmp_path / "q.jsonl"),
                                config={"judge_prompts": prompts},
                                judge={"name": "openai", "model": "m", "base_url": server.url,
                                       "api_key_env": "MY_JUDGE_KEY", "max_retries": 0})
        assert len(server.requests) == 2
        assert "A2" in server.requests[1]["messages"][-1]["content"]
    assert m["score"] == 9.0 and m["turn1"] == 9.0 and m["unparsed"] == 1 and "turn2" not in m
