"""LLaVA's conversation data as it is distributed: the ``llava-json`` dataset.

```yaml
data:
  name: llava-json
  path: /data/llava/llava_v1_5_mix665k.json   # a JSON list, or JSON Lines (.jsonl)
  image_folder: /data/llava                    # image paths in the rows are relative to it
  as: conversation                             # or eval_item (prompt = first human turn, answer = the gpt turn)
  check_images: true                           # existence + header of every image, before training
  max_chars: 20000                             # optional over-long row check
  limit: 1000                                  # optional seeded subsample (seed: 0)
  on_bad_row: skip                             # error (default) | skip, with max_bad_fraction
```

Rows are LLaVA's: ``{"id": ..., "image": "coco/train2017/x.jpg" | [..] (optional),
"conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": ...}, ...]}``.
Text-only rows (no ``image``) are allowed. Other keys of a row are kept in the record's
``metadata`` (the ``llava-instruct`` transform reads ``captions`` and ``boxes`` there).
A bad row (malformed JSON line, empty conversation, wrong role order, ``<image>`` count
not matching the images, missing or unreadable image, over-long text) is an error naming
the file and row (``row <index>`` of a JSON list, ``line <n>`` of JSON Lines), or with
``on_bad_row: skip`` an entry of ``data_report.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator

from mllm import Conversation, DataReport, EvalItem
from pydantic import Field

from mllm_data._rows import FileDatasetConfig, RecordAs, iter_selected, llava_row_record, read_rows


class LlavaJsonConfig(FileDatasetConfig):
    """Options of the ``llava-json`` dataset."""

    path: str = Field(description="LLaVA conversation data: a JSON list or JSON Lines file")
    image_folder: str | None = Field(None, description="folder the rows' image paths are relative to; "
                                                      "default: the folder of the data file")
    as_: RecordAs = Field("conversation", alias="as", description="conversation (training) or eval_item "
                                                                  "(first human turn = prompt, gpt turn = gold answer)")


class LlavaJson:
    """The ``llava-json`` dataset (see the module docstring)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: LlavaJsonConfig) -> None:
        self.config = config
        self.record_kind = config.as_  # type: ignore[misc]  # per instance: conversation or eval_item

    @classmethod
    def data_files(cls, config: LlavaJsonConfig) -> list[Path]:
        return [Path(config.path).expanduser()]

    def image_folder(self) -> Path:
        if self.config.image_folder is not None:
            return Path(self.config.image_folder).expanduser()
        return Path(self.config.path).expanduser().parent

    def records(self, report: DataReport) -> Iterator[Conversation | EvalItem]:
        yield from llava_file_records(Path(self.config.path).expanduser(), self.image_folder(), self.config, report)


def llava_file_records(path: Path, image_folder: Path, config: Any,
                       report: DataReport) -> Iterator[Conversation | EvalItem]:
    """Records of a LLaVA conversation file (JSON or JSON Lines) under the bad-row policy;
    ``config`` supplies ``limit``, ``seed``, ``check_images``, ``max_chars`` and ``as_``
    (the ``scienceqa`` dataset reads LLaVA's converted ScienceQA files with it too)."""
    for index, label, row in iter_selected(read_rows(path), config.limit, config.seed):
        record = None
        with report.row(file=path, row=label, index=index) as entry:
            if isinstance(row, Exception):
                raise row
            record_id = str(row["id"]) if isinstance(row, dict) and "id" in row else f"{path.stem}-{index}"
            entry.id = record_id
            record = llava_row_record(row, record_id=record_id, image_folder=image_folder,
                                      check_images=config.check_images, max_chars=config.max_chars,
                                      as_=config.as_, source=f"{path.name}:{label}",
                                      image_paths=config.image_paths, report=report)
        if record is not None:
            yield record
