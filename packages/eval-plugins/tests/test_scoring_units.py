"""Parsing and scoring rules of each benchmark, on small hand-made inputs."""

from __future__ import annotations

import json

import pytest
from mllm_eval._io import ScoreInputError
from mllm_eval.llava_bench import LlavaBench
from mllm_eval.mmvet import MMVet
from mllm_eval.mtbench import MTBench
from mllm_eval.pope_metrics import normalize_yes_no, pope_metrics
from mllm_eval.scienceqa import ScienceQA
from mllm_eval.scoring import llava_bench, mtbench, pope, scienceqa
from mllm_eval.shr import SHR


@pytest.mark.parametrize("text,expected", [
    ("Yes", "yes"), ("No", "no"), ("no", "no"), ("Yes, there is a dog.", "yes"),
    ("No, there is no dog.", "no"), ("There is not a dog in the image", "no"),
    ("There is a dog. It is not a cat.", "yes"),   # only the first sentence counts
    ("Nope", "yes"), ("NO", "yes"),                # exact words only, as POPE
    ("no, no", "no"),
])
def test_normalize_yes_no_follows_pope(text, expected):
    assert normalize_yes_no(text) == expected


def test_pope_metrics_counts():
    m = pope_metrics(["yes", "yes", "no", "no", "yes"], ["yes", "no", "no", "yes", "yes"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["yes_ratio"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        pope_metrics(["maybe"], ["yes"])


def test_pope_matching_ignores_position_and_ids():
    labels = {("random", "a.jpg", "Is there a cat in the image?"): "yes",
              ("random", "a.jpg", "Is there a dog in the image?"): "no"}
    answers = {pope.question_key("random", "a.jpg", "Is there a dog in the image?\nAnswer the question using a single word or phrase."): "No",
               pope.question_key("random", "a.jpg", "Is there a cat in the image?"): "Yes"}
    pope.check_labels(answers.keys(), labels)
    assert pope.score_splits(answers, labels)["random/accuracy"] == 1.0
    with pytest.raises(pope.LabelMismatchError, match="1 mismatch"):
        pope.check_labels([("random", "a.jpg", "Is there a cat in the image?")],
                          {("random", "a.jpg", "Is there a cat in the image?"): "yes",
                           ("random", "b.jpg", "Is there a cat in the image?"): "no"})


def test_scienceqa_categories_and_failed_count(tmp_path):
    questions = [
        {"id": "1", "image": "1/image.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich is hot?\nA. sun\nB. ice"}, {"from": "gpt", "value": "A"}]},
        {"id": "2", "conversations": [
            {"from": "human", "value": "Context: a poem\nWhich figure?\nA. x\nB. y\nC. z"}, {"from": "gpt", "value": "C"}]},
        {"id": "3", "conversations": [
            {"from": "human", "value": "Pick one.\nA. x\nB. y"}, {"from": "gpt", "value": "B"}]},
    ]
    problems = {"1": {"subject": "natural science", "hint": "", "image": "image.png", "grade": "grade3"},
                "2": {"subject": "language science", "hint": "a poem", "image": None, "grade": "grade8"},
                "3": {"subject": "social science", "hint": "", "image": None, "grade": "grade2"}}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "p.json").write_text(json.dumps(problems))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"question_id": "1", "text": "A"}, {"question_id": "2", "text": "It is C"}]))  # 3 missing
    m = ScienceQA.score_files(answers=str(tmp_path / "a.jsonl"), questions=str(tmp_path / "q.json"),
                              problems=str(tmp_path / "p.json"))
    assert m["accuracy"] == pytest.approx(100 / 3) and m["img_accuracy"] == 100.0
    assert m["failed"] == 2
    assert m["acc_NAT"] == 100.0 and m["acc_LAN"] == 0.0 and m["acc_SOC"] == 0.0
    assert m["acc_TXT"] == 0.0 and m["acc_IMG"] == 100.0 and m["acc_NO"] == 0.0
    assert m["acc_G1-6"] == 50.0 and m["acc_G7-12"] == 0.0
    item = ScienceQA.build_items(questions, None, check_files=False)[1]
    assert item.prompt.endswith("\n" + scienceqa.SINGLE_PRED_PROMPT) and item.choices == ("A", "B", "C")


def test_llava_bench_unparsed_review_counts_as_minus_one(tmp_path):
    rows = [{"content": "8 10\nfine", "category": "llava_bench_conv"},
            {"content": "7,7\nok", "category": "llava_bench_detail"},
            {"content": "Assistant 1 is better", "category": "llava_bench_conv"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    m = LlavaBench.score_files(reviews=str(tmp_path / "r.jsonl"))
    assert m["unparsed"] == 1 and m["n"] == 3
    # conv: (8 - 1) / 2 = 3.5 and (10 - 1) / 2 = 4.5 -> 128.6; detail 100.0
    assert m["conv"] == round(4.5 / 3.5 * 100, 1) and m["detail"] == 100.0
    assert m["overall"] == round(5.333 / 4.667 * 100, 1)
    assert llava_bench.parse_review_scores("8 10 9") is None


def test_mmvet_capabilities_and_unparsed(tmp_path):
    grades = {"v1_0": {"score": [1.0]}, "v1_1": {"score": [0.5]}, "v1_2": {"score": [0.0]}, "v1_3": {"score": ["?"]}}
    caps = {"v1_0": {"capability": ["rec", "ocr"]}, "v1_1": {"capability": ["ocr"]},
            "v1_2": {"capability": ["rec"]}, "v1_3": {"capability": ["rec"]}}
    (tmp_path / "g.json").write_text(json.dumps(grades))
    (tmp_path / "c.json").write_text(json.dumps(caps))
    m = MMVet.score_files(grades=str(tmp_path / "g.json"), capabilities=str(tmp_path / "c.json"))
    # an unreadable grade scores 0.0, as the grader's own rule gives it
    assert m["total"] == 37.5 and m["unparsed"] == 1
    assert m["cap/ocr"] == 75.0 and m["cap/rec"] == pytest.approx(33.3)
    assert m["cap_int/rec_ocr"] == 100.0


def test_mtbench_rating_parse_and_grades_file(tmp_path):
    assert mtbench.parse_rating("... Rating: [[7]]") == 7.0
    assert mtbench.parse_rating("score [8.5]") == 8.5
    assert mtbench.parse_rating("I would give it seven") is None
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 81, "category": "writing", "turns": ["a", "b"]},
        {"question_id": 111, "category": "math", "turns": ["c", "d"]}]))
    (tmp_path / "g.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 81, "turn": 1, "score": 8, "judgment": "[[8]]"},
        {"question_id": 81, "turn": 2, "score": -1, "judgment": "no rating"},
        {"question_id": 111, "turn": 1, "judgment": "Rating: [[4]]"}]))
    m = MTBench.score_files(grades=str(tmp_path / "g.jsonl"), questions=str(tmp_path / "q.jsonl"))
    assert m["score"] == 6.0 and m["turn1"] == 6.0 and m["unparsed"] == 1
    assert m["writing"] == 8.0 and m["math"] == 4.0


SHR_FIXTURE = [
    {"image_id": 2339, "image": "2339.jpg", "width": 200, "height": 100, "factual": ["The man holds a red umbrella."],
     "regions": [{"x": 10, "y": 20, "w": 100, "h": 50, "phrase": "a man walking"}]},
]


def test_benchmark_items_need_image_folder(tmp_path):
    (tmp_path / "shr.jsonl").write_text(json.dumps(SHR_FIXTURE[0]))
    from mllm_eval.shr import SHRConfig

    with pytest.raises(ScoreInputError, match="image_folder"):
        SHR(SHRConfig(questions=str(tmp_path / "shr.jsonl"))).items()
    (tmp_path / "2339.jpg").write_bytes(b"\xff\xd8")
    items = SHR(SHRConfig(questions=str(tmp_path / "shr.jsonl"), image_folder=str(tmp_path))).items()
    assert items[0].images == (str(tmp_path / "2339.jpg"),) and items[0].prompt.startswith("<image>\n")


def test_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    with pytest.raises(ScoreInputError, match="bad.jsonl.*line 1"):
        LlavaBench.score_files(reviews=str(bad))
    with pytest.raises(ScoreInputError, match="does not exist"):
        MMVet.score_files(grades=str(tmp_path / "missing.json"))
