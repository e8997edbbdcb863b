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
    assert [round(m[k], 1) for k in ("overall", "complex", "conv", "detail")] == [72.8, 82.8, 74.7, 52.7]


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
