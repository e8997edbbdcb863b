"""The ``image-qa`` benchmark: exact-match accuracy on an image-qa-folder question file.

Questions are read exactly as the ``image-qa-folder`` dataset reads them (one JSON object
a line: ``{"question_id", "image", "text", "answer"}``, images relative to
``image_folder``, default the file's folder), so one file can teach facts (dataset
``image-qa-folder``) and test them (this benchmark), as the personalisation study does:

```yaml
benchmarks:
  - name: image-qa
    path: /data/facts/test.jsonl            # question_id, image, text, answer per line
    image_folder: /data/facts/images        # default: the folder of path
    prompt_suffix: "Answer the question using a single word or phrase."
    limit: 200                              # optional seeded subsample
```

Metrics: ``accuracy`` (share of answers equal to the gold answer after normalising both:
lowercase, punctuation removed, whitespace collapsed), ``contains_accuracy`` (the gold
answer occurs as whole words in the answer: lenient for chatty models), ``count``, and
``accuracy_<category>`` for each value of a row's ``category`` key. Rows without an
``answer`` cannot be scored and are an error. ``score`` needs no model:
``mllm eval score image-qa --questions q.jsonl --answers a.jsonl``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import answers_by_id
from mllm_eval._io import ScoreInputError
from mllm_eval.easyvqa import normalize_answer


class ImageQAConfig(ComponentConfig):
    """Options of the ``image-qa`` benchmark."""

    path: str | None = Field(None, description="JSON Lines question file: question_id, image, text, answer per line")
    image_folder: str | None = Field(None, description="folder of the images (default: the folder of path)")
    prompt_suffix: str | None = Field(None, description="text appended to every question on a new line")
    choices: list[str] | None = Field(None, description="closed answer set (for answer_mode: choice)")
    limit: int | None = Field(None, ge=1, description="evaluate a seeded random subsample of this many questions")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    answer_mode: Literal["generate", "choice"] = Field(
        "generate", description="generate: greedy answers; choice: the likeliest of `choices`")
    max_new_tokens: int = Field(16, ge=1, description="generation budget per answer")


def _contains(answer: str, gold: str) -> bool:
    return bool(gold) and re.search(rf"(^| ){re.escape(gold)}( |$)", answer) is not None


def score_answers(items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
    """Exact-match (and contains) accuracy of ``answers`` (keyed by item id) over ``items``."""
    answers = answers_by_id(items, answers, "image-qa")
    if not items:
        raise ScoreInputError("image-qa: no questions to score")
    hits: list[float] = []
    contains: list[float] = []
    per_category: dict[str, list[float]] = defaultdict(list)
    for item in items:
        if item.answer is None:
            raise ScoreInputError(f"image-qa: question {item.id!r} has no gold answer; every row needs 'answer'")
        gold, predicted = normalize_answer(item.answer), normalize_answer(answers[item.id])
        hit = float(predicted == gold)
        hits.append(hit)
        contains.append(float(_contains(predicted, gold)))
        category = item.metadata.get("category")
        if category is not None:
            per_category[str(category)].append(hit)
    metrics = {"accuracy": sum(hits) / len(hits), "contains_accuracy": sum(contains) / len(contains),
               "count": float(len(hits))}
    for category, values in sorted(per_category.items()):
        metrics[f"accuracy_{category}"] = sum(values) / len(values)
    return metrics


class ImageQA:
    """The ``image-qa`` benchmark (see the module docstring)."""

    metric_keys: ClassVar[tuple[str, ...]] = ("accuracy", "contains_accuracy", "count")
    score_inputs: ClassVar[dict[str, str]] = {
        "answers": "answers, JSON Lines {question_id, text}",
        "questions": "the question file, JSON Lines {question_id, image, text, answer}",
    }

    def __init__(self, config: ImageQAConfig | None = None) -> None:
        self.config = config or ImageQAConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens

    @classmethod
    def data_files(cls, config: ImageQAConfig) -> list[Path]:
        return [Path(config.path).expanduser()] if config.path else []

    def _dataset(self, *, check_images: bool) -> Any:
        from mllm_data import ImageQAFolder, ImageQAFolderConfig

        config = self.config
        if not config.path:
            raise ScoreInputError("image-qa: set path to the JSON Lines question file (question_id, image, text, answer)")
        return ImageQAFolder(ImageQAFolderConfig.model_validate({
            "path": config.path, "image_folder": config.image_folder, "as": "eval_item",
            "prompt_suffix": config.prompt_suffix, "choices": config.choices, "limit": config.limit,
            "seed": config.seed, "check_images": check_images,
        }))

    def _items(self, *, check_images: bool) -> list[EvalItem]:
        from mllm import DataReport

        report = DataReport(source=f"benchmark 'image-qa' ({self.config.path})")
        items = list(self._dataset(check_images=check_images).records(report))
        report.finish()
        return items

    def items(self) -> list[EvalItem]:
        return self._items(check_images=True)

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
        return score_answers(items, answers)

    @classmethod
    def score_files(cls, *, answers: str | None = None, questions: str | None = None,
                    config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Score an answer file (JSON Lines ``{question_id, text}``) against the question file's answers."""
        from mllm_eval.scienceqa import load_answers

        bench = cls(ImageQAConfig(**{**(config or {}), "path": questions}))
        return score_answers(bench._items(check_images=False), load_answers(answers))
