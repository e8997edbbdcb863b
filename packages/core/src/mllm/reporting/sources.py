"""What a browsable report reads from a run folder: training logs and every model's answers.

Only files the stages wrote are read, so a report can be rebuilt for any run folder
(``mllm report RUN``) without the pipeline file: ``<stage>/train_log.jsonl`` of training
stages, ``<stage>/<model>/<benchmark>/answers.jsonl`` of eval stages (one line per
item: id, prompt, images, answer, gold), and ``<stage>/metrics.json``.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAIN_LOG = "train_log.jsonl"
ANSWERS = "answers.jsonl"
STAGE_STATE = "stage.json"
PREFERENCE_KEYS = ("rewards/margins", "rewards/accuracies")

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str | None) -> str:
    """Lowercase, punctuation dropped, whitespace collapsed: how the browser compares answers."""
    return " ".join(_PUNCT.sub(" ", (text or "").lower()).split())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file; a torn last line (an interrupted write) is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


@dataclass
class Item:
    """One benchmark question with every model's answer."""

    id: str
    prompt: str
    images: list[str]
    gold: str | None
    answers: dict[str, str] = field(default_factory=dict)

    def wrong(self, model: str) -> bool:
        """The model answered and its answer differs from the gold one (items without gold are never wrong)."""
        return self.gold is not None and model in self.answers and normalize(self.answers[model]) != normalize(self.gold)

    @property
    def disagree(self) -> bool:
        return len({normalize(a) for a in self.answers.values()}) > 1


@dataclass
class BenchmarkAnswers:
    """One benchmark's items (first-seen order) and the models that answered them."""

    name: str
    models: list[str] = field(default_factory=list)
    items: dict[str, Item] = field(default_factory=dict)

    def add(self, model: str, rows: list[dict[str, Any]]) -> None:
        if model not in self.models:
            self.models.append(model)
        for row in rows:
            item_id = str(row.get("id"))
            item = self.items.get(item_id)
            if item is None:
                item = self.items[item_id] = Item(item_id, str(row.get("prompt", "")),
                                                  [str(p) for p in row.get("images") or []],
                                                  None if row.get("gold") is None else str(row["gold"]))
            item.answers[model] = str(row.get("answer", ""))


def ordered_stages(run_dir: Path) -> list[str]:
    """The stage folders of a run, in the order they started (``stage.json``), ``init`` first."""
    found = []
    for child in run_dir.iterdir() if run_dir.is_dir() else []:
        state = child / STAGE_STATE
        if child.is_dir() and not child.name.startswith(".") and state.is_file():
            try:
                started = float(json.loads(state.read_text()).get("started", 0.0))
            except (OSError, ValueError, AttributeError):
                started = 0.0
            found.append((child.name != "init", started, child.name))
    return [name for _, _, name in sorted(found)]


def train_log(stage_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``train_log.jsonl`` with a step (empty when the stage logged none)."""
    path = stage_dir / TRAIN_LOG
    return [row for row in read_jsonl(path) if isinstance(row.get("step"), (int, float))] if path.is_file() else []


def eval_answers(stage_dir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{benchmark: {model: answers rows}}`` of one eval stage folder."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in sorted(stage_dir.glob(f"*/*/{ANSWERS}")):
        model, benchmark = path.parent.parent.name, path.parent.name
        out.setdefault(benchmark, {})[model] = read_jsonl(path)
    return out


def collect_answers(run_dir: Path, stage_ids: list[str]) -> dict[str, BenchmarkAnswers]:
    """Every benchmark's answers over the eval stages among ``stage_ids`` (a later stage's
    answers of the same model and benchmark win, as in report.json)."""
    benchmarks: dict[str, BenchmarkAnswers] = {}
    for stage_id in stage_ids:
        for benchmark, per_model in eval_answers(run_dir / stage_id).items():
            target = benchmarks.setdefault(benchmark, BenchmarkAnswers(benchmark))
            for model, rows in per_model.items():
                target.add(model, rows)
    return benchmarks


def collect_metrics(run_dir: Path, stage_ids: list[str]) -> dict[str, Any]:
    """report.json's shape, from the folders alone: ``{"models": ..., "training": ...}``.

    An eval stage is one with answers; a training stage one with a saved model."""
    models: dict[str, dict[str, Any]] = {}
    training: dict[str, Any] = {}
    for stage_id in stage_ids:
        stage_dir = run_dir / stage_id
        try:
            metrics = json.loads((stage_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = {}
        if any(stage_dir.glob(f"*/*/{ANSWERS}")):
            for model_id, per_benchmark in metrics.items():
                if isinstance(per_benchmark, dict):
                    models.setdefault(model_id, {}).update(per_benchmark)
        elif stage_id != "init" and (stage_dir / "model").is_dir():
            training[stage_id] = metrics
    return {"models": models, "training": training}
