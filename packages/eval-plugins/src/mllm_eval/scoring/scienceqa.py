"""ScienceQA answer parsing and accuracy, per protocol.

``llava`` (default): LLaVA-1.5's ``llava/eval/eval_science_qa.py``. The raw prediction
(not stripped, newlines kept) is read as

1. exactly an option letter (``"B"``) -> that letter;
2. a letter followed by ``". "`` at the start (``"B. apostrophe"``) -> that letter;
3. else ``The answer is X.`` (the regex ``The answer is ([A-Z]).``: any character after
   the letter) found exactly once -> ``X``; none, or several -> FAILED.

A letter beyond the question's options is wrong; FAILED is wrong. A question without a
prediction is FAILED and, as there (its prompt is ``"Unknown"``), not counted among the
image questions.

``lmms-eval``: lmms-eval's ``scienceqa`` tasks (``sqa_process_results``): the prediction
equals the gold letter, or starts with an upper-case letter and ``"."`` and that letter is
the gold one; anything else is wrong. ``img_accuracy`` is its ``scienceqa_img`` task (the
questions with an image).

Accuracies are percentages, as LLaVA prints them (lmms-eval prints the fraction).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PROTOCOLS = ("llava", "lmms-eval")
OPTIONS = ("A", "B", "C", "D", "E")
#: The single-prediction instruction LLaVA-1.5 appends to ScienceQA questions.
SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."
FAILED = "FAILED"

_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
_OPTION_LINE = re.compile(r"^([A-E])\. ", re.MULTILINE)


def parse_answer(prediction: str) -> str | None:
    """The letter LLaVA's ``eval_science_qa.py`` reads from ``prediction``, or ``None`` (FAILED)."""
    if prediction in OPTIONS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in OPTIONS and prediction[1:3] == ". ":
        return prediction[0]
    found = _ANSWER_IS.findall(prediction)
    return found[0] if len(found) == 1 else None


def lmms_eval_letter(prediction: str) -> str | None:
    """The letter lmms-eval's ``sqa_process_results`` compares with the gold one, or ``None``."""
    if prediction in OPTIONS:
        return prediction
    if len(prediction) >= 2 and prediction[0].isupper() and prediction[1] == ".":
        return prediction[0]
    return None


def count_options(question: str) -> int:
    """How many ``X. option`` lines the question text lists (LLaVA's CQM-A format)."""
    return len(_OPTION_LINE.findall(question))


# ScienceQA's category breakdown (its own ``get_scores``): subject, context modality, grade.
SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
LOWER_GRADES = {f"grade{i}" for i in range(1, 7)}
UPPER_GRADES = {f"grade{i}" for i in range(7, 13)}


def categories(problem: Mapping[str, object]) -> list[str]:
    """ScienceQA's categories of one ``problems.json`` entry: NAT/SOC/LAN, TXT/IMG/NO, G1-6/G7-12."""
    cats = []
    subject = SUBJECTS.get(str(problem.get("subject", "")))
    if subject:
        cats.append(subject)
    hint, image = problem.get("hint"), problem.get("image")
    if hint:
        cats.append("TXT")
    if image:
        cats.append("IMG")
    if not hint and not image:
        cats.append("NO")
    grade = str(problem.get("grade", ""))
    if grade in LOWER_GRADES:
        cats.append("G1-6")
    elif grade in UPPER_GRADES:
        cats.append("G7-12")
    return cats


@dataclass(frozen=True)
class Question:
    id: str
    prompt: str  # the human turn (holds <image> for image questions)
    gold: str  # the gold option letter


def score(
    questions: Sequence[Question],
    predictions: Mapping[str, str],
    problems: Mapping[str, Mapping[str, object]] | None = None,
    *,
    protocol: str = "llava",
) -> dict[str, float]:
    """Accuracy (percent) over all questions and over image questions, per ``protocol``.

    Keys: ``accuracy``, ``img_accuracy``, ``count``, ``correct``, ``img_count``,
    ``img_correct``, ``failed`` (predictions no rule reads, missing ones included); with
    ``problems``, ``acc_<CAT>`` for ScienceQA's categories (its own ``get_scores``).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown ScienceQA protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
    correct = img_count = img_correct = failed = 0
    by_cat: dict[str, list[int]] = {}
    for q in questions:
        answered = q.id in predictions
        text = predictions.get(q.id, FAILED)
        letter = parse_answer(text) if protocol == "llava" else lmms_eval_letter(text)
        if letter is None or not answered:
            failed += 1
        n_opts = count_options(q.prompt) or len(OPTIONS)
        ok = answered and letter is not None and letter in OPTIONS[:n_opts] and letter == q.gold
        correct += ok
        # LLaVA reads "<image>" from the answer's prompt: a missing answer ("Unknown") is no image question
        if "<image>" in q.prompt and (answered or protocol != "llava"):
            img_count += 1
            img_correct += ok
        if problems is not None and q.id in problems:
            for cat in categories(problems[q.id]):
                by_cat.setdefault(cat, [0, 0])
                by_cat[cat][0] += ok
                by_cat[cat][1] += 1
    n = len(questions)
    metrics = {
        "accuracy": 100.0 * correct / n if n else 0.0,
        "img_accuracy": 100.0 * img_correct / img_count if img_count else 0.0,
        "count": float(n),
        "correct": float(correct),
        "img_count": float(img_count),
        "img_correct": float(img_correct),
        "failed": float(failed),
    }
    order = ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12"]
    for cat in sorted(by_cat, key=lambda c: order.index(c) if c in order else 99):
        ok, total = by_cat[cat]
        metrics[f"acc_{cat}"] = 100.0 * ok / total
    return metrics
