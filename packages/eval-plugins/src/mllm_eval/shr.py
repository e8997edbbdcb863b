"""SHR: HA-DPO's sentence-level hallucination ratio of detailed image descriptions.

Scored as HA-DPO's ``shr_eval`` (``protocol: hadpo``, see :mod:`mllm_eval.scoring.shr`).
The question file is JSON Lines, one image a line::

    {"image_id": 2339, "image": "2339.jpg", "width": 800, "height": 600,
     "regions": [{"x": 10, "y": 20, "width": 100, "height": 50, "phrase": "a man walking"}],
     "factual": ["The man holds a red umbrella."]}

(``width``/``height`` are the image size from Visual Genome's ``image_data.json``:
HA-DPO's judge prompt gives boxes normalised by it; regions may use ``w``/``h``.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from mllm import ComponentConfig, EvalItem
from pydantic import Field

from mllm_eval._base import JudgedBenchmark, answer_text, answers_by_id, image_path, judge_provenance, row_id
from mllm_eval._io import ScoreInputError, read_json_or_jsonl, read_keyed_jsonl, require_file
from mllm_eval.scoring import shr as scoring

QUESTIONS_WHAT = ("SHR annotations, JSON Lines {image_id, image, width, height, regions: [{x, y, width, height, "
                  "phrase}], factual: [...]} (Visual Genome regions and image size)")
ANSWERS_WHAT = ("descriptions: HA-DPO's JSON {\"<image_id>\": description}, JSON Lines {question_id, text}, "
                "or an eval stage's answers.jsonl {id, answer}")
GRADES_WHAT = ("saved judge replies: JSON Lines {question_id, judgement}, or HA-DPO's judgement.json "
               "({\"run1\": {\"<image_id>\": {\"raw_judgement\": ...}}})")


class SHRConfig(ComponentConfig):
    """Options of the ``shr`` benchmark."""

    questions: str | None = Field(None, description=QUESTIONS_WHAT)
    image_folder: str | None = None
    prompt: str = Field("Describe this image in detail.", description="the description request")
    judge: dict[str, Any] | None = Field(None, description="judge config; HA-DPO used {name: openai, model: gpt-4, "
                                                           "temperature: 0.7, max_tokens: 800}")
    protocol: Literal["hadpo"] = Field("hadpo", description="scoring protocol: hadpo (HA-DPO's shr_eval)")
    judge_attempts: int = Field(5, ge=1, description="times the judge is asked until its reply holds 'Judgement' "
                                                     "(HA-DPO asks without limit)")
    max_unparsed_fraction: float | None = Field(
        0.5, ge=0.0, le=1.0, description="fail when more than this share of images got no usable verdicts "
                                          "(checked after the protocol's own handling); none: never fail")
    answer_mode: Literal["generate"] = "generate"
    max_new_tokens: int = Field(512, ge=1)


def _annotations(path: str | None, option: str) -> dict[str, dict[str, Any]]:
    return read_keyed_jsonl(path, option, QUESTIONS_WHAT, ("image_id", "regions"))


def _size(row: Mapping[str, Any], option: str) -> tuple[float, float]:
    width, height = row.get("width"), row.get("height")
    if not isinstance(width, (int, float)) or not isinstance(height, (int, float)) or width <= 0 or height <= 0:
        raise ScoreInputError(
            f"{option}: image {row.get('image_id')!r} has no width/height; add the image size (Visual Genome's "
            "image_data.json) to each row: HA-DPO's judge prompt normalises the boxes by it")
    return float(width), float(height)


def read_descriptions(path: str | os.PathLike | None, option: str = "--answers") -> dict[str, str]:
    """Descriptions by image id from any of the ANSWERS_WHAT shapes."""
    p = require_file(path, option, ANSWERS_WHAT)
    data = read_json_or_jsonl(p, option, ANSWERS_WHAT)
    if isinstance(data, dict) and row_id(data) is None:
        return {str(k): str(v) for k, v in data.items()}  # HA-DPO's {image_id: description}
    rows = data if isinstance(data, list) else [data]
    texts: dict[str, str] = {}
    for i, row in enumerate(rows):
        qid = row_id(row) if isinstance(row, dict) else None
        if qid is None:
            raise ScoreInputError(f"{option} {os.fspath(p)!r} row {i + 1} lacks question_id; expected {ANSWERS_WHAT}")
        texts[qid] = answer_text(row, p, option, i)
    return texts


def read_judgements(path: str | os.PathLike, option: str = "--grades") -> dict[str, str]:
    """Raw judge replies by image id from JSON Lines or HA-DPO's ``judgement.json`` (its first run)."""
    p = require_file(path, option, GRADES_WHAT)
    data = read_json_or_jsonl(p, option, GRADES_WHAT)
    if isinstance(data, dict) and row_id(data) is None:
        runs = [v for v in data.values() if isinstance(v, dict)]
        if not runs:
            raise ScoreInputError(f"{option} {os.fspath(p)!r} has no judge run; expected {GRADES_WHAT}")
        replies = {}
        for image_id, entry in runs[0].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("raw_judgement"), str):
                raise ScoreInputError(f"{option} {os.fspath(p)!r} image {image_id!r} has no raw_judgement; "
                                      f"expected {GRADES_WHAT}")
            replies[str(image_id)] = entry["raw_judgement"]
        return replies
    rows = data if isinstance(data, list) else [data]
    replies = {}
    for i, row in enumerate(rows):
        qid = row_id(row) if isinstance(row, dict) else None
        if qid is None or not isinstance(row.get("judgement"), str):
            raise ScoreInputError(f"{option} {os.fspath(p)!r} row {i + 1} lacks question_id or judgement; "
                                  f"expected {GRADES_WHAT}")
        replies[qid] = row["judgement"]
    return replies


class SHR(JudgedBenchmark):
    """HA-DPO's SHR figures (``hal_sents_ratio``, per-image and word-level figures, repetition)."""

    metric_keys: ClassVar[tuple[str, ...]] = (
        "shr", "mean_hal_ratio", "hal_sents_ratio", "hal_words_ratio", "sents_per_image", "words_per_image",
        "hal_sents_per_image", "hal_words_per_image", "gram-1-repetition", "gram-2-repetition",
        "gram-3-repetition", "gram-4-repetition", "num_images", "unparsed")
    score_inputs: ClassVar[dict[str, str]] = {"answers": ANSWERS_WHAT, "questions": QUESTIONS_WHAT, "grades": GRADES_WHAT}
    protocols: ClassVar[tuple[str, ...]] = scoring.PROTOCOLS
    name = "shr"

    def __init__(self, config: SHRConfig | None = None, *, judge: Any = None) -> None:
        self.config = config or SHRConfig()
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens
        self._judge = judge

    def provenance(self) -> dict[str, str]:
        """The protocol followed and the judge (name and model), recorded beside the metrics."""
        return {"protocol": self.config.protocol, **judge_provenance(self._judge or self.config.judge)}

    def items(self, *, check_files: bool = True) -> list[EvalItem]:
        ann = _annotations(self.config.questions, "questions")
        items = []
        for image_id, row in ann.items():
            name = row.get("image", f"{image_id}.jpg")
            image = image_path(self.config.image_folder, name, "shr") if check_files else name
            items.append(EvalItem(id=image_id, prompt="<image>\n" + self.config.prompt, images=(image,),
                                  metadata={"regions": row["regions"], "factual": row.get("factual", []),
                                            "width": row.get("width"), "height": row.get("height"),
                                            "image_id": image_id},
                                  check_files=check_files))
        return items

    def judge_prompts(self, items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, str]:
        texts = answers_by_id(items, answers, "shr")
        prompts = {}
        for item in items:
            width, height = _size(item.metadata, "questions")
            prompts[item.id] = scoring.judge_prompt(item.metadata["regions"], item.metadata["factual"],
                                                    texts[item.id], width, height)
        return prompts

    def _ask(self, judge: Any, prompt: str) -> str:
        reply = ""
        for _ in range(self.config.judge_attempts):  # HA-DPO asks until the reply holds "Judgement"
            reply = judge.complete(prompt)
            if "Judgement" in reply:
                break
        return reply

    def score(self, items: Sequence[EvalItem], answers: Mapping[str, str],
              judgements: Mapping[str, str] | None = None) -> dict[str, float]:
        texts = answers_by_id(items, answers, "shr")
        if judgements is None:
            judge = self.judge()
            prompts = self.judge_prompts(items, texts)
            judgements = {i.id: self._ask(judge, prompts[i.id]) for i in items}
        judged = []
        for item in items:
            reply = judgements.get(item.id)
            sentences = scoring.split_sentences(texts[item.id])
            verdicts = None if reply is None else scoring.parse_judgement(reply, len(sentences))
            judged.append(scoring.Judged(texts[item.id], verdicts, judged=reply is not None))
        metrics = scoring.summarize(judged)
        self.check_unparsed(metrics["unparsed"], metrics["num_images"], "images got no usable verdicts")
        return metrics

    @classmethod
    def score_files(cls, *, answers: str | None = None, questions: str | None = None, grades: str | None = None,
                    config: Mapping[str, Any] | None = None, judge: Any = None) -> dict[str, float]:
        """HA-DPO's figures of descriptions, from saved judge replies (``grades``) or by asking ``judge``."""
        cfg = SHRConfig(**{**(config or {}), **({"questions": questions} if questions else {})})
        bench = cls(cfg, judge=judge)
        items = bench.items(check_files=False)
        texts = read_descriptions(answers)
        judgements = None
        if grades is not None:
            judgements = read_judgements(grades)
            missing = [i.id for i in items if i.id not in judgements]
            if missing:
                raise ScoreInputError(f"--grades {os.fspath(grades)!r} has no judgement for {len(missing)} image(s) "
                                      f"(first: {missing[0]})")
        return bench.score(items, texts, judgements)
