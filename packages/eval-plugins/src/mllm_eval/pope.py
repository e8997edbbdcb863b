"""POPE (object hallucination, yes/no) on COCO, in LLaVA-1.5's question format."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import answer_text, answers_by_id, image_path, row_id
from mllm_eval._io import ScoreInputError, read_jsonl, require_file, require_keys
from mllm_eval.scoring import pope as scoring

QUESTIONS_WHAT = "LLaVA's POPE question file (llava_pope_test.jsonl: question_id, image, text, category)"
LABELS_WHAT = "a folder of POPE label files coco_pope_<split>.json (question_id, image, text, label)"


class POPEConfig(ComponentConfig):
    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    labels: str | None = Field(None, description=LABELS_WHAT + "; use the release your question file matches")
    image_folder: str | None = Field(None, description="COCO val2014 images (needed to answer, not to score)")
    splits: list[Literal["random", "popular", "adversarial"]] = Field(
        default_factory=lambda: list(scoring.SPLITS), description="POPE splits to evaluate")
    protocol: Literal["llava", "lmms-eval"] = Field(
        "llava", description="answer reading and metrics: llava (eval_pope.py) or lmms-eval (exact yes/no, "
                             "yes_ratio of the labels)")
    answer_mode: Literal["generate", "choice"] = Field("choice", description="choice: score Yes/No from one forward pass")
    max_new_tokens: int = Field(8, ge=1)


def load_labels(folder: str | os.PathLike, splits: Sequence[str], option: str = "--labels") -> dict[scoring.Key, str]:
    root = Path(folder)
    if not root.is_dir():
        raise ScoreInputError(f"{option} {os.fspath(root)!r} is not a folder; pass {LABELS_WHAT}")
    labels: dict[scoring.Key, str] = {}
    for split in splits:
        path = require_file(root / f"coco_pope_{split}.json", option, LABELS_WHAT)
        rows = read_jsonl(path, option, LABELS_WHAT)
        for i, row in enumerate(rows):
            require_keys(row, ("image", "text", "label"), path, option, i, LABELS_WHAT)
            key = scoring.question_key(split, row["image"], row["text"])
            if key in labels:
                raise ScoreInputError(f"{option} {os.fspath(path)!r} row {i + 1}: question {key[2]!r} on {key[1]} appears twice")
            labels[key] = str(row["label"]).strip().lower()
    return labels


def load_items(questions: str | os.PathLike, labels: str | os.PathLike, splits: Sequence[str],
               image_folder: str | None, *, check_files: bool, option: str = "--questions") -> list[EvalItem]:
    """Eval items of the chosen splits, each with its label; mismatched label files are refused."""
    qpath = require_file(questions, option, QUESTIONS_WHAT)
    rows = read_jsonl(qpath, option, QUESTIONS_WHAT)
    label_map = load_labels(labels, splits)
    chosen = []
    for i, row in enumerate(rows):
        require_keys(row, ("question_id", "image", "text", "category"), qpath, option, i, QUESTIONS_WHAT)
        if row["category"] in splits:
            chosen.append(row)
    keys = [scoring.question_key(r["category"], r["image"], r["text"]) for r in chosen]
    try:
        scoring.check_labels(keys, label_map)
    except scoring.LabelMismatchError as error:
        raise ScoreInputError(f"{error}\n(questions: {os.fspath(qpath)}, labels: {os.fspath(labels)})") from None
    items = []
    for row, key in zip(chosen, keys, strict=True):
        image = image_path(image_folder, row["image"], "pope") if check_files else row["image"]
        items.append(EvalItem(
            id=str(row["question_id"]), prompt="<image>\n" + row["text"], images=(image,),
            answer=label_map[key], choices=("Yes", "No"),
            metadata={"split": key[0], "image": key[1], "question": key[2]}, check_files=check_files,
        ))
    return items


class POPE:
    """POPE: accuracy, precision, recall, F1 and yes-ratio per split (fractions in [0, 1]).

    Answers are paired with labels by (split, image, question text without LLaVA's
    answer-format suffix), never by position or id; see :mod:`mllm_eval.scoring.pope`.
    """

    metric_keys: ClassVar[tuple[str, ...]] = tuple(
        f"{s}/{m}" for s in scoring.SPLITS for m in ("accuracy", "precision", "recall", "f1", "yes_ratio")
    ) + ("accuracy", "f1")
    score_inputs: ClassVar[dict[str, str]] = {
        "answers": "model answers, JSON Lines {question_id, text} (LLaVA's answer file) or an eval stage's "
                   "answers.jsonl {id, prompt, answer}",
        "questions": QUESTIONS_WHAT,
        "labels": LABELS_WHAT,
    }
    protocols: ClassVar[tuple[str, ...]] = scoring.PROTOCOLS

    def __init__(self, config: POPEConfig | None = None) -> None:
        self.config = config or POPEConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        # the keys this config's splits always give (the class lists every split's)
        self.metric_keys = tuple(k for k in self.metric_keys if k.partition("/")[0] in self.config.splits or "/" not in k)

    def provenance(self) -> dict[str, str]:
        """The protocol followed, recorded beside the metrics."""
        return {"protocol": self.config.protocol}

    def items(self) -> list[EvalItem]:
        if not self.config.questions or not self.config.labels:
            raise ScoreInputError("pope: set questions (llava_pope_test.jsonl) and labels (the coco_pope_*.json folder)")
        image_path(self.config.image_folder, "", "pope")
        return load_items(self.config.questions, self.config.labels, self.config.splits,
                          self.config.image_folder, check_files=True, option="questions")

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
        texts = answers_by_id(items, answers, "pope")
        keyed = {}
        labels = {}
        for item in items:
            key = (item.metadata["split"], item.metadata["image"], item.metadata["question"])
            keyed[key] = texts[item.id]
            labels[key] = item.answer or ""
        return scoring.score_splits(keyed, labels, protocol=self.config.protocol)

    @classmethod
    def score_files(cls, *, answers: str | None = None, questions: str | None = None, labels: str | None = None,
                    config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Score LLaVA-format answers against a POPE label release, without a model."""
        cfg = POPEConfig(**(config or {}))
        apath = require_file(answers, "--answers", cls.score_inputs["answers"])
        if questions is None:
            raise ScoreInputError(f"--questions is required: {QUESTIONS_WHAT}")
        if labels is None:
            raise ScoreInputError(f"--labels is required: {LABELS_WHAT}")
        items = load_items(questions, labels, cfg.splits, None, check_files=False)
        by_id = {item.id: item for item in items}
        texts: dict[str, str] = {}
        for i, row in enumerate(read_jsonl(apath, "--answers", cls.score_inputs["answers"])):
            qid = row_id(row)
            if qid is None:
                require_keys(row, ("question_id",), apath, "--answers", i, cls.score_inputs["answers"])
            item = by_id.get(qid)
            if item is None:
                continue  # a split not asked for (or not in the question file)
            # LLaVA's answer files repeat the question: refuse answers to another question file
            # (an eval stage's answers.jsonl holds the prompt as styled for the model, so it is not compared)
            prompt = row.get("prompt") if "question_id" in row else None
            if isinstance(prompt, str) and scoring.strip_suffix(prompt) != item.metadata["question"]:
                raise ScoreInputError(
                    f"--answers {os.fspath(apath)!r} row {i + 1}: question_id {qid} asks {prompt!r} but the "
                    f"question file's {qid} is {item.metadata['question']!r}; pass the question file the answers came from"
                )
            texts[qid] = answer_text(row, apath, "--answers", i)
        return cls(cfg).score(items, texts)
