"""Images plus a JSON Lines question file: the ``image-qa-folder`` dataset.

The shape of LLaVA's evaluation question files and of the personalisation study's data:
one JSON object a line, ``{"question_id": ..., "image": "x.png", "text": "...", "answer": "..."}``
(``category`` and other keys are kept in ``metadata``). ``image`` may be absent
(text-only), a file name, or a list of file names.

```yaml
data:
  name: image-qa-folder
  path: /data/facts/questions.jsonl
  image_folder: /data/facts/images     # default: the folder of path
  as: conversation                     # conversation (train on question -> answer) or eval_item
  prompt_suffix: "Answer the question using a single word or phrase."   # optional, appended on a new line
  choices: [yes, no]                   # optional closed answer set of eval items
```

``text`` usually has no ``<image>`` placeholder (LLaVA's ``model_vqa`` puts it in
front); one ``<image>\\n`` per image is then put in front of the text. A text that does
hold placeholders must hold exactly one per image. ``as: conversation`` needs ``answer``
on every row; ``as: eval_item`` makes it the gold answer when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Iterator

from mllm import IMAGE_TOKEN, Conversation, DataReport, EvalItem, Turn
from pydantic import Field

from mllm_data._rows import (
    FileDatasetConfig,
    RecordAs,
    check_length,
    image_list,
    iter_selected,
    read_rows,
    resolve_images,
)


class ImageQAFolderConfig(FileDatasetConfig):
    """Options of the ``image-qa-folder`` dataset."""

    path: str = Field(description="JSON Lines file: question_id, image, text, answer per line")
    image_folder: str | None = Field(None, description="folder of the images (default: the folder of path)")
    as_: RecordAs = Field("conversation", alias="as", description="conversation (question -> answer, for training) "
                                                                  "or eval_item (answer = gold)")
    prompt_suffix: str | None = Field(None, description="text appended to every question on a new line")
    choices: list[str] | None = Field(None, description="eval_item: the closed answer set (e.g. [yes, no])")


class ImageQAFolder:
    """The ``image-qa-folder`` dataset (see the module docstring)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: ImageQAFolderConfig) -> None:
        self.config = config
        self.record_kind = config.as_  # type: ignore[misc]

    @classmethod
    def data_files(cls, config: ImageQAFolderConfig) -> list[Path]:
        return [Path(config.path).expanduser()]

    def records(self, report: DataReport) -> Iterator[Conversation | EvalItem]:
        config = self.config
        path = Path(config.path).expanduser()
        folder = Path(config.image_folder).expanduser() if config.image_folder else path.parent
        for index, label, row in iter_selected(read_rows(path), config.limit, config.seed):
            record = None
            with report.row(file=path, row=label, index=index) as entry:
                if isinstance(row, Exception):
                    raise row
                if isinstance(row, dict):
                    entry.id = row.get("question_id", row.get("id"))
                record = self._record(row, index, folder, f"{path.name}:{label}", report)
            if record is not None:
                yield record

    def _record(self, row: object, index: int, folder: Path, source: str,
                report: DataReport) -> Conversation | EvalItem:
        config = self.config
        if not isinstance(row, dict):
            raise TypeError(f"a row must be a JSON object (question_id, image, text, answer), got {type(row).__name__}")
        record_id = str(row.get("question_id", row.get("id", f"{Path(config.path).stem}-{index}")))
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"question {record_id!r}: 'text' is empty or not text")
        names = image_list(row.get("image"))
        placeholders = text.count(IMAGE_TOKEN)
        if placeholders == 0 and names:
            text = f"{IMAGE_TOKEN}\n" * len(names) + text
        elif placeholders != len(names):
            raise ValueError(f"question {record_id!r}: {placeholders} {IMAGE_TOKEN} placeholder(s) in 'text' but "
                             f"{len(names)} image(s)")
        if config.prompt_suffix:
            text = f"{text}\n{config.prompt_suffix}"
        answer = row.get("answer")
        if answer is not None and not isinstance(answer, str):
            answer = str(answer)
        check_length([text, answer or ""], config.max_chars)
        images = resolve_images(names, folder, config.check_images, image_paths=config.image_paths, report=report)
        metadata = {k: v for k, v in row.items() if k not in ("question_id", "id", "image", "text", "answer")}
        metadata["source"] = source
        if config.as_ == "eval_item":
            return EvalItem(id=record_id, prompt=text, images=images, answer=answer,
                            choices=tuple(config.choices) if config.choices else None, metadata=metadata,
                            check_files=False)
        if not answer or not answer.strip():
            raise KeyError(f"'answer' (question {record_id!r} has no answer to train on; use as: eval_item for "
                           "questions without answers)")
        return Conversation(id=record_id, turns=(Turn("user", text), Turn("assistant", answer)), images=images,
                            metadata=metadata, check_files=False)
