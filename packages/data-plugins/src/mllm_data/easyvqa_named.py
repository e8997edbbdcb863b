"""easy-VQA's shapes as named individuals: the ``easyvqa-named`` dataset (personal facts).

A personal-knowledge study at CPU scale: a few (colour, shape) combinations of easy-VQA
are given invented names, as a user would name the people in their photos, and the
model is asked who is in a picture. The default individuals (:data:`DEFAULT_NAMES`)::

    red circle -> zorp     red triangle -> mib       blue rectangle -> talu
    blue circle -> kiv     green triangle -> dax     yellow rectangle -> fen

Two share a colour with another and two a shape, so a name is known only from colour
and shape together. No name is an easy-VQA answer, and each starts with its own letter.

The facts of an image (its colour and its shape) come from the split's own open
questions about it ("what color is the shape?" -> "red", "what is the red shape?" ->
"circle"); an image whose questions do not give both is left out (about 4 in 10 are).
Every image of a named combination becomes ``questions_per_image`` single-turn
Conversations in the easy-VQA short-answer format (:func:`mllm_data.easyvqa.format_prompt`)::

    USER: <image>\\nWho is this?\\nAnswer the question using a single word or phrase.
    ASSISTANT: zorp

The phrasings (:data:`QUESTIONS`) rotate from image to image, so with one question per
image each phrasing is still seen. Train has 634 images of the default individuals, test
132 (new images of the same individuals: the ``easyvqa-named`` benchmark of mllm-eval).
Ids are ``easyvqa-named-<split>-<image id>-q<phrasing>``; ``limit`` keeps a seeded
random subsample of the records, in order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Iterator, Literal

from mllm import Conversation, DataReport, DatasetConfig, Turn
from pydantic import Field, field_validator

from mllm_data.easyvqa import COLOURS, SHAPES, format_prompt, select_rows, split_files
from mllm_data.easyvqa import image_facts as easyvqa_image_facts

#: the individuals: "colour shape" -> name
DEFAULT_NAMES = {
    "red circle": "zorp",
    "red triangle": "mib",
    "blue rectangle": "talu",
    "blue circle": "kiv",
    "green triangle": "dax",
    "yellow rectangle": "fen",
}
#: the ways a record asks who is in the picture (rotated over the images)
QUESTIONS = ("Who is this?", "What is this one's name?", "Name the one in the picture.")
_NAME = re.compile(r"[a-z]+( [a-z]+)*")


def check_names(names: dict[str, str]) -> dict[str, str]:
    """``names`` as given, or a ValueError naming the entry that is not ``"colour shape": name``."""
    if not names:
        raise ValueError("give at least one individual, e.g. {'red circle': 'zorp'}")
    taken: dict[str, str] = {}
    answers = set(COLOURS) | set(SHAPES) | {"yes", "no"}
    for key, name in names.items():
        parts = key.split()
        if len(parts) != 2 or parts[0] not in COLOURS or parts[1] not in SHAPES:
            raise ValueError(f"{key!r} is not 'colour shape'; colours are {list(COLOURS)}, shapes {list(SHAPES)}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"the name of {key!r}, {name!r}, must be lowercase letters (words split by one space), "
                             "as answers are compared after lowercasing and removing punctuation")
        if name in answers:
            raise ValueError(f"the name of {key!r}, {name!r}, is an easy-VQA answer; choose an invented word")
        if name in taken:
            raise ValueError(f"{taken[name]!r} and {key!r} are both named {name!r}; give each its own name")
        taken[name] = key
    return names


def image_facts(split: str) -> dict[int, tuple[str, str]]:
    """``{image id: (colour, shape)}`` of the split's images whose open questions give both
    (easy-VQA's facts, strictly: a malformed row or a contradiction is an error)."""
    questions_file, _ = split_files(split)
    facts = easyvqa_image_facts(questions_file, strict=True)
    return {i: (f["colour"], f["shape"]) for i, f in sorted(facts.items()) if "colour" in f and "shape" in f}


def named_images(split: str, names: dict[str, str]) -> list[tuple[int, str, str, str]]:
    """``(image id, colour, shape, name)`` of every image of a named individual, by image id."""
    return [(i, colour, shape, names[f"{colour} {shape}"]) for i, (colour, shape) in image_facts(split).items()
            if f"{colour} {shape}" in names]


class EasyVQANamedConfig(DatasetConfig):
    """Options of the ``easyvqa-named`` dataset."""

    split: Literal["train", "test"] = Field("train", description="train (634 images of the default individuals) "
                                                                 "or test (132 new images of them)")
    limit: int | None = Field(None, ge=1, description="keep a seeded random subsample of this many records")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NAMES),
                                  description="the individuals, 'colour shape' -> invented name (default: 6, "
                                              "red circle -> zorp, ...; see the module docstring)")
    questions_per_image: int = Field(1, ge=1, le=len(QUESTIONS),
                                     description="records per image, each a different phrasing of 'who is this?'")

    @field_validator("names")
    @classmethod
    def _check_names(cls, value: dict[str, str]) -> dict[str, str]:
        return check_names(value)


class EasyVQANamed:
    """The ``easyvqa-named`` dataset: "who is this?" about easy-VQA images of named individuals."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: EasyVQANamedConfig | None = None) -> None:
        self.config = config or EasyVQANamedConfig()

    @classmethod
    def data_files(cls, config: EasyVQANamedConfig) -> list[Path]:
        questions, images = split_files(config.split)
        return [questions, images]

    def rows(self) -> list[tuple[int, str, str, str, int]]:
        """``(image id, colour, shape, name, phrasing)`` of every record, subsampled by ``limit``."""
        config = self.config
        rows = [(image, colour, shape, name, (position + j) % len(QUESTIONS))
                for position, (image, colour, shape, name) in enumerate(named_images(config.split, config.names))
                for j in range(config.questions_per_image)]
        return [rows[i] for i in select_rows(len(rows), config.limit, config.seed)]

    def records(self, report: DataReport) -> Iterator[Conversation]:
        questions_file, images_dir = split_files(self.config.split)
        for image_id, colour, shape, name, phrasing in self.rows():
            record_id = f"easyvqa-named-{self.config.split}-{image_id}-q{phrasing}"
            record = None
            with report.row(file=questions_file, row=f"image {image_id}", id=record_id):
                question = QUESTIONS[phrasing]
                record = Conversation(
                    id=record_id,
                    turns=(Turn("user", format_prompt(question)), Turn("assistant", name)),
                    images=(str(images_dir / f"{image_id}.png"),),
                    metadata={"question": question, "answer": name, "image_id": image_id, "colour": colour,
                              "shape": shape, "individual": f"{colour} {shape}"},
                )
            if record is not None:
                yield record
