"""The ``easyvqa-describe`` benchmark: describe an easy-VQA image in one sentence.

Items are the test images of the ``easyvqa-describe`` dataset (mllm-data): prompt
``<image>\\nDescribe the image in one sentence.``, gold ``The image shows a <colour> <shape>.``.

Metrics (no model needed, so saved answers can be re-scored):

* ``shape_accuracy``, ``colour_accuracy``: the answer names the image's shape / colour;
  ``both_accuracy``: it names both; ``exact_match``: it equals the gold sentence
  (case and surrounding space ignored);
* ``helpfulness`` ... ``verbosity`` and ``aggregate``: the mean rule attributes
  (:func:`mllm.scoring_attributes.description_attributes`; aggregate = Helpfulness +
  Correctness + Coherence, 0-12), the same rules a ``generate`` stage rates candidates with;
* ``mean_words``: answer length in words.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal, Sequence

from mllm.interfaces import ComponentConfig
from mllm.records import EvalItem
from mllm.scoring_attributes import ATTRIBUTES, aggregate, description_attributes, words
from pydantic import Field

from mllm_eval.easyvqa import split_files

# the same prompt, gold template and labels as mllm-data's easyvqa-describe dataset
# (mllm-eval does not depend on mllm-data, so the few lines are repeated here)
DESCRIBE_PROMPT = "<image>\nDescribe the image in one sentence."
SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")


def gold_sentence(colour: str, shape: str) -> str:
    return f"The image shows a {colour} {shape}."


def _label_from(question: str, answer: str, entry: dict[str, str]) -> None:
    """What one easy-VQA question and answer say about the image's shape and colour."""
    tokens = question.strip().lower().rstrip("?").split()
    if question.strip().lower().startswith("what"):
        if answer in SHAPES:
            entry["shape"] = answer
            named = [t for t in tokens if t in COLOURS]  # "what is the blue shape?" -> rectangle
            if named:
                entry.setdefault("colour", named[0])
        elif answer in COLOURS:
            entry["colour"] = answer
            named = [t for t in tokens if t in SHAPES]  # "what color is the circle?" -> red
            if named:
                entry.setdefault("shape", named[0])
        return
    negated = "not" in tokens or "no" in tokens
    if answer not in ("yes", "no") or (answer == "yes") == negated:
        return  # the thing asked about is absent
    for token in tokens:  # "is there a red shape?" yes / "does the image not contain a circle?" no
        if token in SHAPES:
            entry.setdefault("shape", token)
        elif token in COLOURS:
            entry.setdefault("colour", token)


@lru_cache(maxsize=4)
def image_labels(questions_file: str) -> dict[int, dict[str, str]]:
    """``{image id: {"shape", "colour"}}`` of the images whose questions tell both."""
    labels: dict[int, dict[str, str]] = {}
    for question, answer, image_id in json.loads(Path(questions_file).read_text()):
        _label_from(question, answer, labels.setdefault(int(image_id), {}))
    return {i: e for i, e in labels.items() if "shape" in e and "colour" in e}


class EasyVQADescribeBenchConfig(ComponentConfig):
    """Options of the ``easyvqa-describe`` benchmark."""

    split: Literal["train", "test"] = Field("test", description="test (1,000 images) or train (4,000)")
    limit: int | None = Field(None, ge=1, description="evaluate a seeded random subsample of this many images")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    max_new_tokens: int = Field(24, ge=1, description="generation budget per description")


class EasyVQADescribeBenchmark:
    """The ``easyvqa-describe`` benchmark (see the module docstring)."""

    metric_keys: ClassVar[tuple[str, ...]] = (
        "shape_accuracy", "colour_accuracy", "both_accuracy", "exact_match", *ATTRIBUTES, "aggregate", "mean_words")
    answer_mode = "generate"

    def __init__(self, config: EasyVQADescribeBenchConfig | None = None) -> None:
        self.config = config or EasyVQADescribeBenchConfig()
        self.max_new_tokens = self.config.max_new_tokens

    @classmethod
    def data_files(cls, config: EasyVQADescribeBenchConfig) -> list[Path]:
        questions, images = split_files(config.split)
        return [questions, images]

    def items(self) -> list[EvalItem]:
        questions_file, images_dir = split_files(self.config.split)
        labels = image_labels(str(questions_file))
        ids = sorted(labels)
        if self.config.limit is not None and self.config.limit < len(ids):
            ids = sorted(random.Random(self.config.seed).sample(ids, self.config.limit))
        return [EvalItem(id=f"easyvqa-describe-{self.config.split}-{i}", prompt=DESCRIBE_PROMPT,
                         images=(str(images_dir / f"{i}.png"),),
                         answer=gold_sentence(labels[i]["colour"], labels[i]["shape"]),
                         metadata={"shape": labels[i]["shape"], "colour": labels[i]["colour"], "image_id": i})
                for i in ids]

    def score(self, items: Sequence[EvalItem], answers: dict[str, str]) -> dict[str, float]:
        return score_descriptions(items, answers)


def score_descriptions(items: Sequence[EvalItem], answers: dict[str, str]) -> dict[str, float]:
    """The benchmark's metrics from answers keyed by item id (every item needs an answer and a gold)."""
    missing = [item.id for item in items if item.id not in answers]
    if missing:
        raise ValueError(f"easyvqa-describe: {len(missing)} of {len(items)} items have no answer, e.g. {missing[:3]}")
    if not items:
        raise ValueError("easyvqa-describe: no items to score")
    totals = {key: 0.0 for key in EasyVQADescribeBenchmark.metric_keys}
    for item in items:
        answer = answers[item.id]
        tokens = words(answer)
        gold_words = words(item.answer or "")
        shape = item.metadata.get("shape") or (gold_words[-1] if gold_words else "")
        colour = item.metadata.get("colour") or (gold_words[-2] if len(gold_words) > 1 else "")
        totals["shape_accuracy"] += shape in tokens
        totals["colour_accuracy"] += colour in tokens
        totals["both_accuracy"] += shape in tokens and colour in tokens
        totals["exact_match"] += answer.strip().lower() == (item.answer or "").strip().lower()
        scores = description_attributes(answer, item.answer)
        for name in ATTRIBUTES:
            totals[name] += scores[name]
        totals["aggregate"] += aggregate(scores)
        totals["mean_words"] += len(tokens)
    return {key: value / len(items) for key, value in totals.items()}
