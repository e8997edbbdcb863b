"""LLaVA-Bench (COCO or in-the-wild): judge reviews against reference answers.

Scored as LLaVA's ``summarize_gpt_review.py`` (protocol ``llava``, see
:mod:`mllm_eval.scoring.llava_bench`): unparseable reviews count as ``[-1, -1]`` and
category means are rounded to 3 decimals before dividing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import MAX_UNPARSED_DOC, JudgedBenchmark, answers_by_id, image_path, judge_provenance
from mllm_eval._io import ScoreInputError, read_json, read_jsonl, require_file, require_keys
from mllm_eval.scoring import llava_bench as scoring

QUESTIONS_WHAT = "LLaVA-Bench questions, JSON Lines {question_id, image, text, category}"
REVIEWS_WHAT = "judge reviews, JSON Lines {content: '<ref score> <model score>\\n...', category}"


class LlavaBenchConfig(ComponentConfig):
    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    references: str | None = Field(None, description="reference (GPT-4) answers, JSON Lines {question_id, text}")
    context: str | None = Field(None, description="image context, JSON Lines {image, caption} (captions/boxes)")
    rule: str | None = Field(None, description="LLaVA's rule.json (judge prompt per category)")
    image_folder: str | None = None
    judge: dict[str, Any] | None = Field(None, description="judge config, e.g. {name: openai, model: gpt-4-0314}")
    protocol: Literal["llava"] = Field("llava", description="scoring protocol: llava (summarize_gpt_review.py)")
    max_unparsed_fraction: float | None = Field(0.5, ge=0.0, le=1.0, description=MAX_UNPARSED_DOC)
    answer_mode: Literal["generate"] = "generate"
    max_new_tokens: int = Field(1024, ge=1)


class LlavaBench(JudgedBenchmark):
    """Relative score (model mean / reference mean x 100) overall and per category."""

    # keys every scoring returns; "conv", "detail", "complex" are added for the categories present
    metric_keys: ClassVar[tuple[str, ...]] = ("overall", "unparsed")
    score_inputs: ClassVar[dict[str, str]] = {"reviews": REVIEWS_WHAT}
    protocols: ClassVar[tuple[str, ...]] = scoring.PROTOCOLS
    name = "llava-bench"

    def __init__(self, config: LlavaBenchConfig | None = None, *, judge: Any = None) -> None:
        self.config = config or LlavaBenchConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        self._judge = judge

    def provenance(self) -> dict[str, str]:
        """The protocol followed and the judge, recorded beside the metrics."""
        return {"protocol": self.config.protocol, **judge_provenance(self._judge or self.config.judge)}

    def items(self) -> list[EvalItem]:
        path = require_file(self.config.questions, "questions", QUESTIONS_WHAT)
        items = []
        for i, row in enumerate(read_jsonl(path, "questions", QUESTIONS_WHAT)):
            require_keys(row, ("question_id", "image", "text"), path, "questions", i, QUESTIONS_WHAT)
            items.append(EvalItem(id=str(row["question_id"]), prompt="<image>\n" + row["text"],
                                  images=(image_path(self.config.image_folder, row["image"], "llava-bench"),),
                                  metadata={"question": row["text"], "image": row["image"],
                                            "category": row.get("category", "default")}))
        return items

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
        texts = answers_by_id(items, answers, "llava-bench")
        refs_path = require_file(self.config.references, "references", "reference answers JSON Lines")
        refs = {str(r["question_id"]): r["text"] for r in read_jsonl(refs_path, "references", "{question_id, text}")}
        rule_path = require_file(self.config.rule, "rule", "LLaVA's rule.json")
        rules = read_json(rule_path, "rule", "LLaVA's rule.json")
        context: dict[str, str] = {}
        if self.config.context:
            cpath = require_file(self.config.context, "context", "{image, caption} JSON Lines")
            context = {r["image"]: r["caption"] for r in read_jsonl(cpath, "context", "{image, caption}")}
        judge = self.judge()
        reviews = []
        for item in items:
            if item.id not in refs:
                raise ScoreInputError(f"llava-bench: no reference answer for question {item.id} in {os.fspath(refs_path)}")
            category = item.metadata["category"]
            rule = rules.get(f"llava_bench_{category}") or rules.get(category) or rules["default"]
            system, prompt = scoring.review_prompt(item.metadata["question"], context.get(item.metadata["image"], ""),
                                                   refs[item.id], texts[item.id], rule)
            reply = judge.complete(prompt, system=system)
            reviews.append((category, scoring.parse_review_scores(reply)))
        metrics = scoring.relative_scores(reviews)
        self.check_unparsed(metrics["unparsed"], metrics["n"])
        return metrics

    @classmethod
    def score_files(cls, *, reviews: str | None = None, config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Relative scores from a review file, as LLaVA's ``summarize_gpt_review.py``.

        A row's ``tuple`` (the pair LLaVA's review script stored) is used as it is; a row
        without one has its ``content``'s first line parsed (``[-1, -1]`` when unreadable).
        """
        LlavaBenchConfig(**(config or {}))  # an unknown protocol or key is an error here too
        p = require_file(reviews, "--reviews", REVIEWS_WHAT)
        rows = read_jsonl(p, "--reviews", REVIEWS_WHAT)
        if not rows:
            raise ScoreInputError(f"--reviews {os.fspath(p)!r} is empty; expected {REVIEWS_WHAT}")
        parsed = []
        for i, row in enumerate(rows):
            pair = row.get("tuple")
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair):
                scores = None if [float(v) for v in pair] == list(scoring.UNPARSED) else (float(pair[0]), float(pair[1]))
            else:
                require_keys(row, ("content",), p, "--reviews", i, REVIEWS_WHAT)
                scores = scoring.parse_review_scores(str(row["content"]))
            parsed.append((str(row.get("category", "")), scores))
        return scoring.relative_scores(parsed)


