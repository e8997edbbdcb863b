"""Each scorer against fixtures in the exact upstream shapes, per protocol, edge cases included.

Expected figures are the upstream scripts' outputs on these fixtures, worked out by
following their code line by line (named per test); the scripts themselves are not run here.
"""

from __future__ import annotations

import json

import pytest
from mllm.testing import ScriptedJudge
from mllm_eval._io import ScoreInputError
from mllm_eval.llava_bench import LlavaBench
from mllm_eval.mmvet import MMVet, grader_prompt
from mllm_eval.pope import POPE
from mllm_eval.scienceqa import ScienceQA
from mllm_eval.scoring import llava_bench, mmvet, scienceqa, shr
from mllm_eval.shr import SHR, SHRConfig


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# -- LLaVA-Bench: summarize_gpt_review.py ------------------------------------------------


def test_llava_bench_rounds_means_before_dividing_and_scores_unparsed_as_minus_one(tmp_path):
    # LLaVA's review rows: content (judge text), tuple (parse_score's pair), category
    rows = [
        {"question_id": 0, "category": "llava_bench_detail", "content": "8 5\nok", "tuple": [8.0, 5.0]},
        {"question_id": 1, "category": "llava_bench_detail", "content": "9 4\nok", "tuple": [9.0, 4.0]},
        {"question_id": 2, "category": "llava_bench_detail", "content": "9 6\nok", "tuple": [9.0, 6.0]},
        {"question_id": 3, "category": "llava_bench_conv", "content": "Assistant 2 wins", "tuple": [-1, -1]},
        {"question_id": 4, "category": "llava_bench_conv", "content": "8 8\nfine"},  # no tuple: content parsed
    ]
    m = LlavaBench.score_files(reviews=write_jsonl(tmp_path / "r.jsonl", rows))
    # detail: means 8.667 and 5.0 (rounded to 3 decimals) -> round(5.0 / 8.667 * 100, 1)
    assert m["detail/reference_mean"] == 8.667 and m["detail/model_mean"] == 5.0
    assert m["detail"] == round(5.0 / 8.667 * 100, 1) == 57.7
    # conv: [-1, -1] counts: means (−1 + 8) / 2 = 3.5 both -> 100.0
    assert m["conv"] == 100.0 and m["unparsed"] == 1 and m["n"] == 5
    # all: reference (8+9+9-1+8)/5 = 6.6, model (5+4+6-1+8)/5 = 4.4
    assert m["overall"] == round(4.4 / 6.6 * 100, 1) == 66.7


@pytest.mark.parametrize("content,pair", [
    ("8 10\nbecause", (8.0, 10.0)), ("8,10\n", (8.0, 10.0)), ("7, 9", None),  # ", " -> two spaces -> 3 parts
    ("\n8 10", None), ("8  10", None), ("8 10 9", None), ("eight ten", None), ("8.5 9", (8.5, 9.0)),
])
def test_llava_bench_parse_score_splits_first_line_on_single_spaces(content, pair):
    assert llava_bench.parse_review_scores(content) == pair


def test_llava_bench_shared_review_gives_llava_figures(llava15_reference):
    m = LlavaBench.score_files(reviews=str(llava15_reference / "llava-bench-in-the-wild" /
                                           "reviews_llava-v1.5-13b-eval1.jsonl"))
    assert (m["overall"], m["complex"], m["conv"], m["detail"]) == (72.8, 82.8, 74.7, 52.6)


# -- ScienceQA: LLaVA's eval_science_qa.py and lmms-eval ---------------------------------


@pytest.mark.parametrize("pred,letter", [
    ("B", "B"), ("A. apostrophe", "A"), ("The answer is D.", "D"), ("Because X. The answer is C, sure", "C"),
    (" C ", None), ("C\n", None),                           # not stripped
    ("A\nBecause", None),                                   # newlines kept (not turned into ". ")
    ("Because ... The answer is E", None),                  # nothing after the letter
    ("The answer is A. The answer is B.", None),            # several answers -> FAILED
    ("The answer is A. No, the answer is B.", "A"),         # case-sensitive: one answer
    ("B.", None), ("b", None), ("The answer is F.", "F"),   # F parses, then is out of range
])
def test_scienceqa_llava_parse(pred, letter):
    assert scienceqa.parse_answer(pred) == letter


@pytest.mark.parametrize("pred,letter", [
    ("B", "B"), ("B.", "B"), ("B. because", "B"), ("Bx", None), (" B", None), ("The answer is B.", None),
    ("b.", None), ("Z.", "Z"),
])
def test_scienceqa_lmms_eval_parse(pred, letter):
    assert scienceqa.lmms_eval_letter(pred) == letter


SQA_QUESTIONS = [
    {"id": "1", "image": "1/image.png", "conversations": [
        {"from": "human", "value": "<image>\nWhich is hot?\nA. sun\nB. ice"}, {"from": "gpt", "value": "A"}]},
    {"id": "2", "image": "2/image.png", "conversations": [
        {"from": "human", "value": "<image>\nWhich is cold?\nA. sun\nB. ice"}, {"from": "gpt", "value": "B"}]},
    {"id": "3", "conversations": [{"from": "human", "value": "Pick one.\nA. x\nB. y\nC. z"}, {"from": "gpt", "value": "C"}]},
    {"id": "4", "conversations": [{"from": "human", "value": "Pick.\nA. x\nB. y"}, {"from": "gpt", "value": "B"}]},
    {"id": "5", "image": "5/image.png", "conversations": [
        {"from": "human", "value": "<image>\nPick.\nA. x\nB. y"}, {"from": "gpt", "value": "A"}]},
]


def test_scienceqa_protocols_on_llava_result_file(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps(SQA_QUESTIONS))
    # LLaVA's scored output shape: {correct: [...], incorrect: [...]} with question_id and pred
    output = {"correct": [{"question_id": "1", "pred": "A"}],
              "incorrect": [{"question_id": "2", "pred": "B.\nIt is ice"},
                            {"question_id": "3", "pred": "The answer is C. The answer is B."},
                            {"question_id": "4", "pred": "The answer is B"}]}  # 5 has no answer
    (tmp_path / "a.json").write_text(json.dumps(output))
    args = {"answers": str(tmp_path / "a.json"), "questions": str(tmp_path / "q.json")}
    llava = ScienceQA.score_files(**args)
    # llava: 1 right; 2 ("B.\n...") FAILED; 3 two answers FAILED; 4 nothing after B FAILED; 5 missing FAILED
    assert llava["correct"] == 1 and llava["failed"] == 4 and llava["accuracy"] == 20.0
    # a missing answer is no image question there (its prompt is "Unknown"): IMG = 1 of 2
    assert llava["img_count"] == 2 and llava["img_accuracy"] == 50.0
    lmms = ScienceQA.score_files(**args, config={"protocol": "lmms-eval"})
    # lmms-eval: 1 right, 2 "B." right; 3, 4 wrong; 5 missing wrong; IMG = questions with an image
    assert lmms["correct"] == 2 and lmms["img_count"] == 3 and lmms["img_accuracy"] == pytest.approx(200 / 3)


def test_scienceqa_shared_totals_unchanged_under_llava_protocol(llava15_reference):
    m = ScienceQA.score_files(answers=str(llava15_reference / "scienceqa" / "llava-v1.5-13b_output.jsonl"),
                              questions=str(llava15_reference / "scienceqa" / "llava_test_CQM-A.json"))
    result = json.loads((llava15_reference / "scienceqa" / "llava-v1.5-13b_result.json").read_text())
    assert m["correct"] == result["correct"] and m["count"] == result["count"]
    assert round(m["img_accuracy"], 2) == 71.64


# -- POPE: LLaVA (eval_pope.py) and lmms-eval ----------------------------------------------


def test_pope_lmms_eval_exact_match_and_label_yes_ratio(tmp_path):
    questions = [{"question_id": i, "image": f"{i}.jpg", "text": f"Is there a {o} in the image?", "category": "random"}
                 for i, o in enumerate(["dog", "cat", "car", "cup"])]
    labels = [{"question_id": q["question_id"], "image": q["image"], "text": q["text"], "label": lab}
              for q, lab in zip(questions, ["yes", "yes", "no", "yes"])]
    (tmp_path / "labels").mkdir()
    write_jsonl(tmp_path / "labels" / "coco_pope_random.json", labels)
    answers = [{"question_id": 0, "text": "Yes"}, {"question_id": 1, "text": "Yes, there is a cat."},
               {"question_id": 2, "text": " no "}, {"question_id": 3, "text": "No"}]
    args = {"answers": write_jsonl(tmp_path / "a.jsonl", answers), "questions": write_jsonl(tmp_path / "q.jsonl", questions),
            "labels": str(tmp_path / "labels"), "config": {"splits": ["random"]}}
    llava = POPE.score_files(**args)
    # POPE's rule: "Yes, there is a cat." is yes; yes-ratio = share of yes answers (2 of 4)
    assert llava["random/accuracy"] == 0.75 and llava["random/yes_ratio"] == 0.5
    lmms = POPE.score_files(**{**args, "config": {"splits": ["random"], "protocol": "lmms-eval"}})
    # lmms-eval: only exact yes/no; "yes, there is a cat." matches nothing (neither TP nor FN)
    assert lmms["random/accuracy"] == 0.5
    assert lmms["random/precision"] == 1.0 and lmms["random/recall"] == 0.5  # TP 1, FN 1 (q3)
    assert lmms["random/yes_ratio"] == 0.75  # 3 of 4 labels are yes
    assert lmms["random/f1"] == pytest.approx(2 / 3)


# -- MM-Vet: the official grader --------------------------------------------------------


def test_mmvet_groups_capability_sets_and_scores_bad_grades_zero(tmp_path):
    grades = {"v1_0": {"score": [1.0]}, "v1_1": {"score": [0.5]}, "v1_2": {"score": [0.0]},
              "v1_3": {"score": [1.5]}}  # out of range: the grader would have written 0.0
    caps = {"v1_0": {"capability": ["rec", "ocr"]}, "v1_1": {"capability": ["ocr", "rec"]},
            "v1_2": {"capability": ["rec"]}, "v1_3": {"capability": ["rec"]}}
    (tmp_path / "g.json").write_text(json.dumps(grades))
    (tmp_path / "c.json").write_text(json.dumps(caps))
    m = MMVet.score_files(grades=str(tmp_path / "g.json"), capabilities=str(tmp_path / "c.json"))
    assert m["total"] == 37.5 and m["unparsed"] == 1
    # one group for {rec, ocr} listed in two orders, named in the grader's column order (rec most frequent)
    assert m["cap_int/rec_ocr"] == 75.0 and "cap_int/ocr_rec" not in m
    assert m["cap_int/rec"] == 0.0 and m["cap/ocr"] == 75.0 and m["cap/rec"] == 37.5


def test_mmvet_rounds_to_one_decimal_and_std_over_runs(tmp_path):
    grades = {"v1_0": {"score": [1.0, 0.0]}, "v1_1": {"score": [0.0, 0.0]}, "v1_2": {"score": [0.0, 0.0]}}
    (tmp_path / "g.json").write_text(json.dumps(grades))
    m = MMVet.score_files(grades=str(tmp_path / "g.json"))
    # run totals 33.33 and 0.0 -> mean 16.67 -> 16.7; population std 16.67 -> 16.7
    assert m["total"] == 16.7 and m["std"] == 16.7 and m["runs"] == 2


def test_mmvet_grading_retries_then_zero():
    judge = ScriptedJudge(["1.5", "maybe", "0.7 because"])
    assert mmvet.grade_with_retries(judge.complete, "P") == (0.7, 3)
    assert judge.prompts[0][0] == "P" and judge.prompts[1][0] == "P" + mmvet.RETRY_SUFFIX
    never = ScriptedJudge("great answer")
    assert mmvet.grade_with_retries(never.complete, "P") == (0.0, 5)
    assert len(never.prompts) == 5
    prompt = grader_prompt("What is x?", "-1<AND>-5", "x = -1")
    assert prompt.endswith("| 1.0\n\nWhat is x? | -1 <AND> -5 | x = -1 | ")


def test_mmvet_shared_total_unchanged(llava15_reference):
    m = MMVet.score_files(grades=str(llava15_reference / "mm-vet" / "llava-v1.5-13b_gpt-4-grade-1runs.json"))
    assert m["total"] == 36.1 and m["n"] == 218


# -- SHR: HA-DPO's shr_eval --------------------------------------------------------------
# Fixture in HA-DPO's inputs: Visual Genome regions (x, y, width, height, phrase) and the
# image size, factual notes, and a {image_id: description} response file.

SHR_ANNOTATIONS = [
    {"image_id": 2339, "image": "2339.jpg", "width": 200, "height": 100,
     "factual": ["The man holds a red umbrella.", "It rains."],
     "regions": [{"x": 10, "y": 20, "width": 100, "height": 50, "phrase": "a man walking"},
                 {"x": 40, "y": 5, "width": 60, "height": 40, "phrase": "red umbrella"},
                 {"x": 0, "y": 0, "width": 5, "height": 5, "phrase": ""}]},
    {"image_id": 2340, "image": "2340.jpg", "width": 100, "height": 100, "factual": [],
     "regions": [{"x": 0, "y": 0, "w": 30, "h": 30, "phrase": "a brown dog"}]},
    {"image_id": 2341, "image": "2341.jpg", "width": 100, "height": 100, "factual": [],
     "regions": [{"x": 0, "y": 0, "width": 30, "height": 30, "phrase": "a cat"}]},
    {"image_id": 2342, "image": "2342.jpg", "width": 100, "height": 100, "factual": [],
     "regions": [{"x": 0, "y": 0, "width": 30, "height": 30, "phrase": "a tree"}]},
]
SHR_DESCRIPTIONS = {
    # a repeated sentence, a sentence contained in an earlier one, "!" (no split) and "2.5" (split)
    "2339": "A man walks in the rain. He holds a blue umbrella! The mood is calm. A man walks in the rain. "
            "The mood is calm. It is 2.5 meters tall.",
    "2340": "A brown dog sits on grass",
    "2341": "A cat. A dog.",
    "2342": "A tree stands. The sky is blue.",
}
SHR_REPLIES = {
    "2339": "Judgement:\n1. correct: a man walking\n2. Hallucination: the umbrella is red\n\n"
            "3. cannot judge: a size\n4. hallucination: no size given",
    "2340": "Sure.\nJudgement:\n1. Correct: region 1 shows a brown dog",
    "2341": "Judgement:\n1. correct: a cat",            # 1 verdict for 2 sentences: no verdicts
    "2342": "Judgement:\n1. correct: tree\n2. unsure: no sky region",  # "unsure" is no verdict HA-DPO rates
}
# HA-DPO @ abdc44b3babacf08736c2c7bde0d7ca5914ac085 (shr_utils.seg_cap, post_process_no_revise,
# get_metric, cal_repetition with nltk 3.10 ngrams, aggregated as json_eval.py does) run outside
# the project on this fixture's descriptions and replies gave exactly these figures; by hand:
#   sentences 4 + 1 + 2 + 2 = 9, words (each sentence + ".") 21 + 6 + 4 + 7 = 38 over 4 images;
#   hallucinated: "He holds a blue umbrella! The mood is calm." (9 words), "5 meters tall." (3);
#   rated (verdict in the three labels): 4 + 1 + 0 + 1 = 6 sentences, 21 + 6 + 0 + 3 = 30 words;
#   distinct n-grams of 2339 (30 words after removing . : ? , and newlines): 19/30, 21/29, 22/28,
#   23/27; 2341 ("A cat A dog"): 3/4, 1, 1, 1; the others 1.
HADPO_EXPECTED = {
    "num_images": 4.0, "sents_per_image": 2.25, "words_per_image": 9.5,
    "hal_sents_per_image": 0.5, "hal_words_per_image": 3.0,
    "hal_sents_ratio": 0.333, "hal_words_ratio": 0.4,
    "gram-1-repetition": 0.846, "gram-2-repetition": 0.931, "gram-3-repetition": 0.946, "gram-4-repetition": 0.963,
    "mean_hal_ratio": 0.333, "shr": 33.3,
}


def shr_files(tmp_path):
    questions = write_jsonl(tmp_path / "shr.jsonl", SHR_ANNOTATIONS)
    (tmp_path / "answers.json").write_text(json.dumps(SHR_DESCRIPTIONS))
    return questions, str(tmp_path / "answers.json")


def test_shr_sentences_as_hadpo():
    assert shr.split_sentences(SHR_DESCRIPTIONS["2339"]) == [
        "A man walks in the rain", "He holds a blue umbrella! The mood is calm", "It is 2", "5 meters tall"]
    assert shr.has_repeats(SHR_DESCRIPTIONS["2339"]) and not shr.has_repeats(SHR_DESCRIPTIONS["2342"])


def test_shr_judge_prompt_has_normalised_boxes(tmp_path):
    a = SHR_ANNOTATIONS[0]
    prompt = shr.judge_prompt(a["regions"], a["factual"], SHR_DESCRIPTIONS["2339"], a["width"], a["height"])
    # each region line ends in a newline, and the template adds a blank line: three newlines, as HA-DPO
    assert "\n[0.05, 0.2, 0.55, 0.7]: a man walking\n[0.2, 0.05, 0.5, 0.45]: red umbrella\n\n\nFactual" in prompt
    assert "Factual Information:\nThe man holds a red umbrella.\nIt rains.\n\n\nHere is" in prompt
    assert prompt.endswith("cannot judge): \n1. A man walks in the rain\n2. He holds a blue umbrella! The mood is "
                           "calm\n3. It is 2\n4. 5 meters tall\n\n")
    assert prompt.startswith("\nPlease help me judge if the comment of this image is hallucination or correct. \n")


def test_shr_from_saved_judgements_gives_hadpo_figures(tmp_path):
    questions, answers = shr_files(tmp_path)
    grades = write_jsonl(tmp_path / "j.jsonl", [{"question_id": k, "judgement": v} for k, v in SHR_REPLIES.items()])
    m = SHR.score_files(answers=answers, questions=questions, grades=grades)
    assert {k: m[k] for k in HADPO_EXPECTED} == HADPO_EXPECTED
    assert m["unparsed"] == 1 and m["repeated_images"] == 1
    # HA-DPO's own judgement.json shape is read too
    hadpo = {"run1": {k: {"raw_judgement": v, "mode_response": SHR_DESCRIPTIONS[k], "judgement": []}
                      for k, v in SHR_REPLIES.items()}}
    (tmp_path / "judgement.json").write_text(json.dumps(hadpo))
    again = SHR.score_files(answers=answers, questions=questions, grades=str(tmp_path / "judgement.json"))
    assert {k: again[k] for k in HADPO_EXPECTED} == HADPO_EXPECTED


class PromptKeyedJudge:
    """A deterministic local judge: the reply of the image whose first sentence the prompt lists."""

    def __init__(self, first_try: str | None = None) -> None:
        self.calls = 0
        self.first_try = first_try

    def complete(self, prompt: str, *, system: str | None = None) -> str:
        self.calls += 1
        if self.first_try is not None and self.calls == 1:
            return self.first_try
        comments = prompt.rsplit("cannot judge): \n", 1)[1]
        for key, text in SHR_DESCRIPTIONS.items():
            if comments.startswith("1. " + shr.split_sentences(text)[0] + "\n"):
                return SHR_REPLIES[key]
        raise AssertionError("unknown prompt")


def test_shr_with_a_deterministic_judge_gives_hadpo_figures(tmp_path):
    questions, answers = shr_files(tmp_path)
    judge = PromptKeyedJudge(first_try="I cannot see the image.")  # no "Judgement": asked again, as HA-DPO
    m = SHR.score_files(answers=answers, questions=questions, judge=judge)
    assert {k: m[k] for k in HADPO_EXPECTED} == HADPO_EXPECTED and judge.calls == 5
    bench = SHR(SHRConfig(questions=questions, judge={"name": "openai", "model": "gpt-4-0613"}))
    assert bench.provenance() == {"protocol": "hadpo", "judge": "openai", "judge_model": "gpt-4-0613"}


def test_shr_unparsed_threshold_applies_after_the_protocol(tmp_path):
    questions, answers = shr_files(tmp_path)
    grades = write_jsonl(tmp_path / "j.jsonl", [{"question_id": k, "judgement": v} for k, v in SHR_REPLIES.items()])
    with pytest.raises(ScoreInputError, match="1 of 4 images got no usable verdicts"):
        SHR.score_files(answers=answers, questions=questions, grades=grades, config={"max_unparsed_fraction": 0.2})
    assert SHR.score_files(answers=answers, questions=questions, grades=grades,
                           config={"max_unparsed_fraction": 0.25})["unparsed"] == 1


def test_shr_needs_the_image_size(tmp_path):
    rows = [{k: v for k, v in SHR_ANNOTATIONS[0].items() if k != "width"}]
    questions = write_jsonl(tmp_path / "shr.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps({"2339": "A man."}))
    with pytest.raises(ScoreInputError, match="width/height"):
        SHR.score_files(answers=str(tmp_path / "a.json"), questions=questions, judge=ScriptedJudge("Judgement:\n1. correct: x"))


def test_benchmarks_record_their_protocol_for_the_eval_stage():
    from mllm import RecordsProvenance
    from mllm_eval.llava_bench import LlavaBenchConfig
    from mllm_eval.pope import POPEConfig

    for bench, protocol in ((POPE(POPEConfig(protocol="lmms-eval")), "lmms-eval"), (ScienceQA(), "llava"),
                            (MMVet(), "mmvet-official"), (LlavaBench(LlavaBenchConfig()), "llava"), (SHR(), "hadpo")):
        assert isinstance(bench, RecordsProvenance)
        assert bench.provenance()["protocol"] == protocol
    assert MMVet(judge=ScriptedJudge("0.5")).provenance() == {"protocol": "mmvet-official", "judge": "ScriptedJudge"}
