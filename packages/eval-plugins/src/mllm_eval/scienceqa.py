"""ScienceQA (test split) in LLaVA's CQM-A format, scored as LLaVA's eval_science_qa.py
(``protocol: llava``, default) or as lmms-eval's scienceqa tasks (``protocol: lmms-eval``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import answer_text, image_path, row_id
from mllm_eval._io import ScoreInputError, read_json, read_json_or_jsonl, require_file
from mllm_eval.scoring import scienceqa as scoring

QUESTIONS_WHAT = "LLaVA's ScienceQA question file (llava_test_CQM-A.json: id, conversations, image)"
ANSWERS_WHAT = ("answers, JSON Lines {question_id, text} (or an eval stage's answers.jsonl {id, answer}), or "
                "LLaVA's scored output ({correct: [...], incorrect: [...]} with question_id and pred)")
PROBLEMS_WHAT = "ScienceQA's problems.json (subject, hint, image, grade per id) for the category breakdown"


class ScienceQAConfig(ComponentConfig):
    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    root: str | None = Field(None, description="instead of questions: ScienceQA's data/scienceqa folder (problems.json, "
                                               "pid_splits.json), its questions put in LLaVA's CQM-A format; images at "
                                               "<image_folder>/<split>/<pid>/image.png (default <root>/images)")
    split: Literal["test", "val", "minival", "minitest", "train", "trainval", "minitrain"] = Field(
        "test", description="with root: the split of pid_splits.json to evaluate")
    prompt_format: Literal["CQM-A", "QCM-LEA", "QCM-EA", "QCM-LA", "QCM-A"] = Field(
        "CQM-A", description="with root: the question format (the scienceqa dataset's prompt_format): CQM-A is "
                             "LLaVA's evaluation prompt; a QCM-* format asks as a model fine-tuned on it was taught")
    limit: int | None = Field(None, ge=1, description="with root: a seeded random subsample of this many questions")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    image_folder: str | None = Field(None, description="ScienceQA test images (the folder holding <id>/image.png)")
    problems: str | None = Field(None, description=PROBLEMS_WHAT)
    single_pred_prompt: bool = Field(True, description="append LLaVA's 'Answer with the option's letter...' line")
    protocol: Literal["llava", "lmms-eval"] = Field(
        "llava", description="answer parsing: llava (eval_science_qa.py) or lmms-eval (sqa_process_results)")
    answer_mode: Literal["generate", "choice"] = Field("generate")
    max_new_tokens: int = Field(16, ge=1)


def load_questions(path: str | os.PathLike | None, option: str = "--questions") -> list[dict[str, Any]]:
    p = require_file(path, option, QUESTIONS_WHAT)
    data = read_json(p, option, QUESTIONS_WHAT)
    if not isinstance(data, list):
        raise ScoreInputError(f"{option} {os.fspath(p)!r} is not a JSON list; expected {QUESTIONS_WHAT}")
    for i, row in enumerate(data):
        conv = row.get("conversations") if isinstance(row, dict) else None
        if "id" not in row or not isinstance(conv, list) or len(conv) < 2:
            raise ScoreInputError(f"{option} {os.fspath(p)!r} entry {i + 1} lacks id or a human/gpt conversation; "
                                  f"expected {QUESTIONS_WHAT}")
    return data


def load_answers(path: str | os.PathLike | None, option: str = "--answers") -> dict[str, str]:
    p = require_file(path, option, ANSWERS_WHAT)
    data = read_json_or_jsonl(p, option, ANSWERS_WHAT)
    if isinstance(data, dict) and ("correct" in data or "incorrect" in data):
        rows = list(data.get("correct", [])) + list(data.get("incorrect", []))
    elif isinstance(data, list):
        rows = data
    elif isinstance(data, dict) and ("question_id" in data or "id" in data):
        rows = [data]  # a one-line JSON Lines file
    else:
        raise ScoreInputError(f"{option} {os.fspath(p)!r} has an unknown shape; expected {ANSWERS_WHAT}")
    out: dict[str, str] = {}
    for i, row in enumerate(rows):
        qid = row_id(row) if isinstance(row, dict) else None
        if qid is None:
            raise ScoreInputError(f"{option} {os.fspath(p)!r} row {i + 1} lacks question_id; expected {ANSWERS_WHAT}")
        out[qid] = answer_text(row, p, option, i)
    return out


def load_problems(path: str | os.PathLike | None, option: str = "--problems") -> dict[str, dict[str, Any]] | None:
    if path is None:
        return None
    p = require_file(path, option, PROBLEMS_WHAT)
    data = read_json(p, option, PROBLEMS_WHAT)
    if not isinstance(data, dict):
        raise ScoreInputError(f"{option} {os.fspath(p)!r} is not a JSON object keyed by problem id; expected {PROBLEMS_WHAT}")
    return {str(k): v for k, v in data.items()}


class ScienceQA:
    """ScienceQA accuracy and IMG accuracy (percent), plus categories given problems.json."""

    metric_keys: ClassVar[tuple[str, ...]] = ("accuracy", "img_accuracy", "failed")
    score_inputs: ClassVar[dict[str, str]] = {"answers": ANSWERS_WHAT, "questions": QUESTIONS_WHAT, "problems": PROBLEMS_WHAT}
    protocols: ClassVar[tuple[str, ...]] = scoring.PROTOCOLS

    def __init__(self, config: ScienceQAConfig | None = None) -> None:
        self.config = config or ScienceQAConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        problems = self.config.problems
        if problems is None and self.config.root is not None:
            problems = str(Path(self.config.root).expanduser() / "problems.json")  # categories come free with root
        self._problems = load_problems(problems, "problems")

    def provenance(self) -> dict[str, str]:
        """The protocol followed, recorded beside the metrics."""
        return {"protocol": self.config.protocol}

    @classmethod
    def data_files(cls, config: ScienceQAConfig) -> list[Path]:
        if config.root is not None:
            root = Path(config.root).expanduser()
            return [root / "problems.json", root / "pid_splits.json"]
        return [Path(config.questions).expanduser()] if config.questions else []

    @staticmethod
    def build_items(rows: Sequence[dict[str, Any]], image_folder: str | None, *, check_files: bool,
                    single_pred_prompt: bool = True) -> list[EvalItem]:
        items = []
        for row in rows:
            human, gold = row["conversations"][0]["value"], row["conversations"][1]["value"].strip()
            prompt = human + ("\n" + scoring.SINGLE_PRED_PROMPT if single_pred_prompt else "")
            images: tuple[str, ...] = ()
            if "<image>" in human:
                name = row.get("image", f"{row['id']}/image.png")
                images = (image_path(image_folder, name, "scienceqa") if check_files else name,)
            n_opts = scoring.count_options(human) or len(scoring.OPTIONS)
            items.append(EvalItem(id=str(row["id"]), prompt=prompt, images=images, answer=gold,
                                  choices=scoring.OPTIONS[:n_opts], metadata={"human": human},
                                  check_files=check_files))
        return items

    def _items_from_root(self) -> list[EvalItem]:
        """The questions of ScienceQA's own files through the ``scienceqa`` dataset (CQM-A), ids = pids."""
        from mllm import DataReport
        from mllm_data import ScienceQA as ScienceQADataset
        from mllm_data import ScienceQAConfig as DatasetConfig

        config = self.config
        dataset = ScienceQADataset(DatasetConfig.model_validate({
            "root": config.root, "image_folder": config.image_folder, "split": config.split,
            "prompt_format": config.prompt_format, "as": "eval_item", "limit": config.limit, "seed": config.seed}))
        report = DataReport(source=f"benchmark 'scienceqa' ({config.root}, split {config.split})")
        items = []
        for item in dataset.records(report):
            human = item.prompt
            prompt = human + ("\n" + scoring.SINGLE_PRED_PROMPT if config.single_pred_prompt else "")
            items.append(EvalItem(id=str(item.metadata["pid"]), prompt=prompt, images=item.images, answer=item.answer,
                                  choices=item.choices, metadata={"human": human}, check_files=False))
        report.finish()
        return items

    def items(self) -> list[EvalItem]:
        if self.config.root is not None:
            return self._items_from_root()
        rows = load_questions(self.config.questions, "questions")
        return self.build_items(rows, self.config.image_folder, check_files=True,
                                single_pred_prompt=self.config.single_pred_prompt)

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
        questions = [scoring.Question(i.id, i.metadata.get("human", i.prompt), i.answer or "") for i in items]
        return scoring.score(questions, answers, self._problems, protocol=self.config.protocol)

    @classmethod
    def score_files(cls, *, answers: str | None = None, questions: str | None = None, problems: str | None = None,
                    config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Score answers (missing ones count as failed) against the question file's gold letters."""
        preds = load_answers(answers)
        rows = load_questions(questions)
        cfg = ScienceQAConfig(**{**(config or {}), **({"problems": problems} if problems else {})})
        items = cls.build_items(rows, None, check_files=False)
        known = {i.id for i in items}
        unknown = [q for q in preds if q not in known]
        if unknown and len(unknown) == len(preds):
            raise ScoreInputError(
                f"--answers {os.fspath(Path(answers or ''))!r}: none of its question ids appear in --questions "
                f"(first: {unknown[0]}); pass the question file the answers came from")
        return cls(cfg).score(items, preds)
