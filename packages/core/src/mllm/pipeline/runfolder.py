"""The run folder: stage directories, the atomic completion marker, history, redaction.

Layout: ``runs/<pipeline>/<stage>/`` holds ``stage.json`` (fingerprint, written when the
stage starts), ``resolved_config.yaml`` (secrets redacted), the stage's outputs and,
written last and atomically, ``COMPLETE``. A stage folder whose fingerprint no longer
matches is moved to ``runs/<pipeline>/.history/<stage>-<old fingerprint>/``, never deleted.
``runs/<pipeline>/.mllm-run`` marks the folder as mllm's: ``mllm run`` refuses an output
folder that exists, is not empty and has no such marker. ``runs/<pipeline>/.mllm-lock``
is held (:class:`RunLock`) by the one ``mllm run`` that works in the folder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from mllm.errors import (  # noqa: F401 - defined in mllm.errors, imported from here too
    EXIT_STOPPED,
    RunFolderError,
    StageProcessesFailed,
    TrainingStopped,
    UnsafeCheckpointError,
)
from mllm.pipeline.secrets import REDACTED, redact  # noqa: F401 - redaction lives in mllm.pipeline.secrets

COMPLETE = "COMPLETE"
STAGE_STATE = "stage.json"
HISTORY = ".history"
RUN_MARKER = ".mllm-run"  # in runs/<pipeline>/: written when mllm creates the folder
RUN_LOCK = ".mllm-lock"  # in runs/<pipeline>/: held by the mllm run working in the folder


def is_run_folder(run_dir: Path) -> bool:
    """``runs/<pipeline>/`` holds the marker, or (a run folder written before markers
    existed) every entry in it is mllm's: stage folders with an mllm ``stage.json``,
    ``.history`` and the lock file. A stray ``*/stage.json`` among a user's files does not make it one."""
    run_dir = Path(run_dir)
    if (run_dir / RUN_MARKER).is_file():
        return True
    stages = 0
    for child in run_dir.iterdir():
        if (child.name == HISTORY and child.is_dir()) or (child.name == RUN_LOCK and child.is_file()):
            continue
        if not (child.is_dir() and _is_stage_state(child / STAGE_STATE)):
            return False
        stages += 1
    return stages > 0


def _is_stage_state(path: Path) -> bool:
    """``stage.json`` as mllm writes it: ``{"fingerprint": <sha256 hex>, "started": <time>}``."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(state, dict) and isinstance(state.get("fingerprint"), str) \
        and re.fullmatch(r"[0-9a-f]{64}", state["fingerprint"]) is not None and "started" in state


def check_run_folder(run_dir: Path) -> None:
    """Refuse an output folder that exists, is not empty and is not an mllm run folder."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder; pick another --runs-dir or pipeline name")
    above = next((p for p in run_dir.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise RunFolderError(f"{above} is a file, not a folder; --runs-dir (or $MLLM_RUNS_DIR) must be a folder "
                             "(it is created when missing)")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run_folder(run_dir):
        raise RunFolderError(
            f"{run_dir} exists, is not empty and is not an mllm run folder (it has no {RUN_MARKER} file); "
            "mllm will not write into it or move anything out of it. Pick another --runs-dir (or pipeline name), "
            "or empty the folder yourself")


def create_run_folder(run_dir: Path) -> None:
    """Create ``runs/<pipeline>/`` (after :func:`check_run_folder`) and mark it as mllm's."""
    check_run_folder(run_dir)
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create the run folder {run_dir}: {error.strerror}; pick another --runs-dir") from None
    if not (run_dir / RUN_MARKER).is_file():
        atomic_write_text(run_dir / RUN_MARKER, json.dumps({"mllm_run": run_dir.name, "created": time.time()}) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and ``os.replace`` so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class StageFolder:
    """One stage's directory and its state files."""

    def __init__(self, run_dir: Path, stage_id: str) -> None:
        self.run_dir = run_dir
        self.stage_id = stage_id
        self.path = run_dir / stage_id

    @property
    def complete_marker(self) -> Path:
        return self.path / COMPLETE

    def completed_fingerprint(self) -> str | None:
        try:
            return json.loads(self.complete_marker.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            return None

    def started_fingerprint(self) -> str | None:
        try:
            return json.loads((self.path / STAGE_STATE).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            return None

    def exists(self) -> bool:
        return self.path.exists()

    def start(self, fingerprint: str, resolved_config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / STAGE_STATE, json.dumps({"fingerprint": fingerprint, "started": time.time()}))
        atomic_write_text(self.path / "resolved_config.yaml", yaml.safe_dump(redact(resolved_config), sort_keys=False))

    def finish(self, fingerprint: str) -> None:
        atomic_write_text(self.complete_marker, json.dumps({"fingerprint": fingerprint, "finished": time.time()}))

    def archive(self) -> Path:
        """Move the folder to ``.history/<stage>-<fingerprint>/`` and return the new path."""
        old = self.completed_fingerprint() or self.started_fingerprint() or "unknown"
        history = self.run_dir / HISTORY
        history.mkdir(parents=True, exist_ok=True)
        target = history / f"{self.stage_id}-{old[:16]}"
        suffix = 1
        while target.exists():
            target = history / f"{self.stage_id}-{old[:16]}.{suffix}"
            suffix += 1
        shutil.move(str(self.path), str(target))
        return target


# -- reuse across runs ----------------------------------------------------------------------

REUSE_COPIED = frozenset({"log.txt"})  # appended to after the copy: a copy of its own, never a link


def find_finished_stage(runs_dir: Path, stage_id: str, fingerprint: str, exclude: Path) -> Path | None:
    """A finished ``<run>/<stage_id>/`` under ``runs_dir`` with ``fingerprint``, from a run
    folder no mllm run holds now; never ``exclude`` (this run) and never a ``.history`` folder
    (only ``runs_dir/<run>/<stage_id>`` is looked at, and dot-folders are not runs)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    for candidate in sorted(runs_dir.glob(f"*/{stage_id}")):
        run = candidate.parent
        if run.name.startswith(".") or run.resolve() == Path(exclude).resolve():
            continue
        if StageFolder(run, stage_id).completed_fingerprint() != fingerprint:
            continue
        try:
            if not is_run_folder(run) or run_in_use(run):
                continue
        except OSError:
            continue
        return candidate
    return None


def copy_stage_folder(source: Path, target: Path) -> bool:
    """Copy a finished stage folder to ``target`` (which must not exist), hard-linking every
    file but :data:`REUSE_COPIED` where the file system allows; True when all were linked."""
    linked = [True]

    def link(src: str, dst: str) -> None:
        if Path(src).name not in REUSE_COPIED:
            try:
                os.link(src, dst)
                return
            except OSError:  # another file system, or none with hard links
                pass
        linked[0] = linked[0] and Path(src).name in REUSE_COPIED
        shutil.copy2(src, dst)

    tmp = target.with_name(f".{target.name}.reuse-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, symlinks=True, copy_function=link)
    os.replace(tmp, target)  # the stage appears whole or not at all
    return linked[0]


def run_in_use(run_dir: Path) -> bool:
    """Whether an mllm run holds ``run_dir``'s lock now: its lock file names a live process
    (a released lock is emptied; a crashed holder's pid is dead). Read only: never takes the lock."""
    try:
        text = (Path(run_dir) / RUN_LOCK).read_text()
    except OSError:
        return False
    try:
        holder = json.loads(text or "{}")
    except ValueError:
        return True  # being written: in use
    return isinstance(holder, dict) and bool(holder) and _alive_here(holder)


# -- the lock ----------------------------------------------------------------------------------

_logger = logging.getLogger("mllm")


class RunLock:
    """The exclusive lock of one run folder: one ``mllm run`` at a time writes into it.

    ``runs/<pipeline>/.mllm-lock`` is locked with ``flock`` (released by the kernel when
    the holder exits, however it exits) and holds the holder's pid, host and start time,
    for the message a second run gets. A lock file that names a process but is not
    locked is stale (its process died): it is taken over with a warning. Where the file
    system has no ``flock``, the pid decides: a lock naming a live process of this host
    is held, any other is stale.

    The file is emptied on release, never deleted: deleting a locked file lets two
    processes each lock a different file of the same name.

    Args:
        run_dir: ``runs/<pipeline>/`` (it must exist).
        wait: wait for the holder to finish instead of refusing.
        poll_seconds: how often a waiting run tries again.
    """

    def __init__(self, run_dir: Path, *, wait: bool = False, poll_seconds: float = 1.0) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RUN_LOCK
        self.wait = wait
        self.poll_seconds = poll_seconds
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock; raise :class:`RunFolderError` naming the holder (or wait, with ``wait``)."""
        if self._fd is not None:
            return
        announced = False
        while True:
            fd = self._open()
            holder = self._try_lock(fd)
            if holder is None:
                self._fd = fd
                self._write_holder(fd)
                return
            os.close(fd)
            if not self.wait:
                raise RunFolderError(
                    f"{self.run_dir} is in use by another mllm run ({describe_holder(holder)}); wait for it "
                    f"to finish, or run again with --wait to wait for it")
            if not announced:
                _logger.warning("%s is in use by another mllm run (%s); waiting for it to finish", self.run_dir,
                                describe_holder(holder))
                announced = True
            time.sleep(self.poll_seconds)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly, not stale
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the file releases the flock

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunFolderError(f"cannot create the lock file {self.path}: {error.strerror}; is the run folder "
                                 "writable? Pick another --runs-dir") from None

    def _try_lock(self, fd: int) -> dict[str, Any] | None:
        """``None`` when this process now holds the lock, else what the lock file says of its holder."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return read_holder(fd)
                # ENOLCK, EOPNOTSUPP: a file system without flock; the pid decides
            else:
                self._note_stale(read_holder(fd))
                return None
        holder = read_holder(fd)
        if holder and _alive_here(holder) and holder.get("pid") != os.getpid():
            return holder
        self._note_stale(holder)
        return None

    def _note_stale(self, holder: dict[str, Any]) -> None:
        if holder.get("pid") not in (None, os.getpid()):
            _logger.warning("%s: taking over a stale lock of %s, which is no longer running", self.run_dir,
                            describe_holder(holder))

    @staticmethod
    def _write_holder(fd: int) -> None:
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        os.fsync(fd)


def read_holder(fd: int) -> dict[str, Any]:
    """What a lock file says of its holder (``{}`` when empty or unreadable)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host") and holder.get("host") != socket.gethostname():
        parts.append(f"on {holder['host']}")
    if isinstance(holder.get("started"), (int, float)):
        parts.append(f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['started']))}")
    return " ".join(parts)


def _alive_here(holder: dict[str, Any]) -> bool:
    """The holder is a live process of this host (or of another host: assumed alive)."""
    if holder.get("host") not in (None, socket.gethostname()):
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # a live process of another user
    return True
