"""The core's transform ops (``ops: [{op: ...}]`` of a transform stage): subsample, shorten,
and :func:`rewrite_answers`, the loop every answer-rewriting op shares.

- ``subsample``: ``n`` rows or a ``fraction``, seeded, file order kept.
- ``downsample-answer``: keep only a share (``keep``) of the rows whose final answer is
  ``answer``, seeded (imbalanced data on purpose: a yes-biased model).
- ``shorten``: every assistant turn becomes only its final answer: the last match of
  ``pattern`` (default ``The answer is (.+?)\\.``), written with ``template`` (default
  ``The answer is {answer}.``): the seed studies' "short" ScienceQA variant. A turn
  without a final answer is a bad row.

Plugins add ops through ``mllm_register_transform_ops`` (mllm-data: ``realign``,
``llava-instruct``).
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable

from pydantic import Field, model_validator

from mllm.data.context import ComponentContext
from mllm.data.recordio import record_kind_of
from mllm.interfaces import ComponentConfig
from mllm.records import Conversation, Record, Turn


def conversations_only(record: Record, op: str) -> Conversation:
    """``record`` when it is a Conversation; a TypeError naming the op otherwise (a bad row)."""
    if not isinstance(record, Conversation):
        raise TypeError(f"op {op} rewrites conversations; record {record.id!r} is a {record_kind_of(record)}")
    return record


def replace_turns(record: Conversation, turns: list[Turn], **metadata: Any) -> Conversation:
    """``record`` with new turns and ``metadata`` merged into its own."""
    return Conversation(id=record.id, turns=tuple(turns), images=record.images,
                        metadata={**record.metadata, **metadata}, check_files=False)


def rewrite_answers(records: list[Record], ctx: ComponentContext, op_name: str,
                    rewrite: Callable[[Conversation, int, Turn], str], **metadata: Any) -> list[Record]:
    """Every conversation with each assistant answer replaced by ``rewrite(conversation,
    turn index, turn)``; a record the rewrite fails on follows the bad-row policy."""
    out: list[Record] = []
    for record in records:
        new = None
        with ctx.report.row(file=ctx.where, row=record.id, id=record.id):
            conversation = conversations_only(record, op_name)
            turns = [Turn("assistant", rewrite(conversation, index, turn)) if turn.role == "assistant" else turn
                     for index, turn in enumerate(conversation.turns)]
            new = replace_turns(conversation, turns, **metadata)
        if new is not None:
            out.append(new)
    return out


class SubsampleConfig(ComponentConfig):
    """Keys of ``{op: subsample}``: keep a seeded random subset (file order kept)."""

    n: int | None = Field(None, ge=1, description="rows to keep")
    fraction: float | None = Field(None, gt=0.0, le=1.0, description="share of rows to keep")
    seed: int | None = Field(None, description="default: the pipeline seed")

    @model_validator(mode="after")
    def _one_size(self) -> SubsampleConfig:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("subsample takes n (rows) or fraction (share), exactly one")
        return self


class Subsample:
    """The ``subsample`` op (see the module docstring)."""

    def __init__(self, config: SubsampleConfig) -> None:
        self.config = config

    @classmethod
    def example_config(cls, tmp_path: Any) -> dict[str, Any]:
        """For the conformance kit: keep one row."""
        return {"n": 1}

    def apply(self, records: list[Record], ctx: ComponentContext) -> list[Record]:
        config = self.config
        size = config.n if config.n is not None else max(1, round(config.fraction * len(records)))
        if size >= len(records):
            return list(records)
        seed = config.seed if config.seed is not None else ctx.seed
        keep = sorted(random.Random(seed).sample(range(len(records)), size))
        return [records[i] for i in keep]


class DownsampleAnswerConfig(ComponentConfig):
    """Keys of ``{op: downsample-answer}``: keep only a share of the rows whose final answer is ``answer``."""

    answer: str = Field(description="the answer to make rarer (compared with the last assistant turn, "
                                    "case and surrounding space ignored), e.g. 'no'")
    keep: float = Field(ge=0.0, le=1.0, description="share of those rows kept (0.1: one in ten); every other row is kept")
    seed: int | None = Field(None, description="default: the stage's seed")


class DownsampleAnswer:
    """The ``downsample-answer`` op: data made imbalanced on purpose (e.g. a yes-biased model:
    ``{op: downsample-answer, answer: "no", keep: 0.1}``); file order kept, seeded."""

    def __init__(self, config: DownsampleAnswerConfig) -> None:
        self.config = config

    @classmethod
    def example_config(cls, tmp_path: Any) -> dict[str, Any]:
        """For the conformance kit: drop every row answered 'no'."""
        return {"answer": "no", "keep": 0.0}

    def apply(self, records: list[Record], ctx: ComponentContext) -> list[Record]:
        config = self.config
        wanted = config.answer.strip().lower()
        matching = [i for i, r in enumerate(records) if isinstance(r, Conversation) and r.turns
                    and r.turns[-1].role == "assistant" and r.turns[-1].content.strip().lower() == wanted]
        seed = config.seed if config.seed is not None else ctx.seed
        kept = set(random.Random(seed).sample(matching, round(config.keep * len(matching))))
        dropped = set(matching) - kept
        return [r for i, r in enumerate(records) if i not in dropped]


class ShortenConfig(ComponentConfig):
    """Keys of ``{op: shorten}``: keep only the final answer of each assistant turn."""

    pattern: str = Field(r"The answer is (.+?)\.", description="regex of the final answer; group 1 is the answer; "
                                                                "its last match is used")
    template: str = Field("The answer is {answer}.", description="the short answer; {answer} is group 1")

    @model_validator(mode="after")
    def _valid_pattern(self) -> ShortenConfig:
        try:
            compiled = re.compile(self.pattern)
        except re.error as error:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {error}") from None
        if compiled.groups < 1:
            raise ValueError(f"pattern {self.pattern!r} needs a group around the answer, e.g. 'The answer is (.+?)\\.'")
        return self


class Shorten:
    """The ``shorten`` op (see the module docstring)."""

    def __init__(self, config: ShortenConfig | None = None) -> None:
        self.config = config or ShortenConfig()

    def apply(self, records: list[Record], ctx: ComponentContext) -> list[Record]:
        config = self.config
        pattern = re.compile(config.pattern)

        def final_answer(record: Conversation, index: int, turn: Turn) -> str:
            matches = list(pattern.finditer(turn.content))
            if not matches:
                raise ValueError(f"record {record.id!r}: assistant turn {index} has no final answer matching "
                                 f"{config.pattern!r}: {turn.content[-80:]!r}")
            return config.template.format(answer=matches[-1].group(1).strip())

        return rewrite_answers(records, ctx, "shorten", final_answer)
