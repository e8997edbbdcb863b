"""ScienceQA as training data: the ``scienceqa`` dataset.

From ScienceQA's own files (``problems.json``, ``pid_splits.json`` and the image folder
``images/<split>/<pid>/image.png``), or from a file LLaVA's converter already wrote
(``llava_train_QCM-LEA.json``, read like ``llava-json``):

```yaml
data:
  name: scienceqa
  root: /data/ScienceQA/data/scienceqa     # holds problems.json and pid_splits.json
  image_folder: /data/ScienceQA/images     # default: <root>/images; images at <split>/<pid>/image.png
  split: train                             # train | val | test | trainval | minitrain | minival | minitest
  prompt_format: QCM-LEA                   # QCM-LEA | QCM-EA | QCM-LA | QCM-A | CQM-A
  limit: 1000                              # seeded random subsample: the seed studies' "mini" set
  seed: 0
# or, an already converted file:
data: {name: scienceqa, path: /data/scienceqa/llava_train_QCM-LEA.json, image_folder: /data/ScienceQA/images/train}
```

Prompt formats (LLaVA's ``convert_sqa_to_llava`` with ScienceQA's base prompt):

- ``QCM-LEA`` (the seeds' "full" answers): user ``{question}\\nContext: {hint or N/A}\\nOptions: (A) .. (B) ..``,
  assistant ``{lecture} {solution} The answer is {letter}.``; ``QCM-EA`` / ``QCM-LA``
  keep only the solution / only the lecture before the answer sentence.
- ``QCM-A``: the same question, the assistant answers with the letter only.
- ``CQM-A``: the question as in LLaVA's evaluation file ``llava_test_CQM-A.json``:
  ``Context: {hint}\\n`` (only when there is a hint), the question, then one option a line
  (``A. ...``); the answer is the letter.

LLaVA's converter writes ``{input}\\n<image>`` and its training code moves ``<image>`` to
the front of the turn; the records here hold what LLaVA trains on: ``<image>\\n{input}``.
``as: eval_item`` gives prompts with the letter as gold answer and the letters as
``choices`` (closed-set scoring).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

from mllm import IMAGE_TOKEN, Conversation, DataReport, EvalItem, InputFileError, MissingFileError, Turn
from pydantic import Field, model_validator

from mllm_data._rows import (
    FileDatasetConfig,
    RecordAs,
    check_length,
    not_utf8,
    resolve_images,
    select_rows,
)
from mllm_data.llava_json import llava_file_records

SPLITS = ("train", "val", "test", "trainval", "minitrain", "minival", "minitest")
OPTIONS = "ABCDE"
PromptFormat = Literal["QCM-LEA", "QCM-EA", "QCM-LA", "QCM-A", "CQM-A"]


class ScienceQAConfig(FileDatasetConfig):
    """Options of the ``scienceqa`` dataset."""

    root: str | None = Field(None, description="ScienceQA's data/scienceqa folder (problems.json, pid_splits.json)")
    path: str | None = Field(None, description="instead of root: a file LLaVA's converter wrote "
                                               "(llava_train_QCM-LEA.json), read as it is")
    image_folder: str | None = Field(None, description="images: <image_folder>/<split>/<pid>/image.png with root "
                                                      "(default <root>/images); the folder the file's image paths "
                                                      "are relative to with path (default: the file's folder)")
    split: Literal["train", "val", "test", "trainval", "minitrain", "minival", "minitest"] = Field(
        "train", description="a split of pid_splits.json")
    prompt_format: PromptFormat = Field("QCM-LEA", description="QCM-LEA (lecture, solution, 'The answer is X.'), "
                                                               "QCM-EA, QCM-LA, QCM-A (letter only), CQM-A (LLaVA's eval prompt)")
    as_: RecordAs = Field("conversation", alias="as", description="conversation (training) or eval_item")

    @model_validator(mode="after")
    def _one_source(self) -> ScienceQAConfig:
        if (self.root is None) == (self.path is None):
            raise ValueError("give root: <ScienceQA data/scienceqa folder> (problems.json + pid_splits.json) "
                             "or path: <a converted llava_*.json>, exactly one")
        return self


def _clean(text: str) -> str:
    return text.replace("  ", " ").strip()


def format_problem(problem: dict[str, Any], prompt_format: str) -> tuple[str, str]:
    """(user text without the image placeholder, assistant text) of one problem."""
    question = problem["question"]
    choices = problem["choices"]
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(OPTIONS):
        raise ValueError(f"'choices' must list 2 to {len(OPTIONS)} options, got {choices!r}")
    answer_index = problem["answer"]
    if not isinstance(answer_index, int) or not 0 <= answer_index < len(choices):
        raise ValueError(f"'answer' {answer_index!r} is not an index into the {len(choices)} choices")
    letter = OPTIONS[answer_index]
    hint = (problem.get("hint") or "").strip()
    if prompt_format == "CQM-A":
        lines = ([f"Context: {hint}"] if hint else []) + [question]
        lines += [f"{OPTIONS[i]}. {choice}" for i, choice in enumerate(choices)]
        return "\n".join(lines), letter
    context = hint or "N/A"
    options = " ".join(f"({OPTIONS[i]}) {choice}" for i, choice in enumerate(choices))
    user = _clean(f"{question}\nContext: {context}\nOptions: {options}\n")
    lecture = (problem.get("lecture") or "").strip()
    solution = (problem.get("solution") or "").strip()
    output = {
        "QCM-LEA": f"{lecture} {solution} The answer is {letter}.",
        "QCM-EA": f"{solution} The answer is {letter}.",
        "QCM-LA": f"{lecture} The answer is {letter}.",
        "QCM-A": letter,
    }[prompt_format]
    return user, _clean(output)


class ScienceQA:
    """The ``scienceqa`` dataset (see the module docstring)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: ScienceQAConfig) -> None:
        self.config = config
        self.record_kind = config.as_  # type: ignore[misc]

    @classmethod
    def data_files(cls, config: ScienceQAConfig) -> list[Path]:
        if config.path is not None:
            return [Path(config.path).expanduser()]
        root = Path(config.root).expanduser()
        return [root / "problems.json", root / "pid_splits.json"]

    def records(self, report: DataReport) -> Iterator[Conversation | EvalItem]:
        if self.config.path is not None:
            yield from self._converted(report)
        else:
            yield from self._original(report)

    def _converted(self, report: DataReport) -> Iterator[Conversation | EvalItem]:
        path = Path(self.config.path).expanduser()
        folder = Path(self.config.image_folder).expanduser() if self.config.image_folder else path.parent
        yield from llava_file_records(path, folder, self.config, report)

    def _original(self, report: DataReport) -> Iterator[Conversation | EvalItem]:
        config = self.config
        root = Path(config.root).expanduser()
        problems_file, splits_file = root / "problems.json", root / "pid_splits.json"
        for file in (problems_file, splits_file):
            if not file.is_file():
                raise MissingFileError(f"ScienceQA file {file} does not exist; root must be ScienceQA's "
                                       "data/scienceqa folder (problems.json, pid_splits.json)")
        problems = _load_json(problems_file, dict)
        splits = _load_json(splits_file, dict)
        if config.split not in splits:
            raise InputFileError(f"{splits_file}: no split {config.split!r}; it has {sorted(splits)}")
        pids = [str(p) for p in splits[config.split]]
        folder = Path(config.image_folder).expanduser() if config.image_folder else root / "images"
        for index in select_rows(len(pids), config.limit, config.seed):
            pid = pids[index]
            record = None
            with report.row(file=problems_file, row=f"pid {pid}", index=index, id=pid):
                if pid not in problems:
                    raise KeyError(f"pid {pid} of {splits_file.name}[{config.split!r}] is not in {problems_file.name}")
                record = self._record(pid, problems[pid], folder, report)
            if record is not None:
                yield record

    def _record(self, pid: str, problem: Any, folder: Path, report: DataReport) -> Conversation | EvalItem:
        config = self.config
        if not isinstance(problem, dict):
            raise TypeError(f"problem {pid} is not a JSON object")
        user, answer = format_problem(problem, config.prompt_format)
        check_length([user, answer], config.max_chars)
        names = [f"{problem.get('split', config.split)}/{pid}/{problem['image']}"] if problem.get("image") else []
        images = resolve_images(names, folder, config.check_images, image_paths=config.image_paths, report=report)
        if images:
            user = f"{IMAGE_TOKEN}\n{user}"
        metadata = {key: problem.get(key) for key in ("subject", "topic", "category", "skill", "grade", "task")
                    if key in problem}
        metadata.update({"pid": pid, "answer_index": problem["answer"], "prompt_format": config.prompt_format})
        record_id = f"scienceqa-{pid}"
        if config.as_ == "eval_item":
            letters = tuple(OPTIONS[: len(problem["choices"])])
            return EvalItem(id=record_id, prompt=user, images=images, answer=OPTIONS[problem["answer"]],
                            choices=letters, metadata=metadata, check_files=False)
        return Conversation(id=record_id, turns=(Turn("user", user), Turn("assistant", answer)), images=images,
                            metadata=metadata, check_files=False)


def _load_json(path: Path, kind: type) -> Any:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InputFileError(f"{path}: {not_utf8(error)}") from None
    except json.JSONDecodeError as error:
        raise InputFileError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
                             ) from None
    if not isinstance(data, kind):
        raise InputFileError(f"{path}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    return data
