"""The errors a user can cause, with one base: :class:`MllmError`.

Every error raised because of user input (a pipeline file, a key, a data file, a
command-line argument) is an :class:`MllmError`; the ``mllm`` command line catches it in
one place, prints ``error: <message>`` on one line and exits with its ``exit_code``
(2 unless the class says otherwise), without a traceback (``mllm --debug`` or
``MLLM_DEBUG=1`` shows it). Anything else that escapes is a bug and keeps its traceback.

Plugins raise these (or their own subclasses of :class:`MllmError`) for user errors.
The message names the file, key or option at fault and says how to fix it. Each class
keeps the builtin base it had before the spine existed (``ValueError``, ``LookupError``,
...), so ``except ValueError`` code goes on working.

This module imports nothing but the standard library: it is imported by the records,
the config loader and the command line before anything heavy.
"""

from __future__ import annotations

import os
from typing import ClassVar

__all__ = [
    "EXIT_STOPPED",
    "BadRowError",
    "ConfigError",
    "ConvertError",
    "DuplicateComponentError",
    "ImageReadError",
    "InputFileError",
    "MissingFileError",
    "MllmError",
    "PluginError",
    "RecordError",
    "RunFolderError",
    "SpecImportError",
    "StageProcessesFailed",
    "TrainingStopped",
    "UnknownComponentError",
    "UnsafeCheckpointError",
]

EXIT_STOPPED = 143  # 128 + SIGTERM: what a shell reports for a process ended by SIGTERM


class MllmError(Exception):
    """An error the user can fix; its message names the file or key and how to fix it.

    Args:
        *args: the message (as for ``Exception``).
        hint: an optional "how to fix it", shown after the message on the same line.

    ``str(error)`` is always one line: the lines of a multi-line message are joined with
    ``"; "``. A message of several lines is several problems (one per line, e.g. every
    unknown key of a file): :meth:`lines` gives them and ``mllm`` prints each as its own
    ``error: ...`` line. ``exit_code`` is the status ``mllm`` exits with; ``label`` is the
    word printed before the message (``error: ...``).
    """

    exit_code: ClassVar[int] = 2
    label: ClassVar[str] = "error"

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        self.hint = hint

    @property
    def message(self) -> str:
        """The message without the hint, on one line."""
        return _one_line(super().__str__()) or type(self).__name__

    def __str__(self) -> str:
        return f"{self.message}; {_one_line(self.hint)}" if self.hint else self.message

    def lines(self) -> list[str]:
        """The problems, one line each (the message's lines); the hint ends the last one."""
        lines = [line.strip() for line in str(super().__str__()).splitlines() if line.strip()] or [self.message]
        if self.hint:
            lines[-1] = f"{lines[-1]}; {_one_line(self.hint)}"
        return lines


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


# -- pipelines and run folders ------------------------------------------------------------------


class ConfigError(MllmError, ValueError):
    """A pipeline, a component config or a run option is invalid; the message says where and how to fix it."""


class RunFolderError(MllmError, ValueError):
    """The output folder is not one mllm may write into (not empty, not an mllm run folder)."""


class StageProcessesFailed(MllmError, RuntimeError):
    """A stage run as several torchrun processes failed; the processes printed why."""


class TrainingStopped(MllmError, RuntimeError):
    """Training stopped on a signal after saving a complete checkpoint; re-running resumes.

    Not a failure: ``mllm run`` prints ``stopped: ...`` and exits with 143 (128 + SIGTERM)."""

    exit_code: ClassVar[int] = EXIT_STOPPED
    label: ClassVar[str] = "stopped"


class UnsafeCheckpointError(MllmError, RuntimeError):
    """A checkpoint file needs more than tensors and plain containers to load (or cannot be read)."""


# -- plugins -----------------------------------------------------------------------------------


class PluginError(MllmError):
    """Base class of plugin lookup errors."""


class UnknownComponentError(PluginError, LookupError):
    """No component of that kind has that name."""


class DuplicateComponentError(PluginError):
    """Two distributions registered the same kind and name."""


class SpecImportError(MllmError, ImportError):
    """A spec's ``impl`` or ``config`` string could not be imported."""


# -- data -------------------------------------------------------------------------------------


class RecordError(MllmError, ValueError):
    """A record is malformed; the message names the record id and what is wrong."""


class BadRowError(MllmError, ValueError):
    """A row could not be turned into a record (policy ``error``), or too many were skipped."""


class ImageReadError(MllmError, ValueError):
    """An image file could not be read or decoded; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = os.fspath(path)


class MissingFileError(MllmError, FileNotFoundError):
    """A file or folder that a pipeline key or a command-line argument names does not exist."""


class InputFileError(MllmError, ValueError):
    """A file or folder the user named exists but cannot be used (not valid JSON, the wrong
    shape, an unsupported layout); the message names it and what was expected."""


# -- checkpoints of other layouts ----------------------------------------------------------------


class ConvertError(MllmError, ValueError):
    """The source folder is not a LLaVA checkpoint we can convert; the message says what is missing."""
