"""An eval stage's judge (issue 19, items 6, 11 and 12), run for real with ``mllm run`` on a
tiny LLaVA against a local chat-completions server: a failing endpoint ends the stage with
one line (exit 2, not COMPLETE, no key), the re-run asks only the verdicts it lacks, and a
judge whose every verdict is unreadable fails the stage instead of marking it COMPLETE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("openai")
pytest.importorskip("mllm_eval")

from click.testing import CliRunner  # noqa: E402
from mllm.cli.main import main  # noqa: E402
from mllm.testing import ChatCompletionsServer  # noqa: E402
from PIL import Image  # noqa: E402

SENTINEL = "sk-SENTINEL-19-eval-judge"
TINY_MODEL = dict(name="llava", init="tiny", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
                  vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
                  heads=2, vocab_size=300)
N = 6


def write_benchmark(folder: Path) -> dict:
    """LLaVA-Bench files of ``N`` questions on one blank image; the benchmark's keys."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "white").save(folder / "blank.png")
    (folder / "q.jsonl").write_text("".join(json.dumps({"question_id": i, "image": "blank.png", "text": f"What is {i}?",
                                                        "category": "conv"}) + "\n" for i in range(N)))
    (folder / "refs.jsonl").write_text("".join(json.dumps({"question_id": i, "text": f"ref {i}"}) + "\n"
                                               for i in range(N)))
    (folder / "rule.json").write_text(json.dumps({"default": {"role": "Assistant", "prompt": "rate"}}))
    return {"name": "llava-bench", "questions": str(folder / "q.jsonl"), "references": str(folder / "refs.jsonl"),
            "rule": str(folder / "rule.json"), "image_folder": str(folder)}


def run(tmp_path: Path, server: ChatCompletionsServer, name: str) -> tuple[int, str]:
    bench = write_benchmark(tmp_path / "bench")
    bench["judge"] = {"name": "openai", "model": "j", "base_url": server.url, "api_key_env": "J19_EVAL_KEY",
                      "max_retries": 0}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "model": dict(TINY_MODEL), "stages": [
        {"id": "eval", "kind": "eval", "models": ["init"], "benchmarks": [bench], "max_new_tokens": 2}]}))
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    return result.exit_code, result.output


def test_a_failing_judge_ends_the_stage_in_one_line_and_the_rerun_asks_only_the_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("J19_EVAL_KEY", SENTINEL)
    fail_at = {"n": 4}
    with ChatCompletionsServer(lambda prompt, n: 500 if n == fail_at["n"] else "8 6\nfine") as server:
        code, output = run(tmp_path, server, "judged")
        stage = tmp_path / "runs" / "judged" / "eval"
        assert code == 2 and not (stage / "COMPLETE").exists()
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"{server.url}: HTTP 500 after 0 retries" in errors[0]
        assert "Traceback" not in output and SENTINEL not in output
        assert len(server.prompts) == 4
        # the re-run: the 3 cached verdicts are not asked again
        fail_at["n"] = None
        del server.prompts[:]
        code, output = run(tmp_path, server, "judged")
        assert code == 0, output
        assert len(server.prompts) == 3
    assert (stage / "COMPLETE").exists()
    cache = stage / "init" / "llava-bench" / "judge_cache.jsonl"
    assert len(cache.read_text().splitlines()) == N
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["init"]["llava-bench"]["n"] == N and metrics["init"]["llava-bench"]["unparsed"] == 0
    assert SENTINEL.encode() not in b"".join(p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file())


def test_a_judge_whose_every_verdict_is_unreadable_fails_the_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("J19_EVAL_KEY", SENTINEL)
    with ChatCompletionsServer(lambda prompt, n: "I cannot decide.") as server:
        code, output = run(tmp_path, server, "unread")
    assert code == 2 and not (tmp_path / "runs" / "unread" / "eval" / "COMPLETE").exists()
    assert f"llava-bench: {N} of {N} judge verdicts could not be read, more than max_unparsed_fraction 0.5" in output
