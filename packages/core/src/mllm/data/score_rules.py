"""The core's score rules (``score: {rule: ...}`` of a generate stage): exact-match, regex, length.

- ``exact-match``: correct when the answer equals the gold answer after normalisation
  (case, surrounding whitespace and punctuation, articles, repeated spaces); score 1 or 0.
- ``regex``: correct when ``pattern`` is found in the answer (``full_match``: matches all
  of it; ``ignore_case``); score 1 or 0.
- ``length``: score = the answer's length in characters; correct when between
  ``min_chars`` and ``max_chars``.

Each is an :class:`AnswerRule`: it scores one answer against its gold at a time, and the
stage's metrics are ``accuracy``, ``mean_score`` and ``wrong``. A plugin's rule may do the
same by subclassing it and defining :meth:`AnswerRule.score_answer`, or implement
:class:`mllm.interfaces.ScoreRule` whole (e.g. to rate with a judge).
"""

from __future__ import annotations

import re
import string
from typing import Any, ClassVar, Sequence

from pydantic import Field, model_validator

from mllm.interfaces import ComponentConfig
from mllm.records import Conversation

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lower case, no surrounding punctuation or whitespace, no articles, single spaces."""
    text = text.lower().strip().strip(string.punctuation + " ")
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


class AnswerRule:
    """A score rule that scores each answer on its own: ``score_answer(answer, gold) -> (score, correct)``."""

    needs_gold: ClassVar[bool] = False

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def score_answer(self, answer: str, gold: str | None) -> tuple[float, bool]:
        raise NotImplementedError

    def score(self, records: Sequence[Conversation], context: Any = None) -> tuple[list[Conversation], dict[str, float]]:
        """Every record with ``metadata.score`` and ``metadata.correct``; accuracy, mean_score, wrong."""
        out = []
        for record in records:
            metadata = dict(record.metadata or {})
            score, correct = self.score_answer(record.turns[-1].content, metadata.get("gold"))
            metadata.update(score=score, correct=correct)
            out.append(Conversation(id=record.id, turns=record.turns, images=record.images, metadata=metadata,
                                    check_files=False))
        if not out:
            return out, {}
        correct = [bool(r.metadata["correct"]) for r in out]
        return out, {"accuracy": sum(correct) / len(correct),
                     "mean_score": sum(float(r.metadata["score"]) for r in out) / len(out),
                     "wrong": len(correct) - sum(correct)}


class ExactMatchConfig(ComponentConfig):
    """Keys of ``{rule: exact-match}``."""

    normalize: bool = Field(True, description="compare lower-cased, without surrounding punctuation, articles "
                                              "and repeated spaces")


class ExactMatch(AnswerRule):
    """Correct when the normalised answer equals the normalised gold answer."""

    needs_gold: ClassVar[bool] = True

    def __init__(self, config: ExactMatchConfig | None = None) -> None:
        super().__init__(config or ExactMatchConfig())

    def score_answer(self, answer: str, gold: str | None) -> tuple[float, bool]:
        if gold is None:
            raise ValueError("exact-match needs a gold answer, and this prompt has none")
        if self.config.normalize:
            same = normalize_answer(answer) == normalize_answer(gold)
        else:
            same = answer.strip() == gold.strip()
        return float(same), same


class RegexConfig(ComponentConfig):
    """Keys of ``{rule: regex, pattern: ...}``."""

    pattern: str = Field(description="a Python regular expression")
    full_match: bool = Field(False, description="the pattern must match the whole (stripped) answer")
    ignore_case: bool = Field(False, description="match case-insensitively")

    @model_validator(mode="after")
    def _compiles(self) -> RegexConfig:
        try:
            re.compile(self.pattern)
        except re.error as error:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {error}") from None
        return self


class Regex(AnswerRule):
    """Correct when ``pattern`` is found in the answer (``full_match``: matches all of it)."""

    def __init__(self, config: RegexConfig) -> None:
        super().__init__(config)
        self.pattern = re.compile(config.pattern, re.IGNORECASE if config.ignore_case else 0)

    @classmethod
    def example_config(cls, tmp_path: Any) -> dict[str, Any]:
        """For the conformance kit: a pattern to find."""
        return {"pattern": r"answer is [A-D]"}

    def score_answer(self, answer: str, gold: str | None) -> tuple[float, bool]:
        found = (self.pattern.fullmatch(answer.strip()) if self.config.full_match
                 else self.pattern.search(answer)) is not None
        return float(found), found


class LengthConfig(ComponentConfig):
    """Keys of ``{rule: length}``."""

    min_chars: int = Field(0, ge=0, description="shortest correct answer, in characters")
    max_chars: int | None = Field(None, ge=0, description="longest correct answer, in characters (none: no limit)")


class Length(AnswerRule):
    """Score = the answer's length in characters; correct when within the bounds."""

    def __init__(self, config: LengthConfig | None = None) -> None:
        super().__init__(config or LengthConfig())

    def score_answer(self, answer: str, gold: str | None) -> tuple[float, bool]:
        length = len(answer)
        ok = length >= self.config.min_chars and (self.config.max_chars is None or length <= self.config.max_chars)
        return float(length), ok
