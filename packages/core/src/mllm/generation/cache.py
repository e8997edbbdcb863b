"""The one keyed, append-only JSON Lines cache: what was computed once is never computed again.

Every cache in the project (the answer engine's ``answer_cache.jsonl``, sampling's
``sample_cache.jsonl``, the transform ops' ``realign_cache.jsonl`` and
``llava_instruct_cache.jsonl``, the judges' cache) is a :class:`KeyedJsonlCache`: a file of
one JSON object a line, ``{"key": <hash>, ...extra fields..., <value field>: <value>}``,
read whole when the cache is opened, appended to in batches (each batch flushed and
fsynced), so an interrupted run loses at most the batch it was writing and a rerun asks
only for what is missing. A key is a SHA-256 of everything that decides the value
(:meth:`KeyedJsonlCache.key`); a key written twice keeps its last value.

The torn-line rule, the same for every cache: a line that is not a complete entry is
skipped. The usual one is the last line, cut short when a run was killed mid-write: it is
skipped silently, and the next write starts on a fresh line so the new entry stays
whole. A bad line anywhere else is skipped too, with a warning naming the file and the
line: a cache only saves work (a skipped entry is recomputed, never misread), and
earlier versions of two of these caches appended after a torn line without a newline,
so run folders they wrote can hold such a line mid-file and must still resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger("mllm.generation.cache")


class KeyedJsonlCache:
    """Key -> JSON-serialisable value, kept in memory and appended to a JSON Lines file.

    Args:
        path: the file (created with its folder on the first write); ``None`` keeps the
            entries in memory only.
        value_field: the name of the value in each line (``"value"``; the answer cache
            writes ``"answer"``, the sample cache ``"answers"``, judges ``"reply"``, so files
            written before this class existed read back unchanged).

    ``add`` collects entries and ``flush`` writes them (``put`` does both, for caches
    written one entry at a time); ``close`` and leaving a ``with`` block flush too. Safe to
    share between threads, and to reopen: a new instance on the same file sees every
    flushed entry.
    """

    def __init__(self, path: str | os.PathLike | None, *, value_field: str = "value") -> None:
        self.path = Path(path) if path is not None else None
        self.value_field = value_field
        self.hits = 0  # get() calls answered from the cache
        self.skipped = 0  # lines of the file that were not complete entries
        self._entries: dict[str, Any] = {}
        self._pending: list[str] = []
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            self._load(self.path.read_bytes())

    # -- keys --------------------------------------------------------------------------------

    @staticmethod
    def key(payload: Any, *, ensure_ascii: bool = False) -> str:
        """SHA-256 of ``payload`` as canonical JSON (sorted keys, UTF-8; other objects as ``str``).

        ``ensure_ascii=True`` escapes non-ASCII text before hashing, as the answer and
        sample caches always did: their keys (and the sampling seeds derived from them)
        stay those of earlier versions.
        """
        text = json.dumps(payload, sort_keys=True, ensure_ascii=ensure_ascii, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        if key in self._entries:
            self.hits += 1
            return self._entries[key]
        return default

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # -- writing -----------------------------------------------------------------------------

    def add(self, key: str, value: Any, **fields: Any) -> None:
        """Store ``value`` under ``key``; written to the file at the next :meth:`flush`.

        ``fields`` are written alongside for a reader of the file (an item id, a model
        name); they are not read back.
        """
        entry = {"key": key, **fields, self.value_field: value}
        line = json.dumps(entry, ensure_ascii=False)  # fails here, not at flush, on a value JSON cannot hold
        with self._lock:
            self._entries[key] = value
            if self.path is not None:
                self._pending.append(line)

    def put(self, key: str, value: Any, **fields: Any) -> None:
        """:meth:`add` and :meth:`flush` in one call."""
        self.add(key, value, **fields)
        self.flush()

    def flush(self) -> None:
        """Append the entries added since the last flush, and fsync them."""
        with self._lock:
            if self.path is None or not self._pending:
                return
            data = "".join(line + "\n" for line in self._pending).encode("utf-8")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell():
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":  # a torn last line: the new entries start on a fresh one
                        data = b"\n" + data
                handle.write(data)  # append mode: written at the end whatever was read
                handle.flush()
                os.fsync(handle.fileno())
            self._pending.clear()

    def close(self) -> None:
        """Flush what is pending (the file is opened only while writing)."""
        self.flush()

    def __enter__(self) -> KeyedJsonlCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loading -----------------------------------------------------------------------------

    def _load(self, data: bytes) -> None:
        lines = data.split(b"\n")
        torn = lines[-1] != b""  # no newline after the last line: possibly cut short
        if not torn:
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            entry = self._parse(raw)
            if entry is not None:
                self._entries[entry[0]] = entry[1]
                continue
            self.skipped += 1
            if torn and number == len(lines):
                logger.debug("%s: line %d was cut short by an interrupted run; skipped", self.path, number)
            else:
                logger.warning("%s: line %d is not a cache entry (a JSON object with \"key\" and %r); skipped, "
                               "its value will be computed again", self.path, number, self.value_field)

    def _parse(self, raw: bytes) -> tuple[str, Any] | None:
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or self.value_field not in entry:
            return None
        return entry["key"], entry[self.value_field]
