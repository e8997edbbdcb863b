"""``preference-jsonl``: preference pairs from a JSON Lines file.

One JSON object a line: ``{"id": "p1", "image": "cat.png", "question": "...",
"chosen": "...", "rejected": "..."}`` (``image`` optional, relative to ``image_folder``,
default the file's folder). Each row becomes a :class:`mllm.records.Preference`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Iterator

from mllm import IMAGE_TOKEN, DataReport, DatasetConfig, Preference, Turn
from pydantic import Field


class PreferenceJsonlConfig(DatasetConfig):
    """Options of ``preference-jsonl``."""

    path: str = Field(description="JSON Lines file: id, image (optional), question, chosen, rejected")
    image_folder: str | None = Field(None, description="folder the image names are relative to (default: the file's)")


class PreferenceJsonl:
    """Preference records; bad rows follow on_bad_row."""

    record_kind: ClassVar[str] = "preference"

    def __init__(self, config: PreferenceJsonlConfig) -> None:
        self.config = config

    @classmethod
    def data_files(cls, config: PreferenceJsonlConfig) -> list[Path]:
        return [Path(config.path)] + ([Path(config.image_folder)] if config.image_folder else [])

    @classmethod
    def example_config(cls, tmp_path: Path) -> dict:
        from mllm_example._files import write_rows

        rows = [{"id": f"p{i}", "image": f"{c}.png", "question": "What colour is the image?", "chosen": c,
                 "rejected": other} for i, (c, other) in enumerate((("red", "blue"), ("blue", "red")))]
        return {"path": str(write_rows(tmp_path, "pairs.jsonl", rows))}

    def records(self, report: DataReport) -> Iterator[Preference]:
        path = Path(self.config.path)
        folder = Path(self.config.image_folder) if self.config.image_folder else path.parent
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                record = None
                with report.row(file=path, row=number):
                    row = json.loads(line)
                    images = (str(folder / row["image"]),) if row.get("image") else ()
                    question = f"{IMAGE_TOKEN}\n{row['question']}" if images else row["question"]
                    record = Preference(id=str(row.get("id", number)), prompt=(Turn("user", question),),
                                        chosen=str(row["chosen"]), rejected=str(row["rejected"]), images=images)
                if record is not None:
                    yield record
