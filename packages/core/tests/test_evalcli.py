"""`mllm eval score`: tables, JSON, and input errors with exit code 2 and no traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("mllm_eval")

from mllm.cli.main import main  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("MLLM_SHARED_DATA", REPO.parent / "shared" / "data"))
REF = DATA / "reference" / "llava-v1.5-13b"
needs_data = pytest.mark.skipif(not REF.is_dir(), reason=f"shared real data not found at {DATA} (set MLLM_SHARED_DATA)")


def run(*args):
    return CliRunner().invoke(main, ["eval", "score", *args])


@needs_data
def test_pope_json_reproduces_paper():
    result = run("pope", "--answers", str(REF / "pope/answers_llava-v1.5-13b.jsonl"),
                 "--questions", str(REF / "pope/llava_pope_test.jsonl"),
                 "--labels", str(DATA / "pope-coco/e3e3926"), "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert [round(metrics[f"{s}/f1"] * 100, 1) for s in ("random", "popular", "adversarial")] == [87.1, 86.2, 84.5]


@needs_data
def test_pope_refuses_later_labels():
    result = run("pope", "--answers", str(REF / "pope/answers_llava-v1.5-13b.jsonl"),
                 "--questions", str(REF / "pope/llava_pope_test.jsonl"), "--labels", str(DATA / "pope-coco/edebdda"))
    assert result.exit_code == 2
    assert "582 mismatch" in result.output and "Traceback" not in result.output


@needs_data
def test_scienceqa_table():
    result = run("scienceqa", "--answers", str(REF / "scienceqa/llava-v1.5-13b_output.jsonl"),
                 "--questions", str(REF / "scienceqa/llava_test_CQM-A.json"))
    assert result.exit_code == 0, result.output
    assert "scienceqa" in result.output and "74.3928" in result.output and "71.6411" in result.output


@needs_data
def test_mmvet_and_llava_bench_json():
    mm = run("mmvet", "--grades", str(REF / "mm-vet/llava-v1.5-13b_gpt-4-grade-1runs.json"), "--json")
    assert mm.exit_code == 0 and round(json.loads(mm.output)["metrics"]["total"], 1) == 36.1
    lb = run("llava-bench", "--reviews", str(REF / "llava-bench-in-the-wild/reviews_llava-v1.5-13b-eval1.jsonl"), "--json")
    m = json.loads(lb.output)["metrics"]
    assert [round(m[k], 1) for k in ("overall", "complex", "conv", "detail")] == [72.8, 82.8, 74.7, 52.6]


def test_errors_name_the_file_and_exit_2(tmp_path):
    missing = run("mmvet", "--grades", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2 and "nope.json" in missing.output and "Traceback" not in missing.output
    bad = tmp_path / "grades.json"
    bad.write_text("[1, 2]")
    wrong = run("mmvet", "--grades", str(bad))
    assert wrong.exit_code == 2 and "grades.json" in wrong.output and "v1_<id>" in wrong.output
    other = run("pope", "--reviews", str(bad))
    assert other.exit_code == 2 and "does not take --reviews" in other.output
    unknown = run("popee")
    assert unknown.exit_code == 2 and "did you mean 'pope'" in unknown.output
    missing_opt = run("llava-bench")
    assert missing_opt.exit_code == 2 and "--reviews is required" in missing_opt.output


def test_help_lists_the_file_options_a_benchmark_declares():
    result = run("pope", "--help")
    assert result.exit_code == 0, result.output
    assert "Score-only file options it declares:" in result.output
    for option in ("--answers", "--questions", "--labels"):
        assert option in result.output.split("declares:")[1]
    assert "--reviews" not in result.output.split("declares:")[1]
    assert "Protocols (--protocol): llava, lmms-eval (default llava)" in result.output
    general = run("--help")
    assert general.exit_code == 0 and "--run" in general.output


def test_missing_and_unknown_options_are_one_line_errors(tmp_path):
    missing = run("scienceqa", "--questions", str(tmp_path / "q.json"))
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert len(missing.output.strip().splitlines()) == 1 and "--answers" in missing.output
    other = run("mmvet", "--frobnicate", "x.json")
    assert other.exit_code == 2 and "does not take --frobnicate" in other.output and "--grades" in other.output
    bad = run("pope", "--protocol", "vqa")
    assert bad.exit_code == 2 and "no protocol 'vqa'" in bad.output and "lmms-eval" in bad.output


@needs_data
def test_protocol_is_recorded_beside_the_metrics():
    lb = run("llava-bench", "--reviews", str(REF / "llava-bench-in-the-wild/reviews_llava-v1.5-13b-eval1.jsonl"), "--json")
    out = json.loads(lb.output)
    assert out["protocol"] == "llava" and out["metrics"]["detail"] == 52.6
    assert all(isinstance(v, float) for v in out["metrics"].values())
    pope = run("pope", "--answers", str(REF / "pope/answers_llava-v1.5-13b.jsonl"),
               "--questions", str(REF / "pope/llava_pope_test.jsonl"),
               "--labels", str(DATA / "pope-coco/e3e3926"), "--protocol", "lmms-eval", "--json")
    out = json.loads(pope.output)
    assert out["protocol"] == "lmms-eval" and round(out["metrics"]["random/yes_ratio"], 4) == 0.5155


def test_rescore_a_finished_eval_stage_from_its_answers(tmp_path):
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins.registry import Registry
    from mllm.testing import TINY_LLAVA

    registry = Registry()
    data = {"name": "rescore", "model": {"name": "llava", **TINY_LLAVA},
            "stages": [{"id": "eval", "kind": "eval", "batch_size": 8,
                        "benchmarks": [{"name": "easyvqa", "limit": 6, "answer_mode": "choice"}]}]}
    PipelineRunner(load_pipeline(None, registry, data=data), registry, runs_dir=tmp_path).run()
    stage = tmp_path / "rescore" / "eval"
    recorded = json.loads((stage / "metrics.json").read_text())["init"]["easyvqa"]
    result = run("easyvqa", "--run", str(stage), "--json")
    assert result.exit_code == 0, result.output
    rescored = json.loads(result.output)
    assert rescored["model"] == "init" and rescored["metrics"] == recorded
    # the metrics come from answers.jsonl: change one answer and the accuracy moves
    answers = stage / "init" / "easyvqa" / "answers.jsonl"
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    right = next((r for r in rows if r["answer"] == r["gold"]), None)
    if right is None:  # an untrained model may get none right: make one right instead
        rows[0]["answer"] = rows[0]["gold"]
        step = 1
    else:
        right["answer"] = "certainly not " + str(right["gold"])
        step = -1
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    moved = json.loads(run("easyvqa", "--run", str(stage), "--json").output)["metrics"]
    assert moved["accuracy"] == pytest.approx(recorded["accuracy"] + step / 6)
    wrong = run("pope", "--run", str(stage))
    assert wrong.exit_code == 2 and "did not evaluate 'pope'" in wrong.output and "easyvqa" in wrong.output
