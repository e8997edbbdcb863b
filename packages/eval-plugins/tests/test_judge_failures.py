"""Judges that fail loudly (issue 19, items 6, 11 and 12): a failed request or a reply that is
not a chat completion is one line naming the endpoint, never the key; too many unread
verdicts fail the scoring; verdicts are cached where the eval stage says."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("openai")

from mllm.records import EvalItem  # noqa: E402
from mllm.testing import ChatCompletionsServer  # noqa: E402
from mllm_eval._base import UnreadVerdictsError  # noqa: E402
from mllm_eval.judges import JudgeError, OpenAIJudge, OpenAIJudgeConfig  # noqa: E402
from mllm_eval.llava_bench import LlavaBench, LlavaBenchConfig  # noqa: E402

SECRET = "sk-test-19-judge-never-echo-me"


def judge(server, monkeypatch, **kw):
    monkeypatch.setenv("J19_KEY", SECRET)
    return OpenAIJudge(OpenAIJudgeConfig(**{"model": "j", "base_url": server.url, "api_key_env": "J19_KEY",
                                            "max_retries": 0, **kw}))


def failure(server, monkeypatch, **kw) -> str:
    with pytest.raises(JudgeError) as error:
        judge(server, monkeypatch, **kw).complete("rate it")
    message = str(error.value)
    assert "\n" not in message and SECRET not in message and server.url in message
    return message


@pytest.mark.parametrize("status", [500, 429, 503])
def test_an_http_error_is_retried_a_bounded_number_of_times_then_one_line(status, monkeypatch):
    with ChatCompletionsServer(lambda prompt, n: status) as server:  # its body echoes the key
        message = failure(server, monkeypatch, max_retries=1)
        assert len(server.prompts) == 2  # one retry, then the error
    assert f"HTTP {status} after 1 retries" in message and "***" in message


def test_a_rate_limit_that_clears_is_answered_after_the_retry(monkeypatch):
    with ChatCompletionsServer(lambda prompt, n: 429 if n == 1 else "7") as server:
        assert judge(server, monkeypatch, max_retries=2).complete("rate it") == "7"
        assert len(server.prompts) == 2


def test_a_hanging_endpoint_is_a_timeout_error(monkeypatch):
    def hang(prompt, n):
        time.sleep(1.0)
        return "too late"

    with ChatCompletionsServer(hang) as server:
        started = time.monotonic()
        message = failure(server, monkeypatch, timeout_s=0.2)
        assert time.monotonic() - started < 1.0
    assert "no reply within timeout_s=0.2 after 0 retries" in message


@pytest.mark.parametrize(("body", "said"), [
    (b"<html>502 Bad Gateway</html>", "the reply is not JSON"),
    ({"result": "8 6"}, "the reply is not a chat completion (no choices[0].message.content; its keys: result)"),
    ({"choices": [{"text": "8 6"}]}, "the reply is not a chat completion"),
])
def test_a_reply_that_is_not_a_chat_completion_is_one_line(body, said, monkeypatch):
    with ChatCompletionsServer(lambda prompt, n: body) as server:
        assert said in failure(server, monkeypatch)


def llava(tmp_path, server, **keys):
    rule = {"default": {"role": "Assistant", "prompt": "rate"}}
    (tmp_path / "rule.json").write_text(json.dumps(rule))
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps({"question_id": i, "text": f"ref{i}"}) + "\n"
                                                 for i in range(6)))
    config = LlavaBenchConfig(references=str(tmp_path / "refs.jsonl"), rule=str(tmp_path / "rule.json"),
                              judge={"name": "openai", "model": "j", "base_url": server.url,
                                     "api_key_env": "J19_KEY", "max_retries": 0}, **keys)
    items = [EvalItem(id=str(i), prompt="<image>\nq", images=("x.jpg",), check_files=False,
                      metadata={"question": "q", "image": "x.jpg", "category": "conv"}) for i in range(6)]
    return LlavaBench(config), items, {str(i): f"model answer {i}" for i in range(6)}


def test_a_judge_whose_every_verdict_is_unreadable_fails_the_scoring(tmp_path, monkeypatch):
    monkeypatch.setenv("J19_KEY", SECRET)
    with ChatCompletionsServer(lambda prompt, n: "I cannot decide.") as server:
        bench, items, answers = llava(tmp_path, server)
        with pytest.raises(UnreadVerdictsError, match=r"llava-bench: 6 of 6 judge verdicts could not be read, "
                                                      r"more than max_unparsed_fraction 0.5"):
            bench.score(items, answers)
        # the limit is the user's: none reports the figures as before
        bench, items, answers = llava(tmp_path, server, max_unparsed_fraction=None)
        assert bench.score(items, answers)["unparsed"] == 6


def test_eval_verdicts_are_cached_so_a_rerun_asks_only_the_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("J19_KEY", SECRET)
    fail_at = {"n": 4}

    def reply(prompt, n):
        return 500 if n == fail_at["n"] else "8 6\nfine"

    with ChatCompletionsServer(reply) as server:
        bench, items, answers = llava(tmp_path, server)
        bench.cache_judge_verdicts(tmp_path / "sft" / "llava-bench" / "judge_cache.jsonl")
        with pytest.raises(JudgeError):  # stopped after 3 of 6 verdicts
            bench.score(items, answers)
        fail_at["n"] = None
        del server.prompts[:]
        bench, items, answers = llava(tmp_path, server)  # the re-run: a new benchmark, the same folder
        bench.cache_judge_verdicts(tmp_path / "sft" / "llava-bench" / "judge_cache.jsonl")
        metrics = bench.score(items, answers)
        assert len(server.prompts) == 3 and all("model answer" in p for p in server.prompts)
        assert metrics["unparsed"] == 0 and metrics["n"] == 6
    cached = (tmp_path / "sft" / "llava-bench" / "judge_cache.jsonl").read_text().splitlines()
    assert len(cached) == 6 and SECRET not in "".join(cached)


class Scripted:
    """A judge object answering every prompt with one reply."""

    def __init__(self, reply: str) -> None:
        self.reply, self.calls = reply, 0

    def complete(self, prompt: str, *, system: str | None = None) -> str:
        self.calls += 1
        return self.reply


def test_mmvet_fails_when_most_grades_are_the_graders_fallback(tmp_path):
    from mllm_eval.mmvet import MMVet, MMVetConfig

    (tmp_path / "mm-vet.json").write_text(json.dumps({f"v1_{i}": {"capability": ["rec"], "answer": "a"}
                                                      for i in range(2)}))
    items = [EvalItem(id=f"v1_{i}", prompt="q", metadata={"question": "q"}) for i in range(2)]
    answers = {item.id: "a" for item in items}
    bench = MMVet(MMVetConfig(annotations=str(tmp_path / "mm-vet.json")), judge=Scripted("no idea"))
    with pytest.raises(UnreadVerdictsError, match="mmvet: 2 of 2 grades could not be read"):
        bench.score(items, answers)
    assert MMVet(MMVetConfig(annotations=str(tmp_path / "mm-vet.json")), judge=Scripted("0.5")) \
        .score(items, answers)["total"] == 50.0


def test_mtbench_fails_when_most_ratings_are_unreadable():
    from mllm_eval.mtbench import MTBench, MTBenchConfig

    bench = MTBench(MTBenchConfig(), judge=Scripted("fine answer"))
    bench._prompts = lambda: {"single-v1": {"system_prompt": "s", "prompt_template": "{question}{answer}"}}
    items = [EvalItem(id=str(i), prompt=f"Q{i}", metadata={"category": "writing"}) for i in range(3)]
    with pytest.raises(UnreadVerdictsError, match="mtbench: 3 of 3 ratings could not be read"):
        bench.score(items, {str(i): "A" for i in range(3)})
