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

``answer_style`` gives the same questions two longer answer formats, a CPU-scale stand-in
for ScienceQA's data-quality study (full vs shortened vs reformatted answers):

* ``short`` (default): the format above, byte for byte.
* ``explained``, like ScienceQA's QCM-LEA: the prompt asks ``Explain, then give the
  answer.`` and the answer is ``Lecture: <1 to 4 generic sentences about colours and
  shapes>. Explanation: The image shows a {colour} {shape}. <a sentence tying it to the
  question>. The answer is {answer}.`` The lecture is drawn per row by a seeded RNG (the
  row's index and ``seed``), so answer lengths vary widely and a row's answer does not depend
  on ``limit``. The last sentence is always exactly ``The answer is {answer}.``, so the core
  ``shorten`` op turns an answer into ``The answer is {answer}.``
* ``realigned``: the same facts in one fixed concise structure, no lecture:
  ``The image shows a {colour} {shape}. The question asks about its color. The answer is
  {answer}.`` It is **made by rule**, not by a judge model: a stand-in for ReAlign's
  judge rewrite where no generator model runs. Same prompt as ``explained``.

An image's facts (colour, shape) come from the split's own open questions about that
image (those answered by a colour or a shape); a fact the split never asks about is left
out of the sentence. Record ids are the same in every style: a record is one question row
whichever answer it carries (as ScienceQA's problem ids do across prompt formats), so the
styles' rows line up by id.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Iterator, Literal

from mllm import IMAGE_TOKEN, Conversation, DataReport, DatasetConfig, Turn
from pydantic import Field

#: LLaVA-1.5's short-answer instruction, appended to every easy-VQA question.
SHORT_ANSWER = "Answer the question using a single word or phrase."
#: the instruction of the explained and realigned styles (an answer that reasons, then answers)
EXPLAIN_ANSWER = "Explain, then give the answer."
SPLITS = ("train", "test")
ANSWER_STYLES = ("short", "explained", "realigned")
COLOURS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
SHAPES = ("circle", "rectangle", "triangle")

#: the explained style's lecture: generic sentences about colours and shapes (1 to 4 per row,
#: drawn by a seeded RNG); plain words the easy-VQA questions also use, so a tiny tokenizer
#: trained on those questions spells them in few tokens
LECTURE = (
    "A shape in an image has a color and a form.",
    "A circle is round and has no corners.",
    "A rectangle has four sides and four corners.",
    "A triangle has three sides and three corners.",
    "Red, blue, green and yellow are colors.",
    "Black, gray and brown are dark colors.",
    "Teal is a color between blue and green.",
    "To answer, look at the shape in the image and at its color.",
    "The color of a shape does not change its form.",
    "An image can show a shape of any color.",
)


def format_prompt(question: str, answer_style: str = "short") -> str:
    """The user turn of one question: ``<image>\\n{question}\\nAnswer the question using a single word or phrase.``
    (``answer_style`` explained or realigned: ``<image>\\n{question}\\nExplain, then give the answer.``)"""
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style {answer_style!r} is not one of {list(ANSWER_STYLES)}")
    return f"{IMAGE_TOKEN}\n{question}\n{SHORT_ANSWER if answer_style == 'short' else EXPLAIN_ANSWER}"


@lru_cache(maxsize=8)
def image_facts(questions_file: Path, *, strict: bool = False) -> dict[int, dict[str, str]]:
    """``{image id: {"colour": ..., "shape": ...}}`` from a split's open questions: those whose
    answer is a colour give the image's colour, those answered by a shape its shape (built once).

    Lenient by default: malformed rows are skipped (they are the bad-row policy's, when
    ``records()`` reaches them) and a later answer wins. ``strict``: a malformed row, or an
    image given two colours or two shapes, is a ``ValueError`` naming the file and row (a
    dataset built on the facts alone, as ``easyvqa-named``, must not guess)."""
    facts: dict[int, dict[str, str]] = {}
    for index, row in enumerate(json.loads(Path(questions_file).read_text())):
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[1], str)):
            if strict:
                raise ValueError(f"{questions_file}, row {index}: expected [question, answer, image id], got {row!r}")
            continue
        answer, image_id = row[1], row[2]
        kind = "colour" if answer in COLOURS else "shape" if answer in SHAPES else None
        if kind is None:
            continue  # yes/no: not a fact on its own
        known = facts.setdefault(int(image_id), {})
        if strict and known.get(kind, answer) != answer:
            raise ValueError(f"{questions_file}, row {index}: image {image_id} is {known[kind]!r} in an earlier "
                             f"question and {answer!r} here")
        known[kind] = answer
    return facts


def _sees(facts: dict[str, str]) -> str:
    """``The image shows a red circle.`` with what is known of the image ('' when nothing is)."""
    colour, shape = facts.get("colour"), facts.get("shape")
    if colour is None and shape is None:
        return ""
    return f"The image shows a {' '.join(w for w in (colour, shape or 'shape') if w)}. "


def _asked_about(question: str) -> str | None:
    """The thing a yes/no question asks about: ``a red shape`` or ``a circle`` (None if neither is named)."""
    words = question.lower().rstrip("?").split()
    colour = next((w for w in words if w in COLOURS), None)
    if colour is not None:
        return f"a {colour} shape"
    shape = next((w for w in words if w in SHAPES), None)
    return f"a {shape}" if shape is not None else None


def explain_answer(question: str, answer: str, facts: dict[str, str], rng: random.Random | None,
                   style: str) -> str:
    """The ``explained`` (``rng`` draws the lecture) or ``realigned`` answer of one question;
    both end with exactly ``The answer is {answer}.``"""
    if answer in COLOURS:
        focus, tie = "about its color", "The question asks what color the shape is."
    elif answer in SHAPES:
        focus, tie = "about its shape", "The question asks what shape is in the image."
    else:
        thing = _asked_about(question)
        negated = " not " in f" {question.lower()} " or question.lower().startswith("is no ")
        has = (answer == "yes") != negated  # what the gold answer says of the image
        focus = f"whether the image has {thing}" if thing else "about the image"
        tie = (f"The question asks about {thing}, and the image {'has' if has else 'does not have'} one."
               if thing else "The question asks about the image.")
    final = f"The answer is {answer}."
    if style == "realigned":
        return f"{_sees(facts)}The question asks {focus}. {final}"
    lecture = " ".join(rng.sample(LECTURE, rng.randint(1, 4)))
    return f"Lecture: {lecture} Explanation: {_sees(facts)}{tie} {final}"


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
    answer_style: Literal["short", "explained", "realigned"] = Field(
        "short", description="short: one word (LLaVA-1.5's short-answer prompt); explained: ScienceQA QCM-LEA-like "
                             "'Lecture: ... Explanation: The image shows a red circle. ... The answer is red.' (lecture "
                             "of 1-4 seeded generic sentences) to the prompt 'Explain, then give the answer.'; realigned: "
                             "the same facts in one fixed concise structure, no lecture, made by rule (not by a judge "
                             "model): a stand-in for ReAlign's rewrite; ids are the same in every style")


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
        style = self.config.answer_style
        facts = image_facts(questions_file) if style != "short" else {}
        for index in (kept[i] for i in select_rows(len(kept), self.config.limit, self.config.seed)):
            record = None
            with report.row(file=questions_file, row=index, index=index):
                question, answer, image_id = rows[index]
                if not isinstance(question, str) or not isinstance(answer, str):
                    raise TypeError(f"expected [question, answer, image id], got {rows[index]!r}")
                image = images_dir / f"{int(image_id)}.png"
                reply = answer
                if style != "short":
                    # the row's own RNG: its lecture is the same whatever limit picked it
                    rng = random.Random(f"easyvqa-lecture-{self.config.seed}-{index}")
                    reply = explain_answer(question, answer, facts.get(int(image_id), {}), rng, style)
                record = Conversation(
                    id=f"easyvqa-{self.config.split}-{index}",
                    turns=(Turn("user", format_prompt(question, style)), Turn("assistant", reply)),
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
