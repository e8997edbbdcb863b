"""The easyvqa dataset's explained and realigned answer styles on real easy-vqa rows: the fixed
final sentence, the image's facts from its other questions, the length spread, and the core
``shorten`` op turning an explained answer into ``The answer is X.``"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

import pytest
from mllm.data.badrows import DataReport
from mllm.data.context import ComponentContext
from mllm.data.ops import Shorten

pytest.importorskip("easy_vqa")

from mllm_data.easyvqa import COLOURS, SHAPES, EasyVQA, EasyVQAConfig, split_files  # noqa: E402


def records(**options):
    return list(EasyVQA(EasyVQAConfig(**options)).records(DataReport("test")))


def facts_from_questions(split: str) -> dict[int, dict[str, set[str]]]:
    """Every colour / shape answer each image's questions give (computed here, independently)."""
    questions, _ = split_files(split)
    facts: dict[int, dict[str, set[str]]] = {}
    for question, answer, image in json.loads(questions.read_text()):
        if question.startswith("what"):
            kind = "colour" if answer in COLOURS else "shape"
            facts.setdefault(int(image), {"colour": set(), "shape": set()})[kind].add(answer)
    return facts


@pytest.mark.parametrize("style", ["explained", "realigned"])
def test_final_sentence_and_facts(style):
    rows = records(split="test", limit=40, seed=3, answer_style=style)
    short = records(split="test", limit=40, seed=3)
    facts = facts_from_questions("test")
    assert [r.id for r in rows] == [r.id for r in short]  # one question row, one id, whichever style
    assert [r.metadata for r in rows] == [r.metadata for r in short]
    for record, plain in zip(rows, short):
        question, answer = record.metadata["question"], record.metadata["answer"]
        assert record.turns[0].content == f"<image>\n{question}\nExplain, then give the answer."
        reply = record.turns[1].content
        assert reply.endswith(f" The answer is {answer}.") and plain.turns[1].content == answer
        assert reply.count("The answer is") == 1
        assert reply.startswith("Lecture: ") == (style == "explained")
        known = facts.get(record.metadata["image_id"], {"colour": set(), "shape": set()})
        assert all(len(values) <= 1 for values in known.values())  # one colour, one shape per image
        colour, shape = next(iter(known["colour"]), None), next(iter(known["shape"]), None)
        seen = f"The image shows a {' '.join(w for w in (colour, shape or 'shape') if w)}."
        if colour or shape:
            assert seen in reply
        for other in set(COLOURS) - {colour, answer}:  # no colour the image lacks, unless the question names it
            if other not in question:
                assert other not in reply.split("Explanation:")[-1]


def test_explained_lengths_spread_wider_than_realigned():
    explained = [len(r.turns[1].content) for r in records(split="train", limit=200, seed=0, answer_style="explained")]
    realigned = [len(r.turns[1].content) for r in records(split="train", limit=200, seed=0, answer_style="realigned")]
    assert statistics.pstdev(explained) > 3 * statistics.pstdev(realigned)
    assert max(explained) - min(explained) > 150 and min(explained) > max(realigned)


def test_a_rows_answer_does_not_depend_on_limit():
    small = {r.id: r.turns[1].content for r in records(split="train", limit=50, seed=0, answer_style="explained")}
    large = {r.id: r.turns[1].content for r in records(split="train", limit=400, seed=0, answer_style="explained")}
    shared = small.keys() & large.keys()
    assert shared and all(small[i] == large[i] for i in shared)


def test_short_style_is_unchanged():
    rows = records(split="test", limit=5, seed=0)
    assert rows == records(split="test", limit=5, seed=0, answer_style="short")
    assert all(r.turns[0].content.endswith("\nAnswer the question using a single word or phrase.") for r in rows)
    assert all(r.turns[1].content in COLOURS + SHAPES + ("yes", "no") for r in rows)


def test_shorten_op_keeps_the_final_sentence():
    rows = records(split="train", limit=30, seed=2, answer_style="explained")
    report = DataReport("test")
    ctx = ComponentContext(Path("."), 0, None, report, "op 0", logging.getLogger("t"))
    short = Shorten().apply(rows, ctx)
    assert [r.id for r in short] == [r.id for r in rows]
    assert [r.turns[1].content for r in short] == [f"The answer is {r.metadata['answer']}." for r in rows]
