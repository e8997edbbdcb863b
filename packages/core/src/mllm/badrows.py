"""The bad-row policy every dataset follows (``on_bad_row``, ``max_bad_fraction``).

A dataset wraps the building of each record in :meth:`DataReport.row`; with
``on_bad_row: error`` the first bad row stops the run with its file and row in the
message, with ``skip`` it is listed in ``data_report.json`` and the run goes on unless
more than ``max_bad_fraction`` of the rows were bad.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal

OnBadRow = Literal["error", "skip"]


class BadRowError(ValueError):
    """A row could not be turned into a record (policy ``error``), or too many were skipped."""


@dataclass
class SkippedRow:
    file: str
    row: str
    reason: str


@dataclass
class DataReport:
    """Counts and skipped rows of one dataset load; written as ``data_report.json``."""

    source: str
    on_bad_row: OnBadRow = "error"
    max_bad_fraction: float = 0.0
    total: int = 0
    kept: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    @contextmanager
    def row(self, *, file: str | os.PathLike, row: int | str) -> Iterator[None]:
        """Build one record inside this block; a ``ValueError``, ``KeyError``, ``TypeError``
        or ``OSError`` raised in it is a bad row."""
        self.total += 1
        try:
            yield
        except (ValueError, KeyError, TypeError, OSError) as error:
            reason = f"{type(error).__name__}: {error}"
            if self.on_bad_row == "error":
                raise BadRowError(
                    f"{os.fspath(file)}, row {row}: {reason}. Fix the row, or set on_bad_row: skip "
                    f"(with max_bad_fraction) on this dataset to skip bad rows"
                ) from error
            self.skipped.append(SkippedRow(os.fspath(file), str(row), reason))
        else:
            self.kept += 1

    def skip(self, *, file: str | os.PathLike, row: int | str, reason: str) -> None:
        """Apply the policy to a row that was kept but turned out bad later (e.g. an image
        that fails to decode during training)."""
        self.total -= 1
        self.kept -= 1
        with self.row(file=file, row=row):
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
        path.write_text(json.dumps(self.to_dict(), indent=2))
