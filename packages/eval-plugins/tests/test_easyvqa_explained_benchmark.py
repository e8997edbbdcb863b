"""The easyvqa benchmark's explained style: the dataset's explained prompt, answers parsed from
the last "The answer is X." (LLaVA's ScienceQA rule), unparsed answers wrong, parsed_rate; the
short style unchanged."""

from __future__ import annotations

import pytest
from mllm.errors import MllmError
from mllm.records import EvalItem
from mllm_eval.easyvqa import EasyVQABenchConfig, EasyVQABenchmark, parse_final_answer, score_answers

pytest.importorskip("easy_vqa")


def bench(**options) -> EasyVQABenchmark:
    return EasyVQABenchmark(EasyVQABenchConfig(**options))


def item(i: int, gold: str) -> EvalItem:
    question = "what color is the shape?" if gold not in ("yes", "no") else "is there a red shape?"
    return EvalItem(id=str(i), prompt=f"<image>\n{question}", images=("x.png",), answer=gold, check_files=False)


def test_parse_final_answer():
    assert parse_final_answer("Lecture: A circle is round. Explanation: The image shows a red circle. "
                              "The answer is red.") == "red"
    assert parse_final_answer("The answer is blue. Then again The answer is red. Extra") == "red"
    assert parse_final_answer("The answer is yes") == "yes"  # cut short before the period
    assert parse_final_answer("red") is None and parse_final_answer("The answer is .") is None


def test_explained_scoring():
    golds = ["red", "red", "circle", "yes", "no"]
    answers = ["Lecture: Red is a color. Explanation: The image shows a red circle. The answer is red.",
               "red",                                   # no final sentence: unparsed, wrong
               "The image shows a blue circle. The answer is circle.",
               "Lecture: ... The answer is yes.",
               "Lecture: ... The answer is yes."]
    items = [item(i, g) for i, g in enumerate(golds)]
    metrics = score_answers(items, {str(i): a for i, a in enumerate(answers)}, "explained")
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["open_accuracy"] == pytest.approx(2 / 3) and metrics["yesno_accuracy"] == pytest.approx(1 / 2)
    assert metrics["parsed_rate"] == pytest.approx(4 / 5)
    b = bench(answer_style="explained")
    assert set(b.score(items, {str(i): a for i, a in enumerate(answers)})) == set(b.metric_keys)
    assert b.metric_keys[-1] == "parsed_rate" and "parsed_rate" not in EasyVQABenchmark.metric_keys


def test_short_style_scores_as_before():
    golds = ["yes", "no", "blue", "circle"]
    answers = ["Yes.", "yes", "The answer is blue.", "circle"]
    items = [item(i, g) for i, g in enumerate(golds)]
    by_id = {str(i): a for i, a in enumerate(answers)}
    metrics = bench().score(items, by_id)
    assert metrics == score_answers(items, by_id)
    assert metrics["accuracy"] == pytest.approx(2 / 4)  # short: "The answer is blue." is not "blue"
    assert set(metrics) == set(bench().metric_keys) == set(EasyVQABenchmark.metric_keys)


def test_explained_prompt_is_the_datasets():
    mllm_data = pytest.importorskip("mllm_data.easyvqa")
    from mllm.data.badrows import DataReport

    items = bench(split="train", limit=10, seed=4, answer_style="explained").items()
    records = list(mllm_data.EasyVQA(mllm_data.EasyVQAConfig(split="train", limit=10, seed=4,
                                                             answer_style="explained")).records(DataReport("x")))
    assert [i.id for i in items] == [r.id for r in records]
    assert [i.prompt for i in items] == [r.turns[0].content for r in records]
    assert all(i.prompt.endswith("\nExplain, then give the answer.") for i in items)
    short = bench(split="train", limit=10, seed=4).items()
    assert all(i.prompt.endswith("\nAnswer the question using a single word or phrase.") for i in short)


def test_choice_with_explained_is_refused():
    from mllm.pipeline.config import resolve_component
    from mllm.plugins.registry import Registry

    with pytest.raises(MllmError, match="answer_mode: choice scores single words"):
        resolve_component(Registry(), "benchmark", {"name": "easyvqa", "answer_mode": "choice",
                                                    "answer_style": "explained"}, "stages.eval.benchmarks[0]")
