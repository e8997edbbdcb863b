"""POPE: matching answers to labels by (split, image, question) and per-split metrics.

LLaVA's own scorer pairs answers with labels by position within a split, which is only
right while its question file and the label files stay aligned. Here every answer is
paired with the label of the same split, image and question text (LLaVA's answer-format
suffix removed), and label files that do not cover exactly the questions are refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mllm import MllmError

from mllm_eval.pope_metrics import normalize_yes_no, pope_metrics

SPLITS = ("random", "popular", "adversarial")
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


def score_splits(
    answers: Mapping[Key, str], labels: Mapping[Key, str], *, splits: Iterable[str] | None = None
) -> dict[str, float]:
    """Metrics per split from raw answers and yes/no labels sharing keys.

    Keys of the result: ``<split>/<metric>`` for accuracy, precision, recall, f1,
    yes_ratio and n, plus ``<metric>`` averaged over the splits present (LLaVA's papers
    report per-split F1; the average is a convenience), as fractions in [0, 1].
    """
    by_split: dict[str, tuple[list[str], list[str]]] = {}
    for key, text in answers.items():
        preds, gold = by_split.setdefault(key[0], ([], []))
        preds.append(normalize_yes_no(text))
        gold.append("no" if labels[key] == "no" else "yes")
    wanted = list(splits) if splits is not None else [s for s in SPLITS if s in by_split] + sorted(
        s for s in by_split if s not in SPLITS
    )
    metrics: dict[str, float] = {}
    means: dict[str, list[float]] = {}
    for split in wanted:
        if split not in by_split:
            continue
        m = pope_metrics(*by_split[split])
        for name in ("accuracy", "precision", "recall", "f1", "yes_ratio", "n"):
            metrics[f"{split}/{name}"] = m[name]
            if name != "n":
                means.setdefault(name, []).append(m[name])
    for name, values in means.items():
        metrics[name] = sum(values) / len(values)
    return metrics
