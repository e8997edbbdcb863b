"""POPE: matching answers to labels by (split, image, question) and per-split metrics.

LLaVA's own scorer pairs answers with labels by position within a split, which is only
right while its question file and the label files stay aligned. Here every answer is
paired with the label of the same split, image and question text (LLaVA's answer-format
suffix removed), and label files that do not cover exactly the questions are refused
(a deliberate departure, whatever the protocol: on aligned files the numbers are the same).

Protocols (how an answer is read and what the metrics count):

* ``llava`` (default): LLaVA's ``eval_pope.py`` (POPE's own rule,
  :func:`mllm_eval.pope_metrics.normalize_yes_no`); ``yes_ratio`` is the share of "yes"
  *answers*.
* ``lmms-eval``: lmms-eval's ``pope`` task (``pope_process_results`` and the
  ``pope_aggregate_*`` functions): the answer lowercased and stripped must be exactly
  ``yes`` or ``no``; accuracy counts exact matches, precision and recall count only exact
  ``yes``/``no`` answers (anything else is neither a positive nor a negative), and
  ``yes_ratio`` is the share of "yes" *labels*.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mllm import MllmError

from mllm_eval.pope_metrics import normalize_yes_no, pope_metrics

SPLITS = ("random", "popular", "adversarial")
PROTOCOLS = ("llava", "lmms-eval")
#: The answer-format instruction LLaVA-1.5 appends to POPE questions.
ANSWER_SUFFIX = "Answer the question using a single word or phrase."

Key = tuple[str, str, str]


def strip_suffix(question: str) -> str:
    """The question without LLaVA's answer-format suffix (and the whitespace before it)."""
    text = question.rstrip()
    if text.endswith(ANSWER_SUFFIX):
        text = text[: -len(ANSWER_SUFFIX)]
    return text.strip()


def question_key(split: str, image: str, question: str) -> Key:
    return (split, image, strip_suffix(question))


class LabelMismatchError(MllmError, ValueError):
    """Label files do not match the questions (e.g. a different POPE release)."""


@dataclass(frozen=True)
class Mismatch:
    split: str
    missing_labels: list[Key]  # questions with no label
    extra_labels: list[Key]  # labels with no question

    @property
    def count(self) -> int:
        return len(self.missing_labels) + len(self.extra_labels)


def check_labels(question_keys: Iterable[Key], labels: Mapping[Key, str], *, show: int = 5) -> None:
    """Raise :class:`LabelMismatchError` unless labels cover exactly the questions' keys.

    The message counts the mismatches per split and shows the first few of each side.
    """
    q_counts = Counter(question_keys)
    dup = [k for k, n in q_counts.items() if n > 1]
    if dup:
        raise LabelMismatchError(
            f"{len(dup)} question(s) appear more than once with the same split, image and text, "
            f"so answers cannot be matched to labels; first: {dup[0]}"
        )
    qs = set(q_counts)
    ls = set(labels)
    splits = sorted({k[0] for k in qs | ls}, key=lambda s: (SPLITS.index(s) if s in SPLITS else 99, s))
    problems = []
    for split in splits:
        missing = sorted(k for k in qs - ls if k[0] == split)
        extra = sorted(k for k in ls - qs if k[0] == split)
        if missing or extra:
            problems.append(Mismatch(split, missing, extra))
    if not problems:
        return
    total = sum(p.count for p in problems)
    lines = [
        f"the label files do not match the questions: {total} mismatch(es) "
        "(matched by split, image and question text; a different POPE release?)"
    ]
    for p in problems:
        lines.append(f"  {p.split}: {len(p.missing_labels)} question(s) without a label, "
                     f"{len(p.extra_labels)} label(s) without a question")
        for key in p.missing_labels[:show]:
            lines.append(f"    no label for: {key[1]} {key[2]!r}")
        for key in p.extra_labels[:show]:
            lines.append(f"    no question for label: {key[1]} {key[2]!r}")
    raise LabelMismatchError("\n".join(lines))


def lmms_eval_metrics(answers: list[str], labels: list[str]) -> dict[str, float]:
    """lmms-eval's POPE metrics of raw answers and yes/no labels (fractions; 0 where undefined)."""
    preds = [a.lower().strip() for a in answers]
    gold = [g.lower().strip() for g in labels]
    n = len(preds)
    tp = sum(1 for p, g in zip(preds, gold) if g == "yes" and p == "yes")
    fp = sum(1 for p, g in zip(preds, gold) if g == "no" and p == "yes")
    fn = sum(1 for p, g in zip(preds, gold) if g == "yes" and p == "no")
    tn = sum(1 for p, g in zip(preds, gold) if g == "no" and p == "no")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    yes, no = gold.count("yes"), gold.count("no")
    return {
        "accuracy": sum(1 for p, g in zip(preds, gold) if p == g) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": yes / (yes + no) if yes + no else 0.0,
        "tp": float(tp), "fp": float(fp), "tn": float(tn), "fn": float(fn), "n": float(n),
    }


def score_splits(
    answers: Mapping[Key, str], labels: Mapping[Key, str], *, splits: Iterable[str] | None = None,
    protocol: str = "llava",
) -> dict[str, float]:
    """Metrics per split from raw answers and yes/no labels sharing keys.

    Keys of the result: ``<split>/<metric>`` for accuracy, precision, recall, f1,
    yes_ratio and n, plus ``<metric>`` averaged over the splits present (LLaVA's papers
    report per-split F1; the average is a convenience), as fractions in [0, 1].
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown POPE protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
    by_split: dict[str, tuple[list[str], list[str]]] = {}
    for key, text in answers.items():
        preds, gold = by_split.setdefault(key[0], ([], []))
        preds.append(normalize_yes_no(text) if protocol == "llava" else text)
        gold.append("no" if labels[key] == "no" else "yes")
    wanted = list(splits) if splits is not None else [s for s in SPLITS if s in by_split] + sorted(
        s for s in by_split if s not in SPLITS
    )
    metrics: dict[str, float] = {}
    means: dict[str, list[float]] = {}
    for split in wanted:
        if split not in by_split:
            continue
        m = pope_metrics(*by_split[split]) if protocol == "llava" else lmms_eval_metrics(*by_split[split])
        for name in ("accuracy", "precision", "recall", "f1", "yes_ratio", "n"):
            metrics[f"{split}/{name}"] = m[name]
            if name != "n":
                means.setdefault(name, []).append(m[name])
    for name, values in means.items():
        metrics[name] = sum(values) / len(values)
    return metrics
