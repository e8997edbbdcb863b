"""MM-Vet: open answers graded 0.0-1.0 by a judge against MM-Vet's ground truth.

Graded and totalled as the official grader (``protocol: mmvet-official``, see
:mod:`mllm_eval.scoring.mmvet`): its few-shot prompt, its retries (then 0.0), capability
combinations grouped by set, figures rounded to 1 decimal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import MAX_UNPARSED_DOC, JudgedBenchmark, answers_by_id, image_path, judge_provenance
from mllm_eval._io import ScoreInputError, read_json, read_jsonl, require_file, require_keys
from mllm_eval.scoring import mmvet as scoring

QUESTIONS_WHAT = "LLaVA's MM-Vet question file (llava-mm-vet.jsonl: question_id, image, text)"
_MEME_TRUTH = (
    "This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. "
    "Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in "
    "ice and snow. The meme is saying that the person has trust issues because the names of these countries do "
    "not accurately represent their landscapes."
)
GRADES_WHAT = "the MM-Vet grader's JSON ({\"v1_<id>\": {\"score\": [0.0-1.0 per run], ...}})"
CAPS_WHAT = "MM-Vet's mm-vet.json ({\"v1_<id>\": {\"capability\": [...], \"answer\": ...}})"

#: The official grader's few-shot prompt (mm-vet_evaluator.py); a sample's row is appended to it.
GRADER_PROMPT = (
    "Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. "
    "<AND> in the ground truth means it is totally right only when all elements in the ground truth are present "
    "in the prediction, and <OR> means it is totally right when any one element in the ground truth is present "
    "in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, "
    "or 1.0 (totally right). Just complete the last space of the correctness score.\n"
    "\n"
    "Question | Ground truth | Prediction | Correctness\n"
    "--- | --- | --- | ---\n"
    "What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0\n"
    "What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5\n"
    "What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5\n"
    "What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5\n"
    "What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0\n"
    "Can you explain this meme? | " + _MEME_TRUTH + " | The meme talks about Iceland and Greenland. It's pointing "
    "out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4\n"
    "Can you explain this meme? | " + _MEME_TRUTH + " | The meme is using humor to point out the misleading nature "
    "of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is "
    "mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that "
    "these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected "
    "contrast between the names of the countries and their actual physical characteristics. | 1.0\n"
)


def grader_prompt(question: str, answer: str, prediction: str) -> str:
    """The grader's prompt for one sample: the few-shot table and its row (``<AND>``/``<OR>`` spaced)."""
    truth = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADER_PROMPT + "\n" + " | ".join([question, truth, prediction, ""])


class MMVetConfig(ComponentConfig):
    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    annotations: str | None = Field(None, description=CAPS_WHAT + "; gold answers for the judge, capabilities for the breakdown")
    image_folder: str | None = None
    judge: dict[str, Any] | None = Field(None, description="judge config, e.g. {name: openai, model: gpt-4-0613}")
    protocol: Literal["mmvet-official"] = Field("mmvet-official", description="scoring protocol: mmvet-official "
                                                                          "(mm-vet_evaluator.py)")
    max_unparsed_fraction: float | None = Field(0.5, ge=0.0, le=1.0, description=MAX_UNPARSED_DOC + " (an unread grade is the grader's 0.0 in the figures)")
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


class MMVet(JudgedBenchmark):
    """MM-Vet total (percent) and per-capability scores when annotations are given."""

    metric_keys: ClassVar[tuple[str, ...]] = ("total", "unparsed")
    score_inputs: ClassVar[dict[str, str]] = {"grades": GRADES_WHAT, "capabilities": CAPS_WHAT}
    protocols: ClassVar[tuple[str, ...]] = scoring.PROTOCOLS
    name = "mmvet"

    def __init__(self, config: MMVetConfig | None = None, *, judge: Any = None) -> None:
        self.config = config or MMVetConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        self._judge = judge
        self._annotations = load_annotations(self.config.annotations, "annotations")

    def provenance(self) -> dict[str, str]:
        """The protocol followed and the judge, recorded beside the metrics."""
        return {"protocol": self.config.protocol, **judge_provenance(self._judge or self.config.judge)}

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
        judge = self.judge()
        grades: dict[str, list[float | None]] = {}
        unread = 0
        for item in items:
            gold = self._annotations.get(item.id, {}).get("answer")
            if gold is None:
                raise ScoreInputError(f"mmvet: annotations have no answer for {item.id}")
            prompt = grader_prompt(item.metadata.get("question", item.prompt), str(gold), texts[item.id])
            # the grader's retries: 0.0 after 5 unreadable replies (a real grade, as in its grade file)
            replies: list[str] = []

            def ask(text: str, _replies: list[str] = replies) -> str:
                _replies.append(judge.complete(text))
                return _replies[-1]

            value, _ = scoring.grade_with_retries(ask, prompt)
            grades[item.id] = [value]
            unread += scoring.parse_grade(replies[-1]) is None  # the grader's 0.0, not a grade the judge gave
        self.check_unparsed(unread, len(items), "grades could not be read after the grader's retries")
        caps = {k: v["capability"] for k, v in self._annotations.items()}
        return scoring.score(grades, caps)

    @classmethod
    def score_files(cls, *, grades: str | None = None, capabilities: str | None = None,
                    config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Totals from the official grader's output (its per-sample ``score`` lists).

        A score that is not a number in [0, 1] (the grader never writes one) scores 0.0, as
        the grader would have, and is counted in ``unparsed``.
        """
        MMVetConfig(**(config or {}))
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
