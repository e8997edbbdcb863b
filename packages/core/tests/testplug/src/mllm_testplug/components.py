"""Test components: they do real (small) work so the runner's behaviour can be observed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

from mllm.data.badrows import DataReport
from mllm.interfaces import DatasetConfig
from mllm.pipeline.config import ComponentRef, StageConfig
from mllm.records import Conversation, Turn


class LinesConfig(DatasetConfig):
    path: str


class LinesDataset:
    """Each line `question|answer` becomes a one-turn conversation; a line without `|` is bad."""

    record_kind = "conversation"

    def __init__(self, config: LinesConfig) -> None:
        self.config = config

    @classmethod
    def data_files(cls, config: LinesConfig) -> list[Path]:
        return [Path(config.path)]

    def records(self, report: DataReport):
        for number, line in enumerate(Path(self.config.path).read_text().splitlines(), start=1):
            with report.row(file=self.config.path, row=number):
                question, sep, answer = line.partition("|")
                if not sep:
                    raise ValueError("expected 'question|answer'")
                yield Conversation(id=f"line-{number}", turns=[Turn("user", question), Turn("assistant", answer)])


class TouchConfig(StageConfig):
    component_fields: ClassVar = {"data": "dataset"}
    data: ComponentRef | None = None
    message: str = "hello"
    api_key: str | None = None
    reads: list[str] = []

    def inputs(self) -> list[str]:
        return list(self.reads)


class TouchStage:
    """Writes the records it sees, one per line, resuming after what an earlier attempt wrote."""

    def __init__(self, config: TouchConfig, components: dict) -> None:
        self.config = config
        self.components = components

    def run(self, context) -> None:
        out = context.stage_dir / "items.txt"
        done = out.read_text().splitlines() if (context.resume and out.exists()) else []
        records = []
        if "data" in self.components:
            component = self.components["data"]
            report = DataReport(source=component.spec.name, on_bad_row=component.config.on_bad_row,
                                max_bad_fraction=component.config.max_bad_fraction)
            records = list(component.build().records(report))
            report.finish()
            report.write(context.stage_dir / "data_report.json")
        ids = [r.id for r in records] or [self.config.message]
        with open(out, "a") as handle:
            for index, item in enumerate(ids):
                if item in done:
                    continue
                # simulates an interruption without changing the stage config (and fingerprint)
                fail_at = os.environ.get("MLLM_TESTPLUG_FAIL_AT")
                if fail_at is not None and index >= int(fail_at):
                    raise RuntimeError("interrupted on purpose")
                handle.write(item + "\n")
                handle.flush()
        runs = context.stage_dir / "attempts.json"
        attempts = json.loads(runs.read_text()) if runs.exists() else []
        attempts.append({"resume": context.resume, "skipped_done": len(done)})
        runs.write_text(json.dumps(attempts))
        context.metrics = {"items": len(ids)}
