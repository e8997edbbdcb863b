"""The ``easyvqa`` benchmark: accuracy on easy-VQA questions, with POPE metrics on yes/no.

Questions come from the ``easy-vqa`` package (test split: 1,000 images, 9,673
questions) in the same prompt the ``easyvqa`` dataset trains on (LLaVA-1.5's
short-answer format)::

    <image>\\n{question}\\nAnswer the question using a single word or phrase.

Closed answer sets (used when ``answer_mode: choice``): the question's form decides it.
Questions starting with "what" (what colour / what shape) are *open* and get the 11
answers that are not yes/no (8 colours, 3 shapes); every other question ("is there ...",
"does the image ...") is a *yes/no* question and gets ``("yes", "no")``. The split
matches the gold answers exactly on both splits, and the question text alone decides it,
so no label leaks into the choice set.

Metrics (answers normalised first: lowercase, punctuation removed, whitespace
collapsed):

* ``accuracy``: exact match over all questions; ``yesno_accuracy`` and
  ``open_accuracy`` over the two question kinds (0.0 where a subset is empty);
* ``pope_accuracy``, ``pope_precision``, ``pope_recall``, ``pope_f1``,
  ``pope_yes_ratio``: POPE's metrics on the yes/no questions, "yes" the positive class,
  each answer mapped to yes/no by POPE's rule (:func:`mllm_eval.pope_metrics.normalize_yes_no`:
  an answer is "no" when it contains the word no/not, else "yes"). So an off-topic
  answer ("blue") counts as "yes" here, as in POPE, while ``yesno_accuracy`` counts it
  wrong.

``answer_style: explained`` asks as the ``easyvqa`` dataset's explained (and realigned) style
teaches (``<image>\\n{question}\\nExplain, then give the answer.``) and parses each
generated answer as LLaVA's ScienceQA script does: the answer is what follows the last
``The answer is `` up to the next period (or the end of the text); an answer without that
sentence is unparsed and counts wrong (on the yes/no questions it is "yes" to POPE's rule,
as an off-topic answer is). ``parsed_rate`` (explained only) is the share of answers that
had the sentence. ``answer_mode: choice`` scores single words, so it takes only the short style.

``score`` needs no model: released answers can be re-scored.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path
from typing import ClassVar, Literal, Sequence

from mllm import ComponentConfig, EvalItem
from mllm_data import format_prompt, package_data_dir, split_files
from pydantic import Field, model_validator

YES_NO = ("yes", "no")


def is_open_question(question: str) -> bool:
    """easy-VQA's open questions are the "what ..." ones; all others are yes/no."""
    return question.strip().lower().startswith("what")


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: ``" Blue."`` -> ``"blue"``."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


#: LLaVA's ScienceQA final-answer sentence; the answer follows its last occurrence
FINAL_ANSWER = "The answer is "


def parse_final_answer(text: str) -> str | None:
    """The answer of an explained reply: what follows the last ``The answer is `` up to the next
    period (or the text's end); None when there is no such sentence or it is empty."""
    at = text.rfind(FINAL_ANSWER)
    if at < 0:
        return None
    answer = text[at + len(FINAL_ANSWER):].split(".", 1)[0].strip()
    return answer or None


def all_answers() -> list[str]:
    """The 13 easy-VQA answers, in the package's order."""
    return [a.strip() for a in (package_data_dir() / "answers.txt").read_text().splitlines() if a.strip()]


class EasyVQABenchConfig(ComponentConfig):
    """Options of the ``easyvqa`` benchmark."""

    split: Literal["train", "test"] = Field("test", description="test (9,673 questions) or train (38,575)")
    limit: int | None = Field(None, ge=1, description="evaluate a seeded random subsample of this many questions")
    seed: int = Field(0, description="seed of the subsample taken when limit is set")
    answer_mode: Literal["generate", "choice"] = Field(
        "generate", description="generate: greedy answers; choice: pick the likeliest of the closed answer set")
    max_new_tokens: int = Field(8, ge=1, description="generation budget per answer (short answers are one word; "
                                                      "explained ones need ~150 with a tiny model's tokenizer)")
    answer_style: Literal["short", "explained"] = Field(
        "short", description="short: the one-word prompt, answers compared as they are; explained: the easyvqa "
                             "dataset's explained prompt ('Explain, then give the answer.'), the answer parsed from the "
                             "last 'The answer is X.' (none: wrong), plus the metric parsed_rate")

    @model_validator(mode="after")
    def _choice_is_short(self) -> EasyVQABenchConfig:
        if self.answer_mode == "choice" and self.answer_style == "explained":
            raise ValueError("answer_mode: choice scores single words; use answer_style: short with it, "
                             "or answer_mode: generate with answer_style: explained")
        return self


class EasyVQABenchmark:
    """The ``easyvqa`` benchmark (see the module docstring for choices and metrics)."""

    metric_keys: ClassVar[tuple[str, ...]] = (
        "accuracy", "yesno_accuracy", "open_accuracy",
        "pope_accuracy", "pope_precision", "pope_recall", "pope_f1", "pope_yes_ratio",
    )

    def __init__(self, config: EasyVQABenchConfig | None = None) -> None:
        self.config = config or EasyVQABenchConfig()
        # the class declares what every scoring returns; the explained style adds parsed_rate
        if self.config.answer_style == "explained":
            self.metric_keys = (*type(self).metric_keys, "parsed_rate")
        self.answer_mode = self.config.answer_mode
        self.max_new_tokens = self.config.max_new_tokens

    @classmethod
    def data_files(cls, config: EasyVQABenchConfig) -> list[Path]:
        questions, images = split_files(config.split)
        return [questions, images]

    def items(self) -> list[EvalItem]:
        questions_file, images_dir = split_files(self.config.split)
        rows = json.loads(questions_file.read_text())
        total = len(rows)
        if self.config.limit is None or self.config.limit >= total:
            indices = list(range(total))
        else:
            indices = sorted(random.Random(self.config.seed).sample(range(total), self.config.limit))
        open_choices = tuple(a for a in all_answers() if a not in YES_NO)
        items = []
        for index in indices:
            question, answer, image_id = rows[index]
            open_question = is_open_question(question)
            items.append(EvalItem(
                id=f"easyvqa-{self.config.split}-{index}",
                prompt=format_prompt(question, self.config.answer_style),
                images=(str(images_dir / f"{int(image_id)}.png"),),
                answer=answer,
                choices=open_choices if open_question else YES_NO,
                metadata={"question": question, "image_id": int(image_id),
                          "question_type": "open" if open_question else "yes/no"},
            ))
        return items

    def score(self, items: Sequence[EvalItem], answers: dict[str, str]) -> dict[str, float]:
        return score_answers(items, answers, self.config.answer_style)


def score_answers(items: Sequence[EvalItem], answers: dict[str, str],
                  answer_style: str = "short") -> dict[str, float]:
    """easy-VQA's metrics from answers keyed by item id (every item needs an answer); with
    ``answer_style="explained"`` each answer is first parsed (:func:`parse_final_answer`)."""
    from mllm_eval.pope_metrics import normalize_yes_no, pope_metrics

    missing = [item.id for item in items if item.id not in answers]
    if missing:
        raise ValueError(f"easyvqa: {len(missing)} of {len(items)} items have no answer, e.g. {missing[:3]}")
    if not items:
        raise ValueError("easyvqa: no items to score")
    correct = {"all": [], "yes/no": [], "open": []}
    pope_predictions, pope_labels = [], []
    parsed = 0
    for item in items:
        gold = normalize_answer(item.answer or "")
        text = answers[item.id]
        if answer_style == "explained":
            final = parse_final_answer(text)
            parsed += final is not None
            text = final if final is not None else ""  # unparsed: matches no gold answer
        predicted = normalize_answer(text)
        kind = "yes/no" if gold in YES_NO else "open"
        hit = float(predicted == gold)
        correct["all"].append(hit)
        correct[kind].append(hit)
        if kind == "yes/no":
            pope_predictions.append(normalize_yes_no(predicted))
            pope_labels.append(gold)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    metrics = {
        "accuracy": mean(correct["all"]),
        "yesno_accuracy": mean(correct["yes/no"]),
        "open_accuracy": mean(correct["open"]),
    }
    pope = pope_metrics(pope_predictions, pope_labels) if pope_labels else {}
    for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        metrics[f"pope_{key}"] = float(pope.get(key, 0.0))
    if answer_style == "explained":
        metrics["parsed_rate"] = parsed / len(items)
    return metrics
