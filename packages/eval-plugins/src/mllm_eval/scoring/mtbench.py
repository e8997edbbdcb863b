"""MT-Bench single-answer grading (FastChat's ``single-v1`` judge prompts, ``[[rating]]``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
#: Categories whose judge prompt shows the reference answer (FastChat's NEED_REF_CATS).
NEED_REF_CATS = ("math", "reasoning", "coding")


def parse_rating(judgment: str) -> float | None:
    """The ``[[rating]]`` (or ``[rating]``) of a judge reply, else ``None`` (unparsed)."""
    match = _RATING.search(judgment) or _RATING_BACKUP.search(judgment)
    if not match:
        return None
    return float(match.group(1))


def judge_prompt(
    prompts: Mapping[str, Mapping[str, str]],
    question: Mapping[str, object],
    answers: list[str],
    turn: int = 1,
    reference: list[str] | None = None,
) -> tuple[str, str]:
    """(system, user) for one answer, from the judge prompt file's ``single-*`` entries."""
    needs_ref = question.get("category") in NEED_REF_CATS and reference
    name = "single-math-v1" if needs_ref else "single-v1"
    if turn == 2:
        name += "-multi-turn"
    entry = prompts[name]
    turns = list(question["turns"])  # type: ignore[arg-type]
    fields: dict[str, str] = {}
    if turn == 1:
        fields = {"question": turns[0], "answer": answers[0]}
        if needs_ref:
            fields["ref_answer_1"] = reference[0]  # type: ignore[index]
    else:
        fields = {"question_1": turns[0], "answer_1": answers[0], "question_2": turns[1], "answer_2": answers[1]}
        if needs_ref:
            fields["ref_answer_1"], fields["ref_answer_2"] = reference[0], reference[1]  # type: ignore[index]
    return entry["system_prompt"], entry["prompt_template"].format(**fields)


def summarize(ratings: list[tuple[str, int, float | None]]) -> dict[str, float]:
    """``(category, turn, rating or None)`` to ``score`` (mean), ``turn<k>``, ``<category>``, ``unparsed``."""
    groups: dict[str, list[float]] = {}
    unparsed = 0
    for category, turn, rating in ratings:
        if rating is None or rating < 0:
            unparsed += 1
            continue
        for g in ("score", f"turn{turn}", category):
            groups.setdefault(g, []).append(rating)
    metrics = {g: sum(v) / len(v) for g, v in groups.items()}
    metrics["n"] = float(len(ratings))
    metrics["unparsed"] = float(unparsed)
    return metrics
