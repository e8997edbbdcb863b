"""The bad-row policy every dataset follows (``on_bad_row``, ``max_bad_fraction``).

A dataset wraps the building of each record in :meth:`DataReport.row`; with
``on_bad_row: error`` the first bad row stops the run with its file and row in the
message, with ``skip`` it is listed in ``data_report.json`` and the run goes on unless
more than ``max_bad_fraction`` of the rows were bad.

Rows that turn out bad only later -- an image whose header reads fine but whose data
does not decode when a training batch is built -- follow the same policy through
:class:`LateBadRows` (the model adapter raises :class:`ImageReadError`).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from mllm.errors import BadRowError, ImageReadError  # noqa: F401 - ImageReadError is imported from here too

OnBadRow = Literal["error", "skip"]


@dataclass
class SkippedRow:
    """One row left out: its file, its label there (``line 3``, ``row 2``, ``id x``), why,
    its 0-based index (in its file where the dataset says, else in reading order; none for
    a row found bad while training) and its id where the row has one."""

    file: str
    row: str
    reason: str
    index: int | None = None
    id: str | None = None


@dataclass
class RowHandle:
    """The row being built in :meth:`DataReport.row`: a dataset sets ``id`` once it has read
    it, so a bad row is listed by its id too."""

    index: int | None
    id: str | None = None


@dataclass
class DataReport:
    """Counts and skipped rows of one dataset load; written as ``data_report.json``."""

    source: str
    on_bad_row: OnBadRow = "error"
    max_bad_fraction: float = 0.0
    total: int = 0
    kept: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    #: image paths that resolve outside the dataset's image folder (``../``, absolute, a
    #: symlink out), read as written unless ``image_paths: contained``; the first few listed
    images_outside_folder: int = 0
    images_outside_folder_first: list[str] = field(default_factory=list)

    def note_image_outside(self, path: str | os.PathLike) -> None:
        """Count an image path that leaves the image folder (the first five are listed)."""
        self.images_outside_folder += 1
        if len(self.images_outside_folder_first) < 5:
            self.images_outside_folder_first.append(os.fspath(path))

    @contextmanager
    def row(self, *, file: str | os.PathLike, row: int | str, index: int | None = None,
            id: object = None) -> Iterator[RowHandle]:  # noqa: A002 - the record's id
        """Build one record inside this block; a ``ValueError``, ``KeyError``, ``TypeError``
        or ``OSError`` raised in it is a bad row. ``index``: the row's 0-based index in its
        file (default: its position in reading order); ``id``: the record's id, also settable
        on the yielded :class:`RowHandle` once the row is read."""
        handle = RowHandle(self.total if index is None else index, None if id is None else str(id))
        self.total += 1
        try:
            yield handle
        except (ValueError, KeyError, TypeError, OSError) as error:
            reason = f"{type(error).__name__}: {error}"
            if self.on_bad_row == "error":
                raise BadRowError(
                    f"{os.fspath(file)}, row {row}: {reason}. Fix the row, or set on_bad_row: skip "
                    f"(with max_bad_fraction) on this dataset to skip bad rows"
                ) from error
            record_id = None if handle.id is None else str(handle.id)
            self.skipped.append(SkippedRow(os.fspath(file), str(row), reason, handle.index, record_id))
        else:
            self.kept += 1

    def skip(self, *, file: str | os.PathLike, row: int | str, reason: str,
             id: object = None) -> None:  # noqa: A002 - the record's id
        """Apply the policy to a row that was kept but turned out bad later (e.g. an image
        that fails to decode during training)."""
        self.total -= 1
        self.kept -= 1
        with self.row(file=file, row=row, id=id) as handle:
            handle.index = None  # its place in the file is not known any more
            raise ValueError(reason)

    def finish(self) -> None:
        """Check the bad fraction once all rows were seen."""
        if self.total and len(self.skipped) / self.total > self.max_bad_fraction:
            first = self.skipped[0]
            raise BadRowError(
                f"{self.source}: {len(self.skipped)} of {self.total} rows are bad "
                f"({len(self.skipped) / self.total:.1%}), more than max_bad_fraction={self.max_bad_fraction}; "
                f"first: {first.file}, row {first.row}: {first.reason}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: Path) -> None:
        from mllm.pipeline.runfolder import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))


class LateBadRows:
    """Applies a dataset's ``on_bad_row`` policy to records that turn bad after loading
    (during training) and keeps ``data_report.json`` current.

    ``error``: :class:`BadRowError` naming the image and the record; ``skip``: the record
    is listed in the report (file = the image, row = ``id <record id>``) and left out of
    every later batch; more than ``max_bad_fraction`` bad rows in all stops the run.
    """

    def __init__(self, report: DataReport, path: Path | None = None) -> None:
        self.report = report
        self.path = Path(path) if path is not None else None
        self.bad_ids: set[str] = set()

    def is_bad(self, record: object) -> bool:
        return str(getattr(record, "id", "")) in self.bad_ids

    def reject(self, record: object, error: BaseException | str, *, when: str = "while training") -> None:
        """List ``record`` as bad (``error``: the exception, or the reason as a string); with
        ``on_bad_row: error`` this raises :class:`BadRowError`. ``when`` starts the reason:
        rows found bad ``while training`` are carried over by :meth:`restore` on resume."""
        record_id = str(getattr(record, "id", "?"))
        if record_id in self.bad_ids:
            return  # already listed (e.g. by an interrupted attempt of this stage)
        file = getattr(error, "path", "") or self.report.source
        self.report.skip(file=file, row=f"id {record_id}", reason=f"{when}: {error}", id=record_id)
        self.bad_ids.add(record_id)
        if self.path is not None:
            self.report.write(self.path)
        self.report.finish()

    def restore(self, previous: dict | None, ids: set[str]) -> None:
        """Carry over the rows an interrupted attempt of the stage found bad while training
        (a resumed run may never reach their batches again)."""
        listed = {(s.file, s.row) for s in self.report.skipped}
        for entry in (previous or {}).get("skipped", []):
            row = str(entry.get("row", ""))
            if not str(entry.get("reason", "")).startswith("while training:") or not row.startswith("id "):
                continue
            if row[3:] in ids and (entry.get("file"), row) not in listed:
                self.report.skipped.append(SkippedRow(str(entry.get("file")), row, str(entry["reason"]), id=row[3:]))
                self.report.kept -= 1
                self.bad_ids.add(row[3:])
        if self.path is not None:
            self.report.write(self.path)
