"""The ``easyvqa-describe`` benchmark: describe an easy-VQA image in one sentence.

Items are the test images of the ``easyvqa-describe`` dataset (:mod:`mllm_align.steerlm.describe_data`): prompt
``<image>\\nDescribe the image in one sentence.``, gold ``The image shows a <colour> <shape>.``.

Metrics (no model needed, so saved answers can be re-scored):

* ``shape_accuracy``, ``colour_accuracy``: the answer names the image's shape / colour;
  ``both_accuracy``: it names both; ``exact_match``: it equals the gold sentence
  (case and surrounding space ignored);
* ``helpfulness`` ... ``verbosity`` and ``aggregate``: the mean rule attributes
  (:func:`mllm_align.steerlm.description.description_attributes`; aggregate = Helpfulness +
  Correctness + Coherence, 0-12), the same rules a ``generate`` stage rates candidates with;
* ``mean_words``: answer length in words;
* ``hallucination_rate`` (SHR's analogue, by rule, no judge): the share of answers that name a
  colour or shape the image does not have, that is any of easy-VQA's eight colours (red, green,
  blue, black, gray, teal, brown, yellow) or three shapes (circle, rectangle, triangle) other
  than the image's own colour and shape, as a whole word, case ignored
  (:func:`mllm_align.steerlm.description.hallucinated_words`). "The image shows a red circle."
  of a blue circle counts, as does "a blue circle and a red one"; naming nothing, or only the
  image's own colour and shape, does not; words outside that vocabulary ("grey", "square",
  "dog") are not counted. One description counts once, however many wrong words it has.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar, Literal, Sequence

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_align.steerlm.attributes import ATTRIBUTES, aggregate
from mllm_align.steerlm.describe_data import EasyVQADescribe, describe_prompt, described_images, gold_sentence
from mllm_align.steerlm.description import description_attributes, hallucinated_words, words


class EasyVQADescribeBenchConfig(ComponentConfig):
    """Options of the ``easyvqa-describe`` benchmark."""

    split: Literal["train", "test"] = Field("test", description="test (1,000 images) or train (4,000)")
    limit: int | None = Field(None, ge=1, description="evaluate a seeded random subsample of this many images")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    max_new_tokens: int = Field(24, ge=1, description="generation budget per description")


class EasyVQADescribeBenchmark:
    """The ``easyvqa-describe`` benchmark (see the module docstring)."""

    metric_keys: ClassVar[tuple[str, ...]] = (
        "shape_accuracy", "colour_accuracy", "both_accuracy", "exact_match", *ATTRIBUTES, "aggregate", "mean_words",
        "hallucination_rate")
    answer_mode = "generate"

    def __init__(self, config: EasyVQADescribeBenchConfig | None = None) -> None:
        self.config = config or EasyVQADescribeBenchConfig()
        self.max_new_tokens = self.config.max_new_tokens

    @classmethod
    def data_files(cls, config: EasyVQADescribeBenchConfig) -> list[Path]:
        return EasyVQADescribe.data_files(config)

    def items(self) -> list[EvalItem]:
        ids, labels, images_dir = described_images(self.config.split)
        if self.config.limit is not None and self.config.limit < len(ids):
            ids = sorted(random.Random(self.config.seed).sample(ids, self.config.limit))
        return [EvalItem(id=f"easyvqa-describe-{self.config.split}-{i}", prompt=describe_prompt(),
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
        totals["hallucination_rate"] += bool(hallucinated_words(answer, colour, shape))
    return {key: value / len(items) for key, value in totals.items()}
