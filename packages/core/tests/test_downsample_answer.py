"""``{op: downsample-answer}``: imbalanced data on purpose (a yes-biased model for the hallucination study)."""

from __future__ import annotations

from mllm.data.badrows import DataReport
from mllm.data.context import ComponentContext
from mllm.data.ops import DownsampleAnswer, DownsampleAnswerConfig
from mllm.records import Conversation, Turn


def rows(answers: list[str]) -> list[Conversation]:
    return [Conversation(id=f"q{i}", turns=(Turn("user", f"Is it {i}?"), Turn("assistant", a)), check_files=False)
            for i, a in enumerate(answers)]


def apply(records, seed=0, **keys):
    import logging
    from pathlib import Path

    ctx = ComponentContext(Path("."), seed, None, DataReport(source="test"), "op 0", logging.getLogger("t"))
    return DownsampleAnswer(DownsampleAnswerConfig(**keys)).apply(records, ctx)


def test_keeps_a_share_of_one_answer_and_every_other_row_in_order():
    records = rows(["yes", "No", "no ", "circle"] * 10)  # 20 "no" rows, case and space ignored
    out = apply(records, answer="no", keep=0.25)
    assert sum(r.turns[-1].content.strip().lower() == "no" for r in out) == 5
    assert [r for r in out if r.turns[-1].content != "No" and r.turns[-1].content != "no "] == \
        [r for r in records if r.turns[-1].content in ("yes", "circle")]
    assert [r.id for r in out] == sorted((r.id for r in out), key=lambda i: int(i[1:]))  # file order
    assert out == apply(records, answer="no", keep=0.25) and out != apply(records, seed=1, answer="no", keep=0.25)
    assert len(apply(records, answer="no", keep=0.0)) == 20 and apply(records, answer="no", keep=1.0) == records
