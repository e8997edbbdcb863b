"""Reading score inputs (JSON, JSON Lines) with errors that name the file and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mllm import MllmError


class ScoreInputError(MllmError, ValueError):
    """A score-only input file is missing or has the wrong shape.

    The message names the file, what was expected and how to fix it; ``mllm eval
    score`` prints it without a traceback and exits with status 2.
    """


def require_file(path: str | os.PathLike | None, option: str, what: str) -> Path:
    """``path`` as a Path that exists, else a :class:`ScoreInputError` naming ``option``."""
    if path is None:
        raise ScoreInputError(f"{option} is required: {what}")
    p = Path(path)
    if not p.is_file():
        raise ScoreInputError(f"{option} {os.fspath(p)!r} does not exist or is not a file; pass {what}")
    return p


def read_json(path: Path, option: str, what: str) -> Any:
    """One JSON document."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ScoreInputError(
            f"{option} {os.fspath(path)!r} is not valid JSON ({error.msg} at line {error.lineno}); expected {what}"
        ) from None
    except UnicodeDecodeError:
        raise ScoreInputError(f"{option} {os.fspath(path)!r} is not UTF-8 text; expected {what}") from None


def read_jsonl(path: Path, option: str, what: str) -> list[dict[str, Any]]:
    """JSON Lines: one JSON object a line (blank lines skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ScoreInputError(
                        f"{option} {os.fspath(path)!r} line {lineno} is not JSON ({error.msg}); "
                        f"expected JSON Lines, one object a line: {what}"
                    ) from None
                if not isinstance(row, dict):
                    raise ScoreInputError(
                        f"{option} {os.fspath(path)!r} line {lineno} is a {type(row).__name__}, not an object; expected {what}"
                    )
                rows.append(row)
    except UnicodeDecodeError:
        raise ScoreInputError(f"{option} {os.fspath(path)!r} is not UTF-8 text; expected {what}") from None
    return rows


def read_json_or_jsonl(path: Path, option: str, what: str) -> Any:
    """A JSON document, or JSON Lines when the file is not one JSON document."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return read_jsonl(path, option, what)


def require_keys(row: dict[str, Any], keys: tuple[str, ...], path: Path, option: str, index: int, what: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ScoreInputError(
            f"{option} {os.fspath(path)!r} row {index + 1} lacks {', '.join(repr(k) for k in missing)}; expected {what}"
        )


def read_keyed_jsonl(path: str | os.PathLike | None, option: str, what: str,
                     keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The rows of a required JSON Lines file, each checked for ``keys``, by ``str(row[keys[0]])``."""
    file = require_file(path, option, what)
    rows: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(read_jsonl(file, option, what)):
        require_keys(row, keys, file, option, index, what)
        rows[str(row[keys[0]])] = row
    return rows
