"""Helpers shared by this package's benchmarks (no torch)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mllm import EvalItem

from mllm_eval._io import ScoreInputError


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


def get_judge(judge: Any, benchmark: str) -> Any:
    """A judge object from a config dict or an object with ``complete``."""
    if judge is None:
        raise ScoreInputError(
            f"{benchmark}: scoring answers needs a judge; configure judge: {{name: openai, model: ...}} "
            "(or pass --judge to mllm eval score), or score the judge's saved output with --grades/--reviews"
        )
    if hasattr(judge, "complete"):
        return judge
    from mllm_eval.judges import build_judge

    return build_judge(judge)


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
