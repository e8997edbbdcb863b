"""The ``easyvqa-named`` benchmark: does the model know the named individuals on new images?

The items are the ``easyvqa-named`` dataset's records (mllm-data) of the test split by
default: new easy-VQA images of the same named (colour, shape) individuals the dataset
teaches on train, asked the same way::

    <image>\\nWho is this?\\nAnswer the question using a single word or phrase.   -> zorp

``questions_per_image`` (default 3: every phrasing) and ``names`` are the dataset's keys;
set ``names`` to the mapping the model was taught, if it is not the default one.
``answer_mode: choice`` picks the likeliest of the individuals' names (the closed set is
the same for every item, so it gives nothing away about the image).

Metrics: ``accuracy`` (exact match after normalising both answers: lowercase,
punctuation removed, whitespace collapsed, as the ``easyvqa`` benchmark) and ``count``.
``score`` needs no model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence

from mllm import ComponentConfig, EvalItem
from pydantic import Field, field_validator

from mllm_eval._base import answers_by_id
from mllm_eval._io import ScoreInputError
from mllm_eval.easyvqa import normalize_answer


class EasyVQANamedBenchConfig(ComponentConfig):
    """Options of the ``easyvqa-named`` benchmark."""

    split: Literal["train", "test"] = Field("test", description="test (new images of the individuals) or train")
    limit: int | None = Field(None, ge=1, description="evaluate a seeded random subsample of this many questions")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    names: dict[str, str] | None = Field(None, description="the individuals, 'colour shape' -> name (default: the "
                                                           "dataset's 6, red circle -> zorp, ...)")
    questions_per_image: int = Field(3, ge=1, le=3, description="questions per image, each a different phrasing")
    answer_mode: Literal["generate", "choice"] = Field(
        "generate", description="generate: greedy answers; choice: the likeliest of the individuals' names")
    max_new_tokens: int = Field(8, ge=1, description="generation budget per answer (a name is one word)")

    @field_validator("names")
    @classmethod
    def _check_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        from mllm_data import check_names

        # the dataset's rule, checked when the pipeline is validated
        return None if value is None else check_names(value)


def score_answers(items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
    """Exact-match accuracy of ``answers`` (keyed by item id) over ``items``, and their count."""
    answers = answers_by_id(items, answers, "easyvqa-named")
    if not items:
        raise ScoreInputError("easyvqa-named: no questions to score")
    hits = [float(normalize_answer(answers[item.id]) == normalize_answer(item.answer or "")) for item in items]
    return {"accuracy": sum(hits) / len(hits), "count": float(len(hits))}


class EasyVQANamedBenchmark:
    """The ``easyvqa-named`` benchmark (see the module docstring)."""

    metric_keys: ClassVar[tuple[str, ...]] = ("accuracy", "count")

    def __init__(self, config: EasyVQANamedBenchConfig | None = None) -> None:
        self.config = config or EasyVQANamedBenchConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens

    def _dataset(self) -> Any:
        from mllm_data import EasyVQANamed, EasyVQANamedConfig

        config = self.config
        options = {"split": config.split, "limit": config.limit, "seed": config.seed,
                   "questions_per_image": config.questions_per_image}
        if config.names is not None:
            options["names"] = config.names
        return EasyVQANamed(EasyVQANamedConfig(**options))

    @classmethod
    def data_files(cls, config: EasyVQANamedBenchConfig) -> list[Path]:
        from mllm_data import split_files

        questions, images = split_files(config.split)
        return [questions, images]

    def items(self) -> list[EvalItem]:
        from mllm import DataReport

        dataset = self._dataset()
        names = tuple(dataset.config.names.values())
        report = DataReport(source=f"benchmark 'easyvqa-named' ({self.config.split})")
        items = [EvalItem(id=record.id, prompt=record.turns[0].content, images=record.images,
                          answer=record.turns[1].content, choices=names, metadata=dict(record.metadata))
                 for record in dataset.records(report)]
        report.finish()
        return items

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
        return score_answers(items, answers)
