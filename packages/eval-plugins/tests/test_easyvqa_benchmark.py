"""The easyvqa benchmark on the real easy-vqa rows; metrics on hand-computed examples."""

from __future__ import annotations

import pytest
from mllm.records import EvalItem
from mllm_eval.easyvqa import EasyVQABenchConfig, EasyVQABenchmark, normalize_answer, score_answers

pytest.importorskip("easy_vqa")

COLOURS_AND_SHAPES = {"circle", "green", "red", "gray", "teal", "black", "rectangle", "yellow", "triangle", "brown", "blue"}


def bench(**options) -> EasyVQABenchmark:
    return EasyVQABenchmark(EasyVQABenchConfig(**options))


@pytest.mark.parametrize(("split", "count"), [("train", 38_575), ("test", 9_673)])
def test_full_split_counts(split, count):
    items = bench(split=split).items()
    assert len(items) == count
    assert len({i.id for i in items}) == count


def test_items_are_valid_and_choices_fit_the_question():
    items = bench(split="test").items()
    kinds = {"open": 0, "yes/no": 0}
    for item in items:
        assert isinstance(item, EvalItem)
        assert item.prompt == f"<image>\n{item.metadata['question']}\nAnswer the question using a single word or phrase."
        assert item.answer in item.choices  # the closed set always holds the gold answer
        kinds[item.metadata["question_type"]] += 1
        if item.metadata["question_type"] == "open":
            assert set(item.choices) == COLOURS_AND_SHAPES
        else:
            assert item.choices == ("yes", "no")
    assert kinds == {"open": 2537, "yes/no": 7136}


def test_prompt_is_the_training_prompt():
    mllm_data = pytest.importorskip("mllm_data.easyvqa")
    from mllm.data.badrows import DataReport

    items = bench(split="train", limit=20, seed=5).items()
    records = list(mllm_data.EasyVQA(mllm_data.EasyVQAConfig(split="train", limit=20, seed=5)).records(DataReport("x")))
    assert [i.id for i in items] == [r.id for r in records]
    assert [i.prompt for i in items] == [r.turns[0].content for r in records]
    assert [i.answer for i in items] == [r.turns[1].content for r in records]
    assert [i.images for i in items] == [r.images for r in records]


def test_seeded_limit_is_reproducible():
    a = [i.id for i in bench(limit=30, seed=1).items()]
    assert a == [i.id for i in bench(limit=30, seed=1).items()]
    assert a != [i.id for i in bench(limit=30, seed=2).items()]
    assert len(a) == 30


def test_normalize_answer():
    assert normalize_answer("  Blue. ") == "blue"
    assert normalize_answer("YES!") == "yes"
    assert normalize_answer("a  red,circle") == "a red circle"


def item(i: int, gold: str) -> EvalItem:
    question = "what color is the shape?" if gold not in ("yes", "no") else "is there a red shape?"
    return EvalItem(id=str(i), prompt=f"<image>\n{question}", images=("x.png",), answer=gold, check_files=False)


def test_metrics_hand_computed():
    golds = ["yes", "yes", "yes", "no", "no", "no", "blue", "circle"]
    answers = ["Yes.", "no", "blue", "No", "yes", "NO", "Blue", "red"]
    items = [item(i, g) for i, g in enumerate(golds)]
    metrics = score_answers(items, {str(i): a for i, a in enumerate(answers)})
    # exact match after normalisation: yes,  -, -, no, -, no, blue, -  -> 4 of 8
    assert metrics["accuracy"] == pytest.approx(4 / 8)
    assert metrics["yesno_accuracy"] == pytest.approx(3 / 6)
    assert metrics["open_accuracy"] == pytest.approx(1 / 2)
    # POPE on the 6 yes/no items: predictions yes, no, yes ("blue" has no no/not), no, yes, no
    # labels yes, yes, yes, no, no, no -> tp=2 fn=1 fp=1 tn=2
    assert metrics["pope_accuracy"] == pytest.approx(4 / 6)
    assert metrics["pope_precision"] == pytest.approx(2 / 3)
    assert metrics["pope_recall"] == pytest.approx(2 / 3)
    assert metrics["pope_f1"] == pytest.approx(2 / 3)
    assert metrics["pope_yes_ratio"] == pytest.approx(3 / 6)
    assert set(metrics) == set(EasyVQABenchmark.metric_keys)


def test_metrics_all_yes_and_empty_subsets():
    items = [item(0, "yes"), item(1, "no"), item(2, "no"), item(3, "yes")]
    metrics = score_answers(items, {"0": "yes", "1": "yes", "2": "yes", "3": "yes"})
    # tp=2 fp=2 tn=0 fn=0
    assert metrics["pope_precision"] == pytest.approx(0.5)
    assert metrics["pope_recall"] == pytest.approx(1.0)
    assert metrics["pope_f1"] == pytest.approx(2 / 3)
    assert metrics["pope_yes_ratio"] == pytest.approx(1.0)
    assert metrics["open_accuracy"] == 0.0  # no open questions


def test_score_on_real_items_gold_answers_is_perfect():
    b = bench(limit=200, seed=0)
    items = b.items()
    metrics = b.score(items, {i.id: i.answer.upper() + "." for i in items})
    assert metrics["accuracy"] == metrics["yesno_accuracy"] == metrics["open_accuracy"] == 1.0
    assert metrics["pope_f1"] == 1.0


def test_missing_answer_is_an_error():
    with pytest.raises(ValueError, match="no answer"):
        score_answers([item(0, "yes")], {})


def test_registered_through_the_plugin():
    from mllm.plugins.registry import Registry

    spec = Registry().get("benchmark", "easyvqa")
    assert spec.load() is EasyVQABenchmark
    b = spec.load()(spec.load_config()(answer_mode="choice"))
    assert b.answer_mode == "choice" and b.max_new_tokens == 8
