"""A Hugging Face ``datasets`` dataset as records: the ``hf`` dataset.

Needs the optional extra: ``pip install 'mllm-data[hf]'`` (the ``datasets`` library).
Reads a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a
dataset already in the local ``datasets`` cache (loaded offline: nothing is downloaded).

```yaml
data:
  name: hf
  path: /data/my_vqa               # a save_to_disk folder, or a cached dataset's name
  split: train                     # for a DatasetDict / a cached dataset
  columns:                         # record field -> column (these are the defaults)
    id: id
    image: image                   # a path (str), a list of paths, or a decoded image (datasets Image)
    conversations: conversations   # LLaVA-shaped rows ...
    question: question             # ... or question/answer rows (used when there is no conversations column)
    answer: answer
  image_folder: /data/images       # string image paths are relative to it (default: path)
  question_template: "<image>\n{question}"   # how a question column becomes the user turn
  metadata: [category]             # columns copied into the record's metadata
  as: conversation                 # or eval_item
```

Decoded images (a ``datasets.Image`` column) are written once as PNG to
``image_cache`` (default ``$MLLM_CACHE/hf-images/<hash of path and split>/``, with
``$MLLM_CACHE`` defaulting to ``~/.cache/mllm``), because records hold file paths.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar, Iterator

from mllm import IMAGE_TOKEN, Conversation, DataReport, EvalItem, MissingFileError, Turn
from pydantic import BaseModel, ConfigDict, Field

from mllm_data._rows import (
    FileDatasetConfig,
    RecordAs,
    check_length,
    llava_row_record,
    resolve_images,
    select_rows,
)

MISSING_EXTRA = ("the hf dataset needs the Hugging Face datasets library, an optional extra of mllm-data: "
                 "pip install 'mllm-data[hf]'")


class Columns(BaseModel):
    """Which column holds which record field."""

    model_config = ConfigDict(extra="forbid")

    id: str = "id"
    image: str = "image"
    conversations: str = "conversations"
    question: str = "question"
    answer: str = "answer"


class HFDatasetConfig(FileDatasetConfig):
    """Options of the ``hf`` dataset."""

    path: str = Field(description="a save_to_disk folder, or the name of a dataset in the local datasets cache")
    split: str | None = Field(None, description="split of a DatasetDict or cached dataset (default: the only one, or train)")
    columns: Columns = Field(default_factory=Columns, description="record field -> column name")
    image_folder: str | None = Field(None, description="string image paths are relative to it (default: path)")
    question_template: str = Field(f"{IMAGE_TOKEN}\n{{question}}",
                                   description="the user turn of a question row; {question} is the question; "
                                               "the <image> placeholder is dropped for rows without an image")
    metadata: list[str] = Field(default_factory=list, description="columns copied into each record's metadata")
    image_cache: str | None = Field(None, description="where decoded images are written as PNG "
                                                      "(default $MLLM_CACHE/hf-images/<hash>/)")
    as_: RecordAs = Field("conversation", alias="as", description="conversation (training) or eval_item")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as error:
        raise ImportError(MISSING_EXTRA) from error
    return datasets


def load_hf(config: HFDatasetConfig) -> Any:
    """The ``datasets.Dataset`` of the config (a split picked from a DatasetDict)."""
    datasets = _datasets()
    path = Path(config.path).expanduser()
    if path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json")):
        loaded = datasets.load_from_disk(str(path))
    else:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        try:
            loaded = datasets.load_dataset(config.path, split=config.split)
        except Exception as error:  # datasets raises many kinds; name the path and how to fix
            raise MissingFileError(
                f"hf dataset {config.path!r}: not a save_to_disk folder and not loadable from the local cache "
                f"({type(error).__name__}: {error}); save it with Dataset.save_to_disk and give that folder") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        split = config.split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
        if split is None or split not in loaded:
            raise ValueError(f"hf dataset {config.path}: split {config.split!r} not found; splits are {splits}; "
                             "set split:")
        loaded = loaded[split]
    return loaded


class HFDataset:
    """The ``hf`` dataset (see the module docstring)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: HFDatasetConfig) -> None:
        _datasets()  # fail early, with the extra's name
        self.config = config
        self.record_kind = config.as_  # type: ignore[misc]

    @classmethod
    def data_files(cls, config: HFDatasetConfig) -> list[Path]:
        path = Path(config.path).expanduser()
        return [path] if path.exists() else []

    def _cache_dir(self) -> Path:
        if self.config.image_cache:
            return Path(self.config.image_cache).expanduser()
        base = Path(os.environ.get("MLLM_CACHE", Path.home() / ".cache" / "mllm"))
        key = hashlib.sha256(f"{Path(self.config.path).expanduser().resolve()}|{self.config.split}".encode()).hexdigest()
        return base / "hf-images" / key[:16]

    def _image_paths(self, value: Any, row_index: int, report: DataReport) -> list[str]:
        """Paths for an image cell: None, a path, a list, a PIL image or a {bytes, path} dict."""
        if value is None:
            return []
        values = value if isinstance(value, list) else [value]
        folder = Path(self.config.image_folder or self.config.path).expanduser()
        out = []
        for position, item in enumerate(values):
            if isinstance(item, str):
                out.extend(self._resolve(item, folder, report))
            elif isinstance(item, dict) and (item.get("bytes") or item.get("path")):
                if item.get("bytes"):
                    out.append(self._write(item["bytes"], row_index, position))
                else:
                    out.extend(self._resolve(item["path"], folder, report))
            elif hasattr(item, "save") and hasattr(item, "size"):  # a decoded PIL image
                out.append(self._write(item, row_index, position))
            else:
                raise TypeError(f"image column {self.config.columns.image!r}: cannot use {type(item).__name__} "
                                "as an image (expected a path, a list of paths or a datasets Image)")
        return out

    def _resolve(self, name: str, folder: Path, report: DataReport) -> list[str]:
        return resolve_images([name], folder, self.config.check_images, image_paths=self.config.image_paths,
                              report=report)

    def _write(self, image: Any, row_index: int, position: int) -> str:
        target = self._cache_dir() / f"{row_index}-{position}.png"
        if not target.is_file():
            import io

            from PIL import Image

            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(image, (bytes, bytearray)):
                image = Image.open(io.BytesIO(image))
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            image.convert("RGB").save(tmp, format="PNG")
            os.replace(tmp, target)
        return str(target)

    def records(self, report: DataReport) -> Iterator[Conversation | EvalItem]:
        config = self.config
        columns = config.columns
        data = load_hf(config)
        names = set(data.column_names)
        missing = [c for c in config.metadata if c not in names]
        if missing:
            raise ValueError(f"hf dataset {config.path}: metadata columns {missing} do not exist; columns are "
                             f"{sorted(names)}")
        shaped = columns.conversations in names
        if not shaped and (columns.question not in names or (config.as_ == "conversation" and columns.answer not in names)):
            raise ValueError(f"hf dataset {config.path}: needs a {columns.conversations!r} column (LLaVA-shaped rows) "
                             f"or {columns.question!r} and {columns.answer!r} columns; columns are {sorted(names)}; "
                             "map yours with columns: {conversations: ..., question: ..., answer: ...}")
        label_file = Path(config.path).expanduser()
        for index in select_rows(len(data), config.limit, config.seed):
            record = None
            with report.row(file=label_file, row=f"row {index}"):
                row = data[index]
                record_id = str(row[columns.id]) if columns.id in names else f"hf-{index}"
                images = self._image_paths(row.get(columns.image), index, report) if columns.image in names else []
                metadata = {c: row[c] for c in config.metadata}
                if shaped:
                    # images are absolute paths here (resolved or written above)
                    llava_row = {"id": record_id, "conversations": row[columns.conversations], "image": images}
                    record = llava_row_record(llava_row, record_id=record_id, image_folder=Path("/"),
                                              check_images=False, max_chars=config.max_chars, as_=config.as_,
                                              source=f"{label_file.name}:row {index}")
                    record.metadata.update(metadata)
                else:
                    record = self._qa_record(record_id, row, images, metadata)
            if record is not None:
                yield record

    def _qa_record(self, record_id: str, row: dict, images: list[str], metadata: dict) -> Conversation | EvalItem:
        config = self.config
        question = row[config.columns.question]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question column {config.columns.question!r} is empty or not text")
        template = config.question_template
        if not images:
            template = template.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "")
        prompt = template.format(question=question)
        answer = row.get(config.columns.answer)
        if answer is not None and not isinstance(answer, str):
            answer = str(answer)
        check_length([prompt, answer or ""], config.max_chars)
        if config.as_ == "eval_item":
            return EvalItem(id=record_id, prompt=prompt, images=images, answer=answer, metadata=metadata,
                            check_files=False)
        if not answer:
            raise ValueError(f"answer column {config.columns.answer!r} is empty")
        return Conversation(id=record_id, turns=(Turn("user", prompt), Turn("assistant", answer)), images=images,
                            metadata=metadata, check_files=False)

