"""The core's pairing (``data: {from: <generate stage>, pairs: wrong-vs-gold}``).

``wrong-vs-gold``: for each scored answer that is wrong (``metadata.correct`` false),
chosen = the gold answer, rejected = the answer. Answers that are right, unscored
(``correct`` null), empty, or equal to the gold answer after normalisation make no pair
(they are not bad rows); one pair per distinct wrong answer of a prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from mllm.data.badrows import DataReport
from mllm.data.score_rules import normalize_answer
from mllm.interfaces import ComponentConfig
from mllm.records import Conversation, Preference


class WrongVsGoldConfig(ComponentConfig):
    """``pairs: wrong-vs-gold`` takes no keys."""


class WrongVsGold:
    """Chosen = the gold answer, rejected = the model's wrong answer (see the module docstring)."""

    def __init__(self, config: WrongVsGoldConfig | None = None) -> None:
        self.config = config or WrongVsGoldConfig()

    def pairs(self, records: Iterable[Any], report: DataReport, source: Path) -> Iterator[Preference]:
        from mllm.pipeline.config import ConfigError

        seen: set[tuple[str, str]] = set()
        for record in records:
            metadata = record.metadata or {}
            if not isinstance(record, Conversation):
                report.skip(file=source, row=f"id {record.id}",
                            reason=f"record {record.id!r} is not a generated Conversation")
                continue
            if "correct" not in metadata:
                raise ConfigError(f"{source}: record {record.id!r} has no score; pairs: wrong-vs-gold needs a "
                                  "generate stage with a score rule, e.g. score: {rule: exact-match}")
            answer, gold = record.turns[-1].content, metadata.get("gold")
            if metadata["correct"] is None:  # a rule left it unscored: no verdict, no pair
                continue
            if metadata["correct"] or not answer.strip() or gold is None or not str(gold).strip():
                continue
            if normalize_answer(answer) == normalize_answer(str(gold)):
                continue
            prompt_id = str(metadata.get("source_id", record.id))
            if (prompt_id, answer) in seen:
                continue
            seen.add((prompt_id, answer))
            yield Preference(id=record.id, prompt=tuple(record.turns[:-1]), chosen=str(gold), rejected=answer,
                             images=record.images, metadata={"source_id": prompt_id, "pairs": "wrong-vs-gold"},
                             check_files=False)
