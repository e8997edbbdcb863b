"""Helpers shared by this package's benchmarks (no torch)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mllm import EvalItem

from mllm_eval._io import ScoreInputError
from mllm_eval.judges import JudgeError, build_judge


def image_path(folder: str | None, name: str, benchmark: str) -> str:
    """``folder/name``; a clear error when no image folder is configured."""
    if not folder:
        raise ScoreInputError(
            f"{benchmark}: items() needs the images; set image_folder to the folder holding them "
            f"(score-only use from answer files needs none: mllm eval score {benchmark} ...)"
        )
    return os.path.join(folder, name)


def answers_by_id(items: Sequence[EvalItem], answers: Mapping[str, str], benchmark: str) -> dict[str, str]:
    """The answers of ``items``; an error counting and naming the items without one."""
    missing = [item.id for item in items if item.id not in answers]
    if missing:
        raise ScoreInputError(
            f"{benchmark}: {len(missing)} of {len(items)} question(s) have no answer "
            f"(first: {', '.join(missing[:5])}); answer every question or pass the matching question file"
        )
    return {item.id: answers[item.id] for item in items}


def row_id(row: Mapping[str, Any]) -> str | None:
    """The question id of an answer row: ``question_id`` (LLaVA's files) or ``id`` (an eval
    stage's ``answers.jsonl``), as a string; ``None`` when it has neither."""
    for key in ("question_id", "id"):
        if key in row and row[key] is not None:
            return str(row[key])
    return None


def answer_text(row: Mapping[str, Any], path: Path, option: str, index: int) -> str:
    for key in ("text", "pred", "answer", "response"):
        if key in row and isinstance(row[key], str):
            return row[key]
    raise ScoreInputError(
        f"{option} {os.fspath(path)!r} row {index + 1} has no answer text; expected JSON Lines "
        "{\"question_id\": ..., \"text\": \"<the model's answer>\"}"
    )


def get_judge(judge: Any, benchmark: str, cache: str | os.PathLike | None = None) -> Any:
    """A judge object from a config dict or an object with ``complete``; ``cache``: the
    verdict cache of a judge built here whose config sets none."""
    if judge is None:
        raise ScoreInputError(
            f"{benchmark}: scoring answers needs a judge; configure judge: {{name: openai, model: ...}} "
            "(or pass --judge to mllm eval score), or score the judge's saved output with --grades/--reviews"
        )
    if hasattr(judge, "complete"):
        return judge
    return build_judge(judge, cache=cache)


class UnreadVerdictsError(JudgeError, ScoreInputError):
    """Too many of a judge's verdicts (live, or read from a saved file) could not be read."""


class JudgedBenchmark:
    """What the judged benchmarks share: a verdict cache and a limit on unparsed verdicts.

    The eval stage calls :meth:`cache_judge_verdicts` with a file beside each model's
    answers, so a re-run asks the judge only for the verdicts it had not given yet;
    :meth:`check_unparsed` fails the scoring (and so the stage) when more than the
    config's ``max_unparsed_fraction`` of the verdicts could not be read, instead of
    reporting figures made of unread verdicts.
    """

    name: str = "benchmark"
    config: Any
    _judge: Any
    _judge_cache: Path | None = None

    def cache_judge_verdicts(self, path: str | os.PathLike | None) -> None:
        """Cache the verdicts of a judge built from the config in ``path`` (``None``: no default cache)."""
        self._judge_cache = Path(path) if path is not None else None

    def judge(self) -> Any:
        """The judge: the one given to the constructor, or one built from the config."""
        return get_judge(self._judge or self.config.judge, self.name, cache=self._judge_cache)

    def check_unparsed(self, unparsed: float, total: float, what: str = "judge verdicts could not be read") -> None:
        """An :class:`UnreadVerdictsError` when ``unparsed`` of ``total`` is over the limit."""
        limit = self.config.max_unparsed_fraction
        if limit is not None and total and unparsed / total > limit:
            raise UnreadVerdictsError(
                f"{self.name}: {unparsed:.0f} of {total:.0f} {what}, more than max_unparsed_fraction {limit:g}",
                hint="check the judge's replies (its model and endpoint), or raise the benchmark's "
                     "max_unparsed_fraction (none: never fail)")


MAX_UNPARSED_DOC = ("fail the scoring (and the eval stage) when more than this share of the judge's verdicts "
                    "cannot be read; none: never fail")


def judge_provenance(judge: Any) -> dict[str, str]:
    """``{"judge": name, "judge_model": model}`` of a judge config or object (empty without one).

    Recorded beside the metrics so a reader knows which judge (and which model version)
    graded them; never a key or an endpoint secret.
    """
    if judge is None:
        return {}
    if isinstance(judge, Mapping):
        name = str(judge.get("name", ""))
        model = judge.get("model") or judge.get("path")
    else:
        name = type(judge).__name__
        config = getattr(judge, "config", None)
        model = getattr(config, "model", None) or getattr(config, "path", None) or getattr(judge, "model", None)
    out = {"judge": name} if name else {}
    if model:
        out["judge_model"] = str(model)
    return out
