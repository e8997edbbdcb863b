"""Records as JSON Lines: what ``transform`` (and ``generate``) stages write, and the
built-in datasets that read them back.

One JSON object a line, with ``kind`` first::

    {"kind": "conversation", "id": "...", "turns": [{"role": "user", "content": "..."}, ...],
     "images": ["/abs/path.png"], "metadata": {...}}
    {"kind": "preference", "id": "...", "prompt": [turns], "chosen": "...", "rejected": "...",
     "images": [...], "reference_logps": [c, r] | null, "scores": {...}, "metadata": {...}}
    {"kind": "eval_item", "id": "...", "prompt": "...", "images": [...], "answer": "..." | null,
     "choices": [...] | null, "metadata": {...}}

Datasets (registered by the core):

- ``stage-records``: ``{name: stage-records, stage: <stage id>}`` reads
  ``runs/<pipeline>/<stage id>/records.jsonl`` of an earlier stage of the same pipeline.
  The stage id counts as an input of the stage that uses it: the loader checks it comes
  earlier, and its fingerprint chains into this stage's (so a changed transform re-runs
  the training that reads it).
- ``records-jsonl``: ``{name: records-jsonl, path: FILE}`` reads such a file anywhere
  (e.g. one copied out of a run folder).
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Literal

from pydantic import Field

from mllm.data.badrows import DataReport
from mllm.errors import MissingFileError
from mllm.interfaces import DatasetConfig
from mllm.records import RECORD_KINDS, Conversation, EvalItem, Preference, Record, Turn

RECORDS_FILE = "records.jsonl"

#: The run folder (``runs/<pipeline>/``) of the stage now running; set by the runner.
CURRENT_RUN_DIR: ContextVar[Path | None] = ContextVar("mllm_current_run_dir", default=None)


def record_kind_of(record: Record) -> str:
    for kind, cls in RECORD_KINDS.items():
        if isinstance(record, cls):
            return kind
    raise TypeError(f"not a record: {type(record).__name__}")


def _turns(turns: Iterable[Turn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def record_to_dict(record: Record) -> dict[str, Any]:
    kind = record_kind_of(record)
    out: dict[str, Any] = {"kind": kind, "id": record.id}
    if isinstance(record, Conversation):
        out["turns"] = _turns(record.turns)
    elif isinstance(record, Preference):
        out.update(prompt=_turns(record.prompt), chosen=record.chosen, rejected=record.rejected,
                   reference_logps=list(record.reference_logps) if record.reference_logps is not None else None,
                   scores=dict(record.scores))
    else:
        out.update(prompt=record.prompt, answer=record.answer,
                   choices=list(record.choices) if record.choices is not None else None)
    out["images"] = [os.fspath(p) for p in record.images]
    out["metadata"] = record.metadata
    return out


def record_from_dict(data: dict[str, Any], *, check_files: bool = False) -> Record:
    if not isinstance(data, dict):
        raise TypeError(f"a record line must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    images = tuple(data.get("images") or ())
    metadata = data.get("metadata") or {}
    if kind == "conversation":
        return Conversation(id=str(data["id"]), turns=tuple(Turn(t["role"], t["content"]) for t in data["turns"]),
                            images=images, metadata=metadata, check_files=check_files)
    if kind == "preference":
        logps = data.get("reference_logps")
        return Preference(id=str(data["id"]), prompt=tuple(Turn(t["role"], t["content"]) for t in data["prompt"]),
                          chosen=data["chosen"], rejected=data["rejected"], images=images,
                          reference_logps=tuple(logps) if logps is not None else None,
                          scores=data.get("scores") or {}, metadata=metadata, check_files=check_files)
    if kind == "eval_item":
        choices = data.get("choices")
        return EvalItem(id=str(data["id"]), prompt=data["prompt"], images=images, answer=data.get("answer"),
                        choices=tuple(choices) if choices is not None else None, metadata=metadata,
                        check_files=check_files)
    raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(RECORD_KINDS)}")


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Write records as JSON Lines, atomically (a temporary file, then ``os.replace``); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record_to_dict(record), ensure_ascii=False, default=str) + "\n")
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return count


def read_records(path: str | os.PathLike, report: DataReport | None = None, *,
                 check_files: bool = False) -> Iterator[Record]:
    """Records of a JSON Lines file; with ``report`` each line is built under its bad-row
    policy (row label ``line <n>``), without one a bad line raises naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"records file {path} does not exist")
    report = report or DataReport(source=str(path))
    # bytes, decoded line by line: a line that is not UTF-8 is one bad row, not the whole file's
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            record = None
            with report.row(file=path, row=f"line {number}") as entry:
                try:
                    data = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    raise ValueError(f"malformed JSON line: not UTF-8 text (byte 0x{raw[error.start]:02x} at "
                                     f"offset {error.start}); save the file as UTF-8") from None
                except json.JSONDecodeError as error:
                    raise ValueError(f"malformed JSON line: {error.msg} at column {error.colno}") from None
                if isinstance(data, dict) and data.get("id") is not None:
                    entry.id = data["id"]
                record = record_from_dict(data, check_files=check_files)
            if record is not None:
                yield record


# -- datasets ------------------------------------------------------------------------------


RecordKindName = Literal["conversation", "preference", "eval_item"]


class RecordsJsonlConfig(DatasetConfig):
    """``records-jsonl``: a records file written by a transform or generate stage."""

    path: str = Field(description="a records.jsonl file (mllm.data.recordio format)")
    kind: RecordKindName = Field("conversation", description="the record kind the file holds")
    check_images: bool = Field(False, description="check that every image file exists")


class StageRecordsConfig(DatasetConfig):
    """``stage-records``: the ``records.jsonl`` of an earlier stage of this pipeline."""

    stage: str = Field(description="id of an earlier stage that wrote records.jsonl (a transform or generate stage)")
    kind: RecordKindName = Field("conversation", description="the record kind that stage wrote")
    check_images: bool = Field(False, description="check that every image file exists")

    def stage_inputs(self) -> list[str]:
        """Stage ids this dataset reads: the loader checks they come first and chains fingerprints."""
        return [self.stage]


class _RecordsDataset:
    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.record_kind = config.kind  # type: ignore[misc]

    def path(self) -> Path:
        raise NotImplementedError

    def records(self, report: DataReport) -> Iterator[Record]:
        expected = RECORD_KINDS[self.config.kind]
        for record in read_records(self.path(), report, check_files=self.config.check_images):
            if not isinstance(record, expected):
                with report.row(file=self.path(), row=f"id {record.id}", id=record.id):
                    raise ValueError(f"record {record.id!r} is a {record_kind_of(record)}, not a {self.config.kind}; "
                                     f"set kind: {record_kind_of(record)} on the dataset")
                continue
            yield record


class RecordsJsonl(_RecordsDataset):
    """The ``records-jsonl`` dataset."""

    @classmethod
    def data_files(cls, config: RecordsJsonlConfig) -> list[Path]:
        return [Path(config.path).expanduser()]

    def path(self) -> Path:
        return Path(self.config.path).expanduser()


class StageRecords(_RecordsDataset):
    """The ``stage-records`` dataset: reads ``<run dir>/<stage>/records.jsonl`` while a pipeline runs.

    No ``data_files``: the stage it reads is an input, so its fingerprint (not the file's
    mtime, which changes whenever it re-runs) is hashed into the reader's.
    """

    def path(self) -> Path:
        return stage_records_path(self.config.stage)


def stage_records_path(stage_id: str) -> Path:
    """``<run dir>/<stage>/records.jsonl`` of the pipeline that is running (a clear error
    outside a run, or when that stage wrote no records)."""
    run_dir = CURRENT_RUN_DIR.get()
    if run_dir is None:
        raise RuntimeError(f"records of stage {stage_id!r} can only be read while a pipeline runs; outside one, "
                           "use {name: records-jsonl, path: runs/<pipeline>/<stage>/records.jsonl}")
    path = Path(run_dir) / stage_id / RECORDS_FILE
    if not path.is_file():
        raise MissingFileError(f"stage {stage_id!r} wrote no {RECORDS_FILE} ({path}); only generate and transform "
                               "stages write records")
    return path
