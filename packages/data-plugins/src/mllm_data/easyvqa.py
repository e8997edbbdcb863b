"""easy-VQA as training data: the ``easy-vqa`` package's questions as Conversations.

easy-VQA (``pip install easy-vqa``) is a small real VQA set: 64x64 images of one
coloured shape; 4,000 train / 1,000 test images with 38,575 / 9,673 questions and 13
answers (8 colours, 3 shapes, yes, no). Each question becomes one single-turn
:class:`~mllm.records.Conversation` in LLaVA-1.5's short-answer format::

    USER: <image>\\n{question}\\nAnswer the question using a single word or phrase.
    ASSISTANT: {answer}

The ``easyvqa`` benchmark (mllm-eval) asks exactly the same prompt, so training and
evaluation see one format. ``limit`` takes a seeded random subsample (the same ``seed``
and ``limit`` always give the same rows, kept in file order).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import ClassVar, Iterator, Literal

from mllm import IMAGE_TOKEN, Conversation, DataReport, DatasetConfig, Turn
from pydantic import Field

#: LLaVA-1.5's short-answer instruction, appended to every easy-VQA question.
SHORT_ANSWER = "Answer the question using a single word or phrase."
SPLITS = ("train", "test")


def format_prompt(question: str) -> str:
    """The user turn of one question: ``<image>\\n{question}\\nAnswer the question using a single word or phrase.``"""
    return f"{IMAGE_TOKEN}\n{question}\n{SHORT_ANSWER}"


def package_data_dir() -> Path:
    """The ``data/`` folder of the installed ``easy-vqa`` package."""
    try:
        import easy_vqa
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the easyvqa dataset needs the easy-vqa package: pip install easy-vqa") from error
    return Path(easy_vqa.__file__).parent / "data"


def split_files(split: str) -> tuple[Path, Path]:
    """(questions.json, images folder) of a split."""
    if split not in SPLITS:
        raise ValueError(f"easy-VQA split {split!r} does not exist; splits are {list(SPLITS)}")
    base = package_data_dir() / split
    return base / "questions.json", base / "images"


def select_rows(total: int, limit: int | None, seed: int) -> list[int]:
    """Row indices to keep: all of them, or a seeded random ``limit`` of them in file order."""
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), limit))


class EasyVQAConfig(DatasetConfig):
    """Options of the ``easyvqa`` dataset."""

    split: Literal["train", "test"] = Field("train", description="train (38,575 questions) or test (9,673)")
    limit: int | None = Field(None, ge=1, description="keep a seeded random subsample of this many questions")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    questions: Literal["all", "open", "yesno"] = Field(
        "all", description="all questions, only the open ones (what colour / what shape: every answer needs the "
                           "image), or only the yes/no ones; `open` suits a first stage that aligns the vision path")


class EasyVQA:
    """The ``easyvqa`` dataset: one Conversation per easy-VQA question."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: EasyVQAConfig | None = None) -> None:
        self.config = config or EasyVQAConfig()

    @classmethod
    def data_files(cls, config: EasyVQAConfig) -> list[Path]:
        questions, images = split_files(config.split)
        return [questions, images]

    def _wanted(self, row: list) -> bool:
        if self.config.questions == "all" or len(row) < 2:
            return True  # malformed rows go on to the bad-row policy
        is_yes_no = row[1] in ("yes", "no")
        return is_yes_no if self.config.questions == "yesno" else not is_yes_no

    def records(self, report: DataReport) -> Iterator[Conversation]:
        questions_file, images_dir = split_files(self.config.split)
        rows = json.loads(questions_file.read_text())
        kept = [i for i, row in enumerate(rows) if self._wanted(row)]
        for index in (kept[i] for i in select_rows(len(kept), self.config.limit, self.config.seed)):
            record = None
            with report.row(file=questions_file, row=index, index=index):
                question, answer, image_id = rows[index]
                if not isinstance(question, str) or not isinstance(answer, str):
                    raise TypeError(f"expected [question, answer, image id], got {rows[index]!r}")
                image = images_dir / f"{int(image_id)}.png"
                record = Conversation(
                    id=f"easyvqa-{self.config.split}-{index}",
                    turns=(Turn("user", format_prompt(question)), Turn("assistant", answer)),
                    images=(str(image),),
                    metadata={"question": question, "answer": answer, "image_id": int(image_id),
                              "question_type": "yes/no" if answer in ("yes", "no") else "open"},
                )
            if record is not None:
                yield record


class EasyVQACorpus:
    """The ``easyvqa`` text corpus (``model: {name: llava, init: tiny, tokenizer_corpus: easyvqa}``):
    easy-VQA's distinct questions (train, then test, in file order) and its answers, so a
    tiny model's tokenizer has whole tokens for the task's words."""

    def __init__(self, config: None = None) -> None:
        self.config = config

    def texts(self) -> list[str]:
        try:
            import easy_vqa
        except ImportError as error:  # pragma: no cover - a dependency of mllm-data
            raise ImportError("the easyvqa text corpus needs the easy-vqa package: pip install easy-vqa") from error
        texts: dict[str, None] = {}
        for questions in (easy_vqa.get_train_questions(), easy_vqa.get_test_questions()):
            for text in questions[0]:
                texts.setdefault(text, None)
        for answer in easy_vqa.get_answers():
            texts.setdefault(answer, None)
        return list(texts)
