"""SHR: HA-DPO's sentence-level hallucination ratio of detailed image descriptions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import answer_text, answers_by_id, get_judge, image_path
from mllm_eval._io import ScoreInputError, read_json_or_jsonl, read_jsonl, read_keyed_jsonl, require_file, require_keys
from mllm_eval.scoring import shr as scoring

QUESTIONS_WHAT = ("SHR annotations, JSON Lines {image_id, image, regions: [{x, y, w, h, phrase}], "
                  "factual: [...]} (Visual Genome region descriptions)")
ANSWERS_WHAT = "descriptions, JSON Lines {question_id, text} or HA-DPO's JSON {\"<image_id>\": description}"
GRADES_WHAT = "saved judge replies, JSON Lines {question_id, judgement}"


class SHRConfig(ComponentConfig):
    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    image_folder: str | None = None
    prompt: str = Field("Describe this image in detail.", description="the description request")
    judge: dict[str, Any] | None = Field(None, description="judge config, e.g. {name: openai, model: gpt-4}")
    answer_mode: Literal["generate"] = "generate"
    max_new_tokens: int = Field(512, ge=1)


def _annotations(path: str | None, option: str) -> dict[str, dict[str, Any]]:
    return read_keyed_jsonl(path, option, QUESTIONS_WHAT, ("image_id", "regions"))


class SHR:
    """Hallucinated sentences / judged sentences (percent); unparsed judgements counted."""

    metric_keys: ClassVar[tuple[str, ...]] = ("shr", "unparsed")
    score_inputs: ClassVar[dict[str, str]] = {"answers": ANSWERS_WHAT, "questions": QUESTIONS_WHAT, "grades": GRADES_WHAT}

    def __init__(self, config: SHRConfig | None = None, *, judge: Any = None) -> None:
        self.config = config or SHRConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        self._judge = judge

    def items(self, *, check_files: bool = True) -> list[EvalItem]:
        ann = _annotations(self.config.questions, "questions")
        items = []
        for image_id, row in ann.items():
            name = row.get("image", f"{image_id}.jpg")
            image = image_path(self.config.image_folder, name, "shr") if check_files else name
            items.append(EvalItem(id=image_id, prompt="<image>\n" + self.config.prompt, images=(image,),
                                  metadata={"regions": row["regions"], "factual": row.get("factual", [])},
                                  check_files=check_files))
        return items

    def judge_prompts(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, str]:
        texts = answers_by_id(items, answers, "shr")
        return {i.id: scoring.judge_prompt(i.metadata["regions"], i.metadata["factual"], texts[i.id]) for i in items}

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str],
              judgements: Mapping[str, str] | None = None) -> dict[str, float]:
        texts = answers_by_id(items, answers, "shr")
        if judgements is None:
            judge = get_judge(self._judge or self.config.judge, "shr")
            prompts = self.judge_prompts(items, texts)
            judgements = {i.id: judge.complete(prompts[i.id]) for i in items}
        judged = []
        for item in items:
            reply = judgements.get(item.id)
            n = len(scoring.split_sentences(texts[item.id]))
            judged.append(None if reply is None else scoring.parse_judgement(reply, n))
        return scoring.summarize(judged)

    @classmethod
    def score_files(cls, *, answers: str | None = None, questions: str | None = None, grades: str | None = None,
                    config: Mapping[str, Any] | None = None, judge: Any = None) -> dict[str, float]:
        cfg = SHRConfig(**{**(config or {}), **({"questions": questions} if questions else {})})
        bench = cls(cfg, judge=judge)
        items = bench.items(check_files=False)
        p = require_file(answers, "--answers", ANSWERS_WHAT)
        data = read_json_or_jsonl(p, "--answers", ANSWERS_WHAT)
        if isinstance(data, dict) and "question_id" not in data:
            texts = {str(k): str(v) for k, v in data.items()}
        else:
            rows = data if isinstance(data, list) else [data]
            texts = {}
            for i, row in enumerate(rows):
                require_keys(row, ("question_id",), p, "--answers", i, ANSWERS_WHAT)
                texts[str(row["question_id"])] = answer_text(row, p, "--answers", i)
        judgements = None
        if grades is not None:
            g = require_file(grades, "--grades", GRADES_WHAT)
            judgements = {}
            for i, row in enumerate(read_jsonl(g, "--grades", GRADES_WHAT)):
                require_keys(row, ("question_id", "judgement"), g, "--grades", i, GRADES_WHAT)
                judgements[str(row["question_id"])] = str(row["judgement"])
            missing = [i.id for i in items if i.id not in judgements]
            if missing:
                raise ScoreInputError(f"--grades {os.fspath(g)!r} has no judgement for {len(missing)} image(s) "
                                      f"(first: {missing[0]})")
        return bench.score(items, texts, judgements)
