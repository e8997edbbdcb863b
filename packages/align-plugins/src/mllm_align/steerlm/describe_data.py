"""easy-VQA description: a stand-in task whose answers are sentences, not single words.

Each easy-VQA image shows one coloured shape; its shape and colour are read from the
answers of the split's questions (open ones name them; a yes/no answer confirms one). One
Conversation per image::

    USER: <image>\\nDescribe the image in one sentence.
    ASSISTANT: The image shows a red circle.

The gold sentence is a template (:func:`gold_sentence`) naming the colour and shape, so
answers can be rated by rules (``score: {rule: attributes, rules: description}`` in a
generate stage: correctness from the shape and colour named, verbosity from length,
coherence from well-formedness; see :mod:`mllm_align.steerlm.description`). The
``easyvqa-describe`` benchmark (:mod:`mllm_align.steerlm.describe_benchmark`) asks the same prompt on the test split.

``questions_per_image: n`` adds the first n easy-VQA questions of each selected image
(the ``easyvqa`` dataset's records; ``null``: all of them), so one SFT stage learns both
answer styles.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Iterator, Literal

from mllm import IMAGE_TOKEN, Conversation, DataReport, DatasetConfig, Turn
from mllm_data import format_prompt, select_rows, split_files
from pydantic import Field

DESCRIBE_PROMPT = "Describe the image in one sentence."
SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")


def describe_prompt() -> str:
    """``<image>\\nDescribe the image in one sentence.``"""
    return f"{IMAGE_TOKEN}\n{DESCRIBE_PROMPT}"


def gold_sentence(colour: str, shape: str) -> str:
    """``The image shows a red circle.``"""
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
    """``{image id: {"shape": ..., "colour": ...}}`` from the answers of a split's questions
    (open questions name them; a yes/no question confirms the shape or colour it asks about)."""
    labels: dict[int, dict[str, str]] = {}
    for question, answer, image_id in json.loads(Path(questions_file).read_text()):
        _label_from(question, answer, labels.setdefault(int(image_id), {}))
    return labels


def described_images(split: str) -> tuple[list[int], dict[int, dict[str, str]], Path]:
    """Image ids (sorted) whose shape and colour are both known, their labels, the images folder."""
    questions_file, images_dir = split_files(split)
    labels = image_labels(str(questions_file))
    ids = sorted(i for i, entry in labels.items() if "shape" in entry and "colour" in entry)
    return ids, labels, images_dir


class EasyVQADescribeConfig(DatasetConfig):
    """Options of the ``easyvqa-describe`` dataset."""

    split: Literal["train", "test"] = Field("train", description="train (4,000 images) or test (1,000)")
    limit: int | None = Field(None, ge=1, description="keep a seeded random subsample of this many images")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    questions_per_image: int | None = Field(0, ge=0, description="also yield this many easy-VQA questions of each "
                                                                 "selected image (file order); none: all of them")


class EasyVQADescribe:
    """The ``easyvqa-describe`` dataset: one description Conversation per image (see the module docstring)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: EasyVQADescribeConfig | None = None) -> None:
        self.config = config or EasyVQADescribeConfig()

    @classmethod
    def data_files(cls, config: EasyVQADescribeConfig) -> list[Path]:
        questions, images = split_files(config.split)
        return [questions, images]

    def records(self, report: DataReport) -> Iterator[Conversation]:
        split = self.config.split
        ids, labels, images_dir = described_images(split)
        chosen = [ids[i] for i in select_rows(len(ids), self.config.limit, self.config.seed)]
        for image_id in chosen:
            record = None
            with report.row(file=images_dir, row=f"image {image_id}"):
                entry = labels[image_id]
                record = Conversation(
                    id=f"easyvqa-describe-{split}-{image_id}",
                    turns=(Turn("user", describe_prompt()),
                           Turn("assistant", gold_sentence(entry["colour"], entry["shape"]))),
                    images=(str(images_dir / f"{image_id}.png"),),
                    metadata={"image_id": image_id, "shape": entry["shape"], "colour": entry["colour"]},
                )
            if record is not None:
                yield record
        if self.config.questions_per_image != 0:
            yield from self._questions(set(chosen), report)

    def _questions(self, image_ids: set[int], report: DataReport) -> Iterator[Conversation]:
        questions_file, images_dir = split_files(self.config.split)
        rows = json.loads(questions_file.read_text())
        per_image = self.config.questions_per_image
        taken: dict[int, int] = {}
        for index, (question, answer, image_id) in enumerate(rows):
            if int(image_id) not in image_ids or (per_image is not None and taken.get(int(image_id), 0) >= per_image):
                continue
            taken[int(image_id)] = taken.get(int(image_id), 0) + 1
            record = None
            with report.row(file=questions_file, row=index):
                record = Conversation(
                    id=f"easyvqa-{self.config.split}-{index}",
                    turns=(Turn("user", format_prompt(question)), Turn("assistant", answer)),
                    images=(str(images_dir / f"{int(image_id)}.png"),),
                    metadata={"question": question, "answer": answer, "image_id": int(image_id)},
                )
            if record is not None:
                yield record
