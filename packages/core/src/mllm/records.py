"""The data records that flow between plugins.

A dataset turns its source into these records; methods and benchmarks consume them.
Records validate themselves when created, so a bad row fails at the dataset that made
it, with the row's id in the message, not deep inside a training step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from mllm.errors import RecordError

IMAGE_TOKEN = "<image>"

Role = Literal["user", "assistant"]
ImageRef = Union[str, os.PathLike]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: Role
    content: str


def _check_images(record_id: str, images: tuple[ImageRef, ...], texts: list[str], check_files: bool) -> None:
    placeholders = sum(text.count(IMAGE_TOKEN) for text in texts)
    if placeholders != len(images):
        raise RecordError(
            f"record {record_id!r}: {placeholders} {IMAGE_TOKEN} placeholder(s) in the text but "
            f"{len(images)} image(s); put one {IMAGE_TOKEN} in a user turn per image"
        )
    if check_files:
        for image in images:
            if not os.path.isfile(image):
                raise RecordError(f"record {record_id!r}: image file {os.fspath(image)!r} does not exist")


def _check_turns(record_id: str, turns: tuple[Turn, ...], *, must_end_with_assistant: bool) -> None:
    if not turns:
        raise RecordError(f"record {record_id!r}: no turns; a conversation needs at least one user turn")
    for index, turn in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if turn.role != expected:
            raise RecordError(
                f"record {record_id!r}: turn {index} has role {turn.role!r} but {expected!r} was expected; "
                "turns must alternate user/assistant, starting with user"
            )
        if not isinstance(turn.content, str):
            raise RecordError(f"record {record_id!r}: turn {index} content is not text")
    if must_end_with_assistant and turns[-1].role != "assistant":
        raise RecordError(f"record {record_id!r}: the last turn must be the assistant's answer")
    if not must_end_with_assistant and turns[-1].role != "user":
        raise RecordError(f"record {record_id!r}: a prompt must end with a user turn")


@dataclass(frozen=True)
class Conversation:
    """Images plus alternating user/assistant turns (the LLaVA JSON shape).

    ``images`` are file paths; each needs one ``<image>`` placeholder in the text.
    """

    id: str
    turns: tuple[Turn, ...]
    images: tuple[ImageRef, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    check_files: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(self.turns))
        object.__setattr__(self, "images", tuple(self.images))
        _check_turns(self.id, self.turns, must_end_with_assistant=True)
        _check_images(self.id, self.images, [t.content for t in self.turns], self.check_files)


@dataclass(frozen=True)
class Preference:
    """A prompt with a chosen and a rejected answer, as DPO consumes it.

    ``reference_logps`` is ``(chosen, rejected)`` when precomputed; ``scores`` holds
    optional attribute scores (SteerLM's Helpfulness, Correctness, ...).
    """

    id: str
    prompt: tuple[Turn, ...]
    chosen: str
    rejected: str
    images: tuple[ImageRef, ...] = ()
    reference_logps: tuple[float, float] | None = None
    scores: dict[str, float] = field(default_factory=dict, compare=False)
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    check_files: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", tuple(self.prompt))
        object.__setattr__(self, "images", tuple(self.images))
        _check_turns(self.id, self.prompt, must_end_with_assistant=False)
        for name in ("chosen", "rejected"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise RecordError(f"record {self.id!r}: {name!r} answer is empty")
        _check_images(self.id, self.images, [t.content for t in self.prompt], self.check_files)


@dataclass(frozen=True)
class EvalItem:
    """One benchmark question: a prompt, its images, the gold answer or label.

    ``choices`` lists the closed answer set when there is one (yes/no, option letters),
    which lets the engine score choices from one forward pass instead of generating.
    """

    id: str
    prompt: str
    images: tuple[ImageRef, ...] = ()
    answer: str | None = None
    choices: tuple[str, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    check_files: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
            if not self.choices:
                raise RecordError(f"item {self.id!r}: empty choices; leave choices unset for open answers")
        if not self.prompt.strip():
            raise RecordError(f"item {self.id!r}: empty prompt")
        _check_images(self.id, self.images, [self.prompt], self.check_files)


Record = Union[Conversation, Preference, EvalItem]
RecordKind = Literal["conversation", "preference", "eval_item"]

RECORD_KINDS: dict[RecordKind, type] = {
    "conversation": Conversation,
    "preference": Preference,
    "eval_item": EvalItem,
}
