"""POPE's yes/no normalisation and metrics, reusable by any yes/no benchmark.

Behaviour follows POPE's scorer as used by LLaVA (``llava/eval/eval_pope.py``):

* only the first sentence of an answer counts (text before the first ``.``);
* commas are dropped and the text is split on single spaces;
* if one of the words is exactly ``No``, ``no`` or ``not`` the answer is "no",
  otherwise it is "yes".

Metrics treat "yes" as the positive class. Pure Python, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from mllm_eval._io import ScoreInputError

__all__ = ["normalize_yes_no", "pope_metrics", "NEGATIVE_WORDS"]

#: Words that turn an answer into "no" (case-sensitive, as POPE's scorer).
NEGATIVE_WORDS = frozenset({"No", "no", "not"})


def normalize_yes_no(text: str) -> str:
    """Map a free-form answer to ``"yes"`` or ``"no"`` the way POPE does.

    >>> normalize_yes_no("No, there is no dog.")
    'no'
    >>> normalize_yes_no("Yes")
    'yes'
    >>> normalize_yes_no("There is a dog. It is not a cat.")
    'yes'
    """
    first = text.split(".", 1)[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "no" if any(w in NEGATIVE_WORDS for w in words) else "yes"


def _as_label(value: str, what: str, index: int) -> int:
    v = value.strip().lower()
    if v == "yes":
        return 1
    if v == "no":
        return 0
    raise ScoreInputError(f"{what}[{index}] is {value!r}; expected 'yes' or 'no'")


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio for yes/no predictions.

    ``predictions`` and ``labels`` are parallel sequences of ``"yes"``/``"no"``
    (predictions already normalised, e.g. with :func:`normalize_yes_no`).
    Values are fractions in [0, 1]; a ratio whose denominator is zero is 0.0.
    Also returns the confusion counts ``tp``, ``fp``, ``tn``, ``fn`` and ``n``.
    """
    if len(predictions) != len(labels):
        raise ValueError(
            f"pope_metrics: {len(predictions)} predictions but {len(labels)} labels"
        )
    if not predictions:
        raise ScoreInputError("pope_metrics: no predictions to score")
    tp = fp = tn = fn = 0
    for i, (p, g) in enumerate(zip(predictions, labels, strict=True)):
        pi = _as_label(p, "predictions", i)
        gi = _as_label(g, "labels", i)
        if pi and gi:
            tp += 1
        elif pi and not gi:
            fp += 1
        elif not pi and gi:
            fn += 1
        else:
            tn += 1
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n,
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
        "n": float(n),
    }
