"""Scored candidates of a ``generate`` stage: grouping by prompt, the best one, pairs.

Candidates are the Conversations a generate stage wrote with a score rule (any rule:
``score: {rule: ...}``): ``metadata.source_id`` names the prompt, ``metadata.sample`` the
sample index and ``metadata.score`` the rule's score (``None`` when the candidate stayed
unscored; unscored candidates never win and never pair). With ``{rule: attributes}`` the
score is the SteerLM aggregate (Helpfulness + Correctness + Coherence).

* :func:`select_best` keeps the best candidate per prompt (rejection sampling). Ties on
  the score: ``first`` (lowest sample index, the default), ``shortest``, ``longest``
  (answer length in characters, then sample index) or ``all`` (every tied candidate).
  ``min_score``: prompts whose best score is below it keep nothing.
* :class:`BestVsWorse` is the pairing ``pairs: best-vs-worse``: chosen = the best candidate
  (ties: first), rejected = the lowest-scored candidate at least ``min_gap`` (default 2)
  score points below it (ties: first), as mllm-dpo built its DPO set from ranked samples.
  Prompts without such a candidate make no pair (not a bad row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from mllm import ComponentConfig, Conversation, Preference
from pydantic import Field

Ties = Literal["first", "shortest", "longest", "all"]


def group_candidates(records: Iterable[Any]) -> dict[str, list[Conversation]]:
    """Candidates by prompt (``metadata.source_id``), prompts in first-seen order, samples in order."""
    groups: dict[str, list[Conversation]] = {}
    for record in records:
        metadata = record.metadata or {}
        groups.setdefault(str(metadata.get("source_id", record.id)), []).append(record)
    for candidates in groups.values():
        candidates.sort(key=lambda r: int((r.metadata or {}).get("sample", 0)))
    return groups


def score_of(record: Any) -> float | None:
    """A candidate's ``metadata.score`` (``None``: unscored)."""
    value = (record.metadata or {}).get("score")
    return None if value is None else float(value)


def _answer(record: Any) -> str:
    return record.turns[-1].content


def best_of(candidates: list[Any], ties: Ties = "first", min_score: float | None = None) -> list[Any]:
    """The best scored candidate(s) of one prompt (see the module docstring); [] when none qualifies."""
    scored = [(score_of(c), index, c) for index, c in enumerate(candidates) if score_of(c) is not None]
    if not scored:
        return []
    top = max(score for score, _, _ in scored)
    if min_score is not None and top < min_score:
        return []
    tied = [(index, c) for score, index, c in scored if score == top]
    if ties == "all":
        return [c for _, c in tied]
    if ties == "shortest":
        return [min(tied, key=lambda t: (len(_answer(t[1])), t[0]))[1]]
    if ties == "longest":
        return [min(tied, key=lambda t: (-len(_answer(t[1])), t[0]))[1]]
    return [tied[0][1]]


def select_best(records: Iterable[Any], ties: Ties = "first", min_score: float | None = None) -> list[Any]:
    """The best candidate(s) of every prompt, prompts in order."""
    return [best for candidates in group_candidates(records).values() for best in best_of(candidates, ties, min_score)]


def check_scored(record: Any, path: Path, pairs: str) -> None:
    from mllm import ConfigError

    if "score" not in (record.metadata or {}):
        raise ConfigError(f"{path}: record {record.id!r} has no score; pairs: {pairs} needs a generate stage with a "
                          "score rule, e.g. score: {rule: attributes, rules: description}")


class BestVsWorseConfig(ComponentConfig):
    """Keys of ``pairs: {name: best-vs-worse, min_gap: 2}``."""

    min_gap: float = Field(2.0, ge=0, description="the rejected candidate scores at least this much below the chosen")


class BestVsWorse:
    """The ``best-vs-worse`` pairing (see the module docstring)."""

    def __init__(self, config: BestVsWorseConfig | None = None) -> None:
        self.config = config or BestVsWorseConfig()

    def pairs(self, records: Iterable[Any], report: Any, source: Path) -> Iterator[Preference]:
        return best_vs_worse(records, report, source, self.config.min_gap)


def best_vs_worse(records: Iterable[Any], report: Any, path: Path, min_gap: float = 2.0) -> Iterator[Preference]:
    """Best-vs-worse Preference pairs (see the module docstring)."""
    kept = []
    for record in records:
        if not isinstance(record, Conversation):
            report.skip(file=path, row=f"id {record.id}", reason=f"record {record.id!r} is not a generated Conversation")
            continue
        check_scored(record, path, "best-vs-worse")
        kept.append(record)
    for source, candidates in group_candidates(kept).items():
        best = best_of(candidates, "first")
        if not best:
            continue
        chosen = best[0]
        top = score_of(chosen)
        worse = [(score_of(c), i, c) for i, c in enumerate(candidates)
                 if score_of(c) is not None and score_of(c) <= top - min_gap
                 and _answer(c).strip() and _answer(c).strip() != _answer(chosen).strip()]
        if not worse:
            continue
        low = min(score for score, _, _ in worse)
        rejected = next(c for score, _, c in worse if score == low)
        metadata = {"source_id": source, "pairs": "best-vs-worse", "chosen_id": chosen.id, "rejected_id": rejected.id}
        if "attributes" in chosen.metadata:  # the attributes rule's detail travels with the pair
            metadata.update(chosen_attributes=chosen.metadata.get("attributes"),
                            rejected_attributes=rejected.metadata.get("attributes"))
        yield Preference(
            id=f"{source}-bvw", prompt=tuple(chosen.turns[:-1]), chosen=_answer(chosen), rejected=_answer(rejected),
            images=chosen.images, scores={"chosen": top, "rejected": low}, metadata=metadata, check_files=False)
