"""ScienceQA answer parsing and accuracy, as LLaVA's ``eval_science_qa.py`` scores it.

Parsing of one raw prediction (newlines first become ``". "``):

1. the stripped text is exactly an option letter (``A``-``E``) -> that letter;
2. the text starts with a letter followed by ``". "`` (``"B. apostrophe"``) -> that letter;
3. the text contains ``The answer is X.`` or else ``The answer is X`` -> ``X``;
4. anything else -> failed (``None``), counted as wrong.

A letter beyond the question's own options is wrong too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OPTIONS = ("A", "B", "C", "D", "E")
#: The single-prediction instruction LLaVA-1.5 appends to ScienceQA questions.
SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."

_ANSWER_IS_DOT = re.compile(r"The answer is ([A-E])\.")
_ANSWER_IS = re.compile(r"The answer is ([A-E])")
_OPTION_LINE = re.compile(r"^([A-E])\. ", re.MULTILINE)


def parse_answer(prediction: str) -> str | None:
    """The option letter LLaVA's scorer reads from ``prediction``, or ``None`` (failed)."""
    text = prediction.replace("\n", ". ")
    if text.strip() in OPTIONS:
        return text.strip()
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    if "The answer is " in text:
        match = _ANSWER_IS_DOT.search(text) or _ANSWER_IS.search(text)
        if match:
            return match.group(1)
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
) -> dict[str, float]:
    """Accuracy (percent, as LLaVA prints it) over all questions and over image questions.

    A question without a prediction counts as failed. Keys: ``accuracy``, ``img_accuracy``,
    ``count``, ``correct``, ``img_count``, ``img_correct``, ``failed`` (unparseable or
    missing answers); with ``problems``, ``acc_<CAT>`` for ScienceQA's categories.
    """
    correct = img_count = img_correct = failed = 0
    by_cat: dict[str, list[int]] = {}
    for q in questions:
        letter = parse_answer(predictions[q.id]) if q.id in predictions else None
        if letter is None:
            failed += 1
        n_opts = count_options(q.prompt) or len(OPTIONS)
        ok = letter is not None and OPTIONS.index(letter) < n_opts and letter == q.gold
        correct += ok
        if "<image>" in q.prompt:
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
