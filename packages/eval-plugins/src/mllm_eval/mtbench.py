"""MT-Bench (text only): FastChat's single-answer judge prompts, ratings 1-10 from ``[[rating]]``.

In an eval stage the model answers the first turn of each question (items carry a
single prompt); the second turn is scored from FastChat-format answer files
(``--answers`` with ``choices[0].turns``) or from FastChat judgment files (``--grades``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import MAX_UNPARSED_DOC, JudgedBenchmark, answers_by_id
from mllm_eval._io import ScoreInputError, read_jsonl, read_keyed_jsonl, require_file, require_keys
from mllm_eval.scoring import mtbench as scoring

QUESTIONS_WHAT = "MT-Bench question.jsonl {question_id, category, turns}"
ANSWERS_WHAT = "answers, JSON Lines: FastChat {question_id, choices: [{turns: [...]}]} or {question_id, text}"
GRADES_WHAT = "FastChat single-answer judgments, JSON Lines {question_id, turn, score or judgment}"
PROMPTS_WHAT = "FastChat judge_prompts.jsonl"


class MTBenchConfig(ComponentConfig):
    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    judge_prompts: str | None = Field(None, description=PROMPTS_WHAT)
    references: str | None = Field(None, description="reference answers (FastChat format) for math/reasoning/coding")
    judge: dict[str, Any] | None = Field(None, description="judge config, e.g. {name: openai, model: gpt-4}")
    max_unparsed_fraction: float | None = Field(0.5, ge=0.0, le=1.0, description=MAX_UNPARSED_DOC)
    answer_mode: Literal["generate"] = "generate"
    max_new_tokens: int = Field(1024, ge=1)


def _questions(path: str | None, option: str) -> dict[str, dict[str, Any]]:
    return read_keyed_jsonl(path, option, QUESTIONS_WHAT, ("question_id", "turns"))


def _turns(row: Mapping[str, Any]) -> list[str]:
    if isinstance(row.get("choices"), list) and row["choices"]:
        return list(row["choices"][0].get("turns", []))
    for key in ("text", "answer"):
        if isinstance(row.get(key), str):
            return [row[key]]
    return []


class MTBench(JudgedBenchmark):
    """Mean judge rating (1-10) overall, per turn and per category; unparsed ratings counted."""

    metric_keys: ClassVar[tuple[str, ...]] = ("score", "turn1", "unparsed")
    score_inputs: ClassVar[dict[str, str]] = {"answers": ANSWERS_WHAT, "questions": QUESTIONS_WHAT, "grades": GRADES_WHAT}
    name = "mtbench"

    def __init__(self, config: MTBenchConfig | None = None, *, judge: Any = None) -> None:
        self.config = config or MTBenchConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        self._judge = judge

    def items(self) -> list[EvalItem]:
        qs = _questions(self.config.questions, "questions")
        return [EvalItem(id=qid, prompt=q["turns"][0], metadata={"category": q.get("category", "")}) for qid, q in qs.items()]

    def _prompts(self) -> dict[str, dict[str, str]]:
        p = require_file(self.config.judge_prompts, "judge_prompts", PROMPTS_WHAT)
        return {r["name"]: r for r in read_jsonl(p, "judge_prompts", PROMPTS_WHAT)}

    def _references(self) -> dict[str, list[str]]:
        if not self.config.references:
            return {}
        p = require_file(self.config.references, "references", "reference answers")
        return {str(r["question_id"]): _turns(r) for r in read_jsonl(p, "references", "reference answers")}

    def _judge_all(self, questions: Mapping[str, Mapping[str, Any]], answers: Mapping[str, list[str]]) -> dict[str, float]:
        prompts, refs = self._prompts(), self._references()
        judge = self.judge()
        ratings = []
        for qid, turns in answers.items():
            q = questions[qid]
            for turn in (1, 2):
                if len(turns) < turn or len(q["turns"]) < turn:
                    continue
                system, prompt = scoring.judge_prompt(prompts, q, turns, turn, refs.get(qid) or q.get("reference"))
                rating = scoring.parse_rating(judge.complete(prompt, system=system))
                ratings.append((str(q.get("category", "")), turn, rating))
        metrics = scoring.summarize(ratings)
        self.check_unparsed(metrics["unparsed"], metrics["n"], "ratings could not be read")
        return metrics

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
        texts = answers_by_id(items, answers, "mtbench")
        questions = {i.id: {"turns": [i.prompt], "category": i.metadata.get("category", "")} for i in items}
        if self.config.questions:
            full = _questions(self.config.questions, "questions")
            for qid in questions:
                if qid in full:
                    questions[qid] = {**full[qid], "turns": full[qid]["turns"][:1]}
        return self._judge_all(questions, {k: [v] for k, v in texts.items()})

    @classmethod
    def score_files(cls, *, answers: str | None = None, questions: str | None = None, grades: str | None = None,
                    config: Mapping[str, Any] | None = None, judge: Any = None) -> dict[str, float]:
        cfg = MTBenchConfig(**{**(config or {}), **({"questions": questions} if questions else {})})
        cats = {qid: str(q.get("category", "")) for qid, q in _questions(cfg.questions, "--questions").items()} \
            if cfg.questions else {}
        if grades is not None:
            p = require_file(grades, "--grades", GRADES_WHAT)
            ratings = []
            for i, row in enumerate(read_jsonl(p, "--grades", GRADES_WHAT)):
                require_keys(row, ("question_id",), p, "--grades", i, GRADES_WHAT)
                if isinstance(row.get("score"), (int, float)) and row["score"] >= 0:
                    rating: float | None = float(row["score"])
                elif isinstance(row.get("judgment"), str):
                    rating = scoring.parse_rating(row["judgment"])
                else:
                    rating = None
                ratings.append((cats.get(str(row["question_id"]), ""), int(row.get("turn", 1)), rating))
            if not ratings:
                raise ScoreInputError(f"--grades {os.fspath(p)!r} is empty; expected {GRADES_WHAT}")
            return scoring.summarize(ratings)
        p = require_file(answers, "--answers", ANSWERS_WHAT + " (or pass --grades)")
        if not cfg.questions:
            raise ScoreInputError(f"--questions is required with --answers: {QUESTIONS_WHAT}")
        qs = _questions(cfg.questions, "--questions")
        turns = {}
        for i, row in enumerate(read_jsonl(p, "--answers", ANSWERS_WHAT)):
            require_keys(row, ("question_id",), p, "--answers", i, ANSWERS_WHAT)
            qid = str(row["question_id"])
            if qid not in qs:
                raise ScoreInputError(f"--answers {os.fspath(p)!r} row {i + 1}: question {qid} is not in --questions")
            turns[qid] = _turns(row)
        return cls(cfg, judge=judge)._judge_all(qs, turns)
