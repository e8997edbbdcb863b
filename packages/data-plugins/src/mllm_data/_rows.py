"""Shared pieces of the file-format datasets: reading JSON / JSON Lines rows with their
row labels, LLaVA conversation rows, image checks, the over-long row check.

Row labels in errors and ``data_report.json``: ``row <index>`` (0-based) for a JSON
list, ``line <n>`` (1-based) for JSON Lines, so a user can open the file at the place.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from mllm import (
    IMAGE_TOKEN,
    Conversation,
    DataReport,
    DatasetConfig,
    EvalItem,
    InputFileError,
    MissingFileError,
    MllmError,
    Turn,
)
from pydantic import ConfigDict, Field

#: LLaVA's role names (``from``) and the record roles they map to.
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

RecordAs = Literal["conversation", "eval_item"]
#: ``allowed``: an image path may leave the image folder (LLaVA's data uses ``../`` paths),
#: counted in ``data_report.json``; ``contained``: such a path is a bad row
ImagePaths = Literal["allowed", "contained"]


class FileDatasetConfig(DatasetConfig):
    """Keys shared by the file-format datasets (beside the bad-row policy)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    check_images: bool = Field(True, description="check before training that every image exists and has a readable "
                                                 "header (a bad image is a bad row); false: trust the paths")
    image_paths: ImagePaths = Field("allowed", description="allowed: image paths may leave image_folder (../, "
                                                           "absolute, symlinks out), counted in data_report.json; "
                                                           "contained: such a path is a bad row")
    max_chars: int | None = Field(None, ge=1, description="over-long row check: a row whose text (all turns) is longer "
                                                          "than this many characters is a bad row; none: no limit")
    limit: int | None = Field(None, ge=1, description="keep a seeded random subsample of this many rows (file order kept)")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")


class RowError(MllmError, ValueError):
    """A row is malformed (bad JSON, missing keys); the bad-row policy applies."""


def select_rows(total: int, limit: int | None, seed: int) -> list[int]:
    """Row indices to keep: all, or a seeded random ``limit`` of them, in file order."""
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), limit))


def is_json_lines(path: Path) -> bool:
    """``.jsonl`` files, and files whose first non-blank character is not ``[``."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return True
    if path.suffix.lower() == ".json":
        with open(path, "rb") as handle:  # bytes: a file that is not UTF-8 is reported by the reader, per row
            while True:
                char = handle.read(1)
                if not char:
                    return False
                if not char.isspace():
                    return char != b"["
    return False


def not_utf8(error: UnicodeDecodeError) -> str:
    """What a ``UnicodeDecodeError`` means to a user: where the first bad byte is and the fix."""
    return (f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            "save the file as UTF-8")


def read_rows(path: Path) -> list[tuple[str, Any]]:
    """``(row label, parsed row or the exception parsing raised)`` for every row of a
    JSON list or a JSON Lines file. A JSON file that is not a list at all is an error of
    the whole file (not a row) and raises ``ValueError`` naming the file and position."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"data file {path} does not exist; check the dataset's path")
    rows: list[tuple[str, Any]] = []
    if is_json_lines(path):
        # bytes, decoded line by line: a line that is not UTF-8 is one bad row, not the whole file's
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    rows.append((f"line {number}", json.loads(raw.decode("utf-8"))))
                except UnicodeDecodeError as error:
                    rows.append((f"line {number}", RowError(f"malformed JSON line: {not_utf8(error)}")))
                except json.JSONDecodeError as error:
                    rows.append((f"line {number}", RowError(f"malformed JSON line: {error.msg} at column {error.colno}")))
        return rows
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InputFileError(f"{path}: {not_utf8(error)}") from None
    except json.JSONDecodeError as error:
        raise InputFileError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
                         "LLaVA data is a JSON list of rows, or JSON Lines (one row per line, .jsonl)") from None
    if not isinstance(data, list):
        raise InputFileError(f"{path}: expected a JSON list of rows, got a {type(data).__name__}")
    return [(f"row {index}", row) for index, row in enumerate(data)]


def check_image(path: str | os.PathLike) -> None:
    """The image exists and its header decodes (``OSError`` otherwise: a bad row)."""
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {os.fspath(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reads the header only
    except Image.DecompressionBombError as error:  # not an OSError: it would end the run, not cost a row
        raise OSError(f"image {os.fspath(path)!r} is too large to decode safely: {error}") from None
    except (OSError, ValueError) as error:
        raise OSError(f"image {os.fspath(path)!r} cannot be read: {error}") from None


def image_list(value: Any) -> list[str]:
    """LLaVA's ``image``: absent, a string, or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"'image' must be a file name or a list of file names, got {value!r}")


def leaves_folder(path: str | os.PathLike, root: str) -> bool:
    """Whether ``path``, with ``..`` and symlinks resolved, is outside ``root`` (a folder's realpath)."""
    return os.path.commonpath([root, os.path.realpath(path)]) != root


def resolve_images(names: Sequence[str], folder: Path, check: bool, *, image_paths: ImagePaths = "allowed",
                   report: DataReport | None = None) -> list[str]:
    """``folder/name`` of each image (an absolute name stays as it is), each checked when
    ``check``; a path that leaves ``folder`` is counted in ``report``, and with
    ``image_paths: contained`` is a bad row (``ValueError``)."""
    paths = [str(folder / name) for name in names]
    root = os.path.realpath(folder) if paths else ""
    for path in paths:
        if leaves_folder(path, root):
            if report is not None:
                report.note_image_outside(path)
            if image_paths == "contained":
                raise ValueError(f"image {path!r} is outside the image folder {os.fspath(folder)!r} "
                                 "(image_paths: contained); move it into the folder, or set image_paths: allowed")
        if check:
            check_image(path)
    return paths


def check_length(texts: Sequence[str], max_chars: int | None) -> None:
    if max_chars is None:
        return
    length = sum(len(text) for text in texts)
    if length > max_chars:
        raise ValueError(f"row is over-long: {length} characters of text, more than max_chars={max_chars}; "
                         "raise max_chars, or set on_bad_row: skip to drop such rows")


def llava_turns(conversations: Any) -> list[Turn]:
    """LLaVA ``conversations`` (``[{"from": "human"|"gpt", "value": ...}]``) as turns."""
    if not isinstance(conversations, list):
        raise TypeError(f"'conversations' must be a list of {{from, value}} turns, got {type(conversations).__name__}")
    if not conversations:
        raise ValueError("empty conversation: 'conversations' has no turns")
    turns = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise TypeError(f"conversations[{index}] is not a {{from, value}} mapping")
        speaker = turn.get("from", turn.get("role"))
        if speaker not in ROLES:
            raise ValueError(f"conversations[{index}]: unknown speaker {speaker!r}; expected human or gpt")
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            raise TypeError(f"conversations[{index}]: 'value' must be text, got {value!r}")
        turns.append(Turn(ROLES[speaker], value))
    return turns


def llava_row_record(row: Any, *, record_id: str, image_folder: Path, check_images: bool, max_chars: int | None,
                     as_: RecordAs, source: str, image_paths: ImagePaths = "allowed",
                     report: DataReport | None = None) -> Conversation | EvalItem:
    """One LLaVA row (``id``, optional ``image``, ``conversations``) as a record.

    ``eval_item``: the first human turn is the prompt, the gpt turn after it the gold answer.
    Keys besides ``id``, ``image`` and ``conversations`` are kept in ``metadata``.
    """
    if not isinstance(row, dict):
        raise TypeError(f"a row must be a JSON object with 'conversations', got {type(row).__name__}")
    if "conversations" not in row:
        raise KeyError("'conversations' (the row has keys " + ", ".join(sorted(row)) + ")")
    turns = llava_turns(row["conversations"])
    check_length([t.content for t in turns], max_chars)
    names = image_list(row.get("image"))
    metadata = {k: v for k, v in row.items() if k not in ("id", "image", "conversations")}
    metadata["source"] = source
    if as_ == "eval_item":
        if turns[0].role != "user":
            raise ValueError(f"record {record_id!r}: the first turn must be the human's question")
        answer = turns[1].content if len(turns) > 1 and turns[1].role == "assistant" else None
        placeholders = turns[0].content.count(IMAGE_TOKEN)
        if placeholders != len(names):
            raise ValueError(f"record {record_id!r}: {placeholders} {IMAGE_TOKEN} placeholder(s) in the question but "
                             f"{len(names)} image(s)")
        images = resolve_images(names, image_folder, check_images, image_paths=image_paths, report=report)
        return EvalItem(id=record_id, prompt=turns[0].content, images=images, answer=answer, metadata=metadata,
                        check_files=False)
    # count placeholders first, so a mismatch is reported before a (missing) file
    placeholders = sum(t.content.count(IMAGE_TOKEN) for t in turns)
    if placeholders != len(names):
        raise ValueError(f"record {record_id!r}: {placeholders} {IMAGE_TOKEN} placeholder(s) in the conversation but "
                         f"{len(names)} image(s) in 'image'; put one {IMAGE_TOKEN} in a human turn per image")
    images = resolve_images(names, image_folder, check_images, image_paths=image_paths, report=report)
    return Conversation(id=record_id, turns=turns, images=images, metadata=metadata, check_files=False)


def iter_selected(rows: list[tuple[str, Any]], limit: int | None, seed: int) -> Iterator[tuple[int, str, Any]]:
    for index in select_rows(len(rows), limit, seed):
        label, row = rows[index]
        yield index, label, row
