"""Progress of long loops (training steps, answers, samples): a bar on a terminal, lines otherwise.

The trainer, the answer engine and the sampler report through :func:`track`; what it shows
is set once by the command line (:func:`configure`):

- ``bar``: a rich progress bar per loop on the terminal's console (steps, elapsed, ETA,
  it/s, the latest loss); log lines print above it;
- ``lines``: without a terminal, one log line (logger ``mllm.progress``) per tenth of the
  loop and at least every :data:`HEARTBEAT_S` seconds, with elapsed time and ETA; a
  background timer writes it even while one step takes longer than that;
- ``off`` (the default, e.g. in a library or a test): nothing.

Log records marked ``extra={FILE_ONLY: True}`` go to the stage's ``log.txt`` but not to the
console of ``mllm run`` (:class:`HideFileOnly`): what the console already shows another way
(per-step training entries, which the progress display shows; a re-run note the runner
printed), so each piece of news reaches the terminal once and log.txt keeps the full record. :func:`quiet_libraries` silences the libraries'
own noise (their progress bars and known warnings); ``mllm --verbose`` keeps it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from typing import Any, Literal

Mode = Literal["bar", "lines", "off"]
#: the longest a ``lines`` progress stays silent
HEARTBEAT_S = 30.0
#: a log record with this attribute true is for log.txt: the console shows it another way
FILE_ONLY = "mllm_file_only"

logger = logging.getLogger("mllm.progress")
_state: dict[str, Any] = {"mode": "off", "console": None, "heartbeat": HEARTBEAT_S}


def configure(mode: Mode, console: Any = None, heartbeat_s: float = HEARTBEAT_S) -> None:
    """What :func:`track` shows from now on; ``console``: the rich console of ``bar``."""
    _state.update(mode=mode, console=console, heartbeat=heartbeat_s)


def mode() -> Mode:
    return _state["mode"]


class HideFileOnly(logging.Filter):
    """The console handler's filter: drops records marked :data:`FILE_ONLY`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False)


def format_seconds(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Tracker:
    """One loop's progress: ``update(done, loss=...)`` after each step, ``close()`` at the end.

    Use :func:`track` (which picks the display); a ``Tracker`` itself shows nothing."""

    def __init__(self, label: str, total: int, unit: str = "step") -> None:
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.done = 0
        self.start_done = 0
        self.fields: dict[str, str] = {}
        self.started = time.monotonic()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def begin(self, done: int) -> None:
        """Where the loop starts (a resumed one: not at 0); rates count from here."""
        self.done = self.start_done = done
        self.started = time.monotonic()

    def update(self, done: int, **fields: Any) -> None:
        self.done = done
        for key, value in fields.items():
            if value is not None:
                self.fields[key] = f"{value:.4g}" if isinstance(value, float) else str(value)

    def close(self) -> None:
        """Stop showing it."""

    # -- what both displays print ------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float | None:
        """Steps per second since the start (``None`` before the first step)."""
        steps = self.done - self.start_done
        return steps / self.elapsed() if steps > 0 and self.elapsed() > 0 else None

    def eta(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate else None

    def line(self) -> str:
        """``sft: step 20/60 (33%), elapsed 1:02, ETA 2:04, 0.32 step/s, loss 4.546``."""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        rate = self.rate()
        speed = (f"{rate:.2f} {self.unit}/s" if rate >= 1 / 60 else f"{1 / rate:.1f} s/{self.unit}") if rate else ""
        parts = [f"{self.label}: {self.unit} {self.done}/{self.total}{share}", f"elapsed {format_seconds(self.elapsed())}",
                 f"ETA {format_seconds(self.eta())}"] + ([speed] if speed else [])
        parts += [f"{key} {value}" for key, value in self.fields.items()]
        return ", ".join(parts)


class LineTracker(Tracker):
    """``lines``: a log line per tenth of the loop, and at least every ``heartbeat_s`` seconds."""

    def __init__(self, label: str, total: int, unit: str = "step", heartbeat_s: float = HEARTBEAT_S) -> None:
        super().__init__(label, total, unit)
        self.every = max(1, self.total // 10)
        self.heartbeat_s = heartbeat_s
        self._last_printed = -1
        self._last_time = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"progress {label}", daemon=True)
        self._thread.start()

    def update(self, done: int, **fields: Any) -> None:
        super().update(done, **fields)
        if done >= self.total or done - max(self._last_printed, self.start_done) >= self.every \
                or time.monotonic() - self._last_time >= self.heartbeat_s:
            self._print()

    def _print(self) -> None:
        with self._lock:
            if self.done == self._last_printed and time.monotonic() - self._last_time < self.heartbeat_s:
                return
            self._last_printed, self._last_time = self.done, time.monotonic()
            logger.info(self.line())

    def _beat(self) -> None:
        # one step may take longer than the heartbeat (a big model on a CPU): say where it is anyway
        while not self._stop.wait(min(self.heartbeat_s, 5.0)):
            if time.monotonic() - self._last_time >= self.heartbeat_s:
                self._print()

    def close(self) -> None:
        self._stop.set()
        if self.done != self._last_printed and self.done > self.start_done:
            self._print()


class BarTracker(Tracker):
    """``bar``: a rich progress bar on the console (log lines print above it)."""

    def __init__(self, label: str, total: int, console: Any, unit: str = "step") -> None:
        super().__init__(label, total, unit)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[speed]}"), TextColumn("{task.fields[extra]}"),
            console=console, transient=False)
        self._task = self._progress.add_task(label, total=self.total or None, speed="", extra="")
        self._progress.start()

    def begin(self, done: int) -> None:
        super().begin(done)
        self._progress.reset(self._task, total=self.total or None, completed=done)

    def update(self, done: int, **fields: Any) -> None:
        super().update(done, **fields)
        rate = self.rate()
        speed = (f"{rate:.2f} {self.unit}/s" if rate >= 1 / 60 else f"{1 / rate:.1f} s/{self.unit}") if rate else ""
        self._progress.update(self._task, completed=done, speed=speed,
                              extra=" ".join(f"{k} {v}" for k, v in self.fields.items()))

    def close(self) -> None:
        self._progress.stop()


def track(label: str, total: int, unit: str = "step") -> Tracker:
    """A :class:`Tracker` for a loop of ``total`` steps, shown as :func:`configure` said."""
    if _state["mode"] == "bar" and _state["console"] is not None:
        return BarTracker(label, total, _state["console"], unit)
    if _state["mode"] == "lines":
        return LineTracker(label, total, unit, _state["heartbeat"])
    return Tracker(label, total, unit)


# -- the libraries' own noise --------------------------------------------------------------------------

#: warnings (message regex, category) said on every call that tell a user of mllm nothing
NOISY_WARNINGS = ((r"`?past_key_values`? is deprecated", FutureWarning),)
#: (logger, message start) of log lines said at every start
NOISY_LOG_LINES = (("DeepSpeed", "Setting accelerator to CPU"),
                   ("transformers.utils.generic", "`past_key_values`/`cache_params` are deprecated"))


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def quiet_libraries() -> None:
    """Silence the libraries' progress bars (loading and writing weights) and the warnings
    of :data:`NOISY_WARNINGS` / :data:`NOISY_LOG_LINES`, in this process and the processes it
    starts (torchrun's: the progress bars); called unless ``mllm --verbose``."""
    # read by transformers and huggingface_hub when imported (here and in torchrun's processes)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for message, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    by_logger: dict[str, list[str]] = {}
    for name, start in NOISY_LOG_LINES:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        logging.getLogger(name).addFilter(_DropMessages(tuple(starts)))
    if "transformers" in sys.modules:  # already imported: it read the environment variable before
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
