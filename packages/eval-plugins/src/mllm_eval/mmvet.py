"""MM-Vet: open answers graded 0.0-1.0 by a judge against MM-Vet's ground truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import answers_by_id, get_judge, image_path
from mllm_eval._io import ScoreInputError, read_json, read_jsonl, require_file, require_keys
from mllm_eval.scoring import mmvet as scoring

QUESTIONS_WHAT = "LLaVA's MM-Vet question file (llava-mm-vet.jsonl: question_id, image, text)"
GRADES_WHAT = "the MM-Vet grader's JSON ({\"v1_<id>\": {\"score\": [0.0-1.0 per run], ...}})"
CAPS_WHAT = "MM-Vet's mm-vet.json ({\"v1_<id>\": {\"capability\": [...], \"answer\": ...}})"

GRADER_PROMPT = (
    "Compare the ground truth with the prediction of an AI model and give the prediction a correctness "
    "score. In the ground truth, <AND> means the prediction is fully right only if it contains every "
    "element, and <OR> means it is fully right if it contains any one element. Answer with a single "
    "number among 0.0, 0.1, ..., 1.0 (0.0 totally wrong, 1.0 totally right) and nothing else.\n\n"
    "Question: {question}\nGround truth: {answer}\nPrediction: {prediction}\nCorrectness score:"
)


class MMVetConfig(ComponentConfig):
    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    annotations: str | None = Field(None, description=CAPS_WHAT + "; gold answers for the judge, capabilities for the breakdown")
    image_folder: str | None = None
    judge: dict[str, Any] | None = Field(None, description="judge config, e.g. {name: openai, model: gpt-4-0613}")
    answer_mode: Literal["generate"] = "generate"
    max_new_tokens: int = Field(512, ge=1)


def load_annotations(path: str | os.PathLike | None, option: str) -> dict[str, dict[str, Any]] | None:
    if path is None:
        return None
    p = require_file(path, option, CAPS_WHAT)
    data = read_json(p, option, CAPS_WHAT)
    if not isinstance(data, dict):
        raise ScoreInputError(f"{option} {os.fspath(p)!r} is not a JSON object; expected {CAPS_WHAT}")
    out = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = {"capability": value}
        if not isinstance(value, dict) or not isinstance(value.get("capability"), list):
            raise ScoreInputError(f"{option} {os.fspath(p)!r} entry {key!r} has no capability list; expected {CAPS_WHAT}")
        out[str(key)] = value
    return out


class MMVet:
    """MM-Vet total (percent) and per-capability scores when annotations are given."""

    metric_keys: ClassVar[tuple[str, ...]] = ("total", "unparsed")
    score_inputs: ClassVar[dict[str, str]] = {"grades": GRADES_WHAT, "capabilities": CAPS_WHAT}

    def __init__(self, config: MMVetConfig | None = None, *, judge: Any = None) -> None:
        self.config = config or MMVetConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        self._judge = judge
        self._annotations = load_annotations(self.config.annotations, "annotations")

    def items(self) -> list[EvalItem]:
        path = require_file(self.config.questions, "questions", QUESTIONS_WHAT)
        items = []
        for i, row in enumerate(read_jsonl(path, "questions", QUESTIONS_WHAT)):
            require_keys(row, ("question_id", "image", "text"), path, "questions", i, QUESTIONS_WHAT)
            items.append(EvalItem(id=f"v1_{row['question_id']}", prompt="<image>\n" + row["text"],
                                  images=(image_path(self.config.image_folder, row["image"], "mmvet"),),
                                  metadata={"question": row["text"]}))
        return items

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, float]:
        if self._annotations is None:
            raise ScoreInputError("mmvet: grading needs the gold answers; set annotations to MM-Vet's mm-vet.json")
        texts = answers_by_id(items, answers, "mmvet")
        judge = get_judge(self._judge or self.config.judge, "mmvet")
        grades: dict[str, list[float | None]] = {}
        for item in items:
            gold = self._annotations.get(item.id, {}).get("answer")
            if gold is None:
                raise ScoreInputError(f"mmvet: annotations have no answer for {item.id}")
            reply = judge.complete(GRADER_PROMPT.format(question=item.metadata.get("question", item.prompt),
                                                        answer=gold, prediction=texts[item.id]))
            grades[item.id] = [scoring.parse_grade(reply)]
        caps = {k: v["capability"] for k, v in self._annotations.items()}
        return scoring.score(grades, caps)

    @classmethod
    def score_files(cls, *, grades: str | None = None, capabilities: str | None = None,
                    config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Totals from the official grader's output (its per-sample ``score`` lists)."""
        p = require_file(grades, "--grades", GRADES_WHAT)
        data = read_json(p, "--grades", GRADES_WHAT)
        if not isinstance(data, dict) or not data:
            raise ScoreInputError(f"--grades {os.fspath(p)!r} is not a non-empty JSON object; expected {GRADES_WHAT}")
        parsed: dict[str, list[float | None]] = {}
        for key, value in data.items():
            score = value.get("score") if isinstance(value, dict) else None
            if isinstance(score, (int, float)):
                score = [score]
            if not isinstance(score, list):
                raise ScoreInputError(f"--grades {os.fspath(p)!r} entry {key!r} has no score list; expected {GRADES_WHAT}")
            parsed[str(key)] = [float(s) if isinstance(s, (int, float)) and 0.0 <= s <= 1.0 else None for s in score]
        ann = load_annotations(capabilities, "--capabilities")
        caps = {k: v["capability"] for k, v in ann.items()} if ann is not None else None
        return scoring.score(parsed, caps)
