"""The run folder: stage directories, the atomic completion marker, history, redaction.

Layout: ``runs/<pipeline>/<stage>/`` holds ``stage.json`` (fingerprint, written when the
stage starts), ``resolved_config.yaml`` (secrets redacted), the stage's outputs and,
written last and atomically, ``COMPLETE``. A stage folder whose fingerprint no longer
matches is moved to ``runs/<pipeline>/.history/<stage>-<old fingerprint>/``, never deleted.
``runs/<pipeline>/.mllm-run`` marks the folder as mllm's: ``mllm run`` refuses an output
folder that exists, is not empty and has no such marker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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

COMPLETE = "COMPLETE"
STAGE_STATE = "stage.json"
HISTORY = ".history"
RUN_MARKER = ".mllm-run"  # in runs/<pipeline>/: written when mllm creates the folder
REDACTED = "***REDACTED***"
SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization|credential)", re.IGNORECASE)


def is_run_folder(run_dir: Path) -> bool:
    """``runs/<pipeline>/`` holds the marker (or, written before markers existed, a stage's ``stage.json``)."""
    run_dir = Path(run_dir)
    if (run_dir / RUN_MARKER).is_file():
        return True
    return any((child / STAGE_STATE).is_file() for child in run_dir.iterdir() if child.is_dir())


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


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking key's value replaced.

    Keys naming an environment variable that holds the secret (``api_key_env``) are kept:
    they are names, not secrets.
    """
    if isinstance(value, dict):
        return {
            key: (REDACTED if SECRET_KEY.search(str(key)) and not str(key).endswith("_env") and item not in (None, "")
                  else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


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
