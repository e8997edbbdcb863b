"""Score-only runs on LLaVA-1.5-13B's released files reproduce its published figures.

The data is read in place from $MLLM_SHARED_DATA (default: <repo>/../shared/data).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mllm_eval._io import ScoreInputError
from mllm_eval.llava_bench import LlavaBench
from mllm_eval.mmvet import MMVet
from mllm_eval.pope import POPE
from mllm_eval.scienceqa import ScienceQA

REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("MLLM_SHARED_DATA", REPO.parent / "shared" / "data"))
REF = DATA / "reference" / "llava-v1.5-13b"

pytestmark = pytest.mark.skipif(
    not REF.is_dir(), reason=f"shared real data not found at {DATA} (set MLLM_SHARED_DATA to the shared/data folder)"
)


def pope(labels: str) -> dict[str, float]:
    return POPE.score_files(answers=str(REF / "pope" / "answers_llava-v1.5-13b.jsonl"),
                            questions=str(REF / "pope" / "llava_pope_test.jsonl"),
                            labels=str(DATA / "pope-coco" / labels))


def test_pope_f1_matches_paper_with_pinned_labels():
    m = pope("e3e3926")
    assert round(m["random/f1"] * 100, 1) == 87.1
    assert round(m["popular/f1"] * 100, 1) == 86.2
    assert round(m["adversarial/f1"] * 100, 1) == 84.5
    assert m["random/n"] == 2910 and m["popular/n"] == 3000 and m["adversarial/n"] == 3000
    for split in ("random", "popular", "adversarial"):
        assert 0.0 < m[f"{split}/yes_ratio"] < 1.0
        assert m[f"{split}/accuracy"] > 0.8


def test_pope_later_relabelled_release_is_refused_with_counts():
    with pytest.raises(ScoreInputError) as info:
        pope("edebdda")
    message = str(info.value)
    assert "582 mismatch" in message
    assert "random: 144 question(s) without a label, 234 label(s) without a question" in message
    assert "popular: 44" in message and "adversarial: 58" in message
    assert "no label for: COCO_val2014_" in message


def test_scienceqa_accuracy_and_img_accuracy_match_llava():
    m = ScienceQA.score_files(answers=str(REF / "scienceqa" / "llava-v1.5-13b_output.jsonl"),
                              questions=str(REF / "scienceqa" / "llava_test_CQM-A.json"))
    assert m["count"] == 4241 and m["img_count"] == 2017
    assert round(m["accuracy"], 2) == 74.39
    assert round(m["img_accuracy"], 2) == 71.64
    # LLaVA's own scoring output of the same answers
    import json

    result = json.loads((REF / "scienceqa" / "llava-v1.5-13b_result.json").read_text())
    assert m["correct"] == result["correct"]


def test_mmvet_total_from_released_grades():
    m = MMVet.score_files(grades=str(REF / "mm-vet" / "llava-v1.5-13b_gpt-4-grade-1runs.json"))
    assert round(m["total"], 1) == 36.1
    assert m["n"] == 218 and m["unparsed"] == 0


def test_llava_bench_relative_scores_from_released_review():
    m = LlavaBench.score_files(reviews=str(REF / "llava-bench-in-the-wild" / "reviews_llava-v1.5-13b-eval1.jsonl"))
    assert round(m["overall"], 1) == 72.8
    assert round(m["complex"], 1) == 82.8
    assert round(m["conv"], 1) == 74.7
    assert m["detail"] == 52.6  # summarize_gpt_review.py rounds both means to 3 decimals first
    assert m["n"] == 60 and m["unparsed"] == 0
