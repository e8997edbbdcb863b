"""MM-Vet totals from per-sample grades (0.0-1.0), as the official grader computes them.

Protocol ``mmvet-official`` (yuweihao/MM-Vet ``mm-vet_evaluator.py``), the only one:

* grading: the judge's reply up to its first space must be a number in [0, 1]; else the
  grader asks again with ``"\\nPredict the correctness of the answer (digit): "`` appended,
  and after 5 unreadable replies the sample scores 0.0 (it counts, as 0);
* per run, ``total`` is the mean grade x 100, a capability's score the mean over the
  samples needing it x 100, and a capability *combination*'s the mean over the samples
  whose capability *set* it is (``["ocr", "rec"]`` and ``["rec", "ocr"]`` are one group);
* figures are averaged over runs and rounded to 1 decimal (the grader's
  ``decimal_places``); ``std`` is the population std of the run totals, rounded too.

A combination is named by its capabilities joined with ``_`` in the order of the grader's
capability columns (most frequent first, ties by first appearance). The grader joins a
Python ``set``, whose order depends on the interpreter's hash seed, so its CSV names of
one group may differ from run to run; the groups and their scores do not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from mllm_eval._io import ScoreInputError

PROTOCOLS = ("mmvet-official",)
#: the grader's ``decimal_places``
DECIMALS = 1
#: replies the grader reads before scoring a sample 0.0
GRADE_ATTEMPTS = 5
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "


def parse_grade(text: str) -> float | None:
    """A grader reply to a score in [0, 1]: the text before its first space as a number, else ``None``."""
    try:
        value = float(text.split(" ")[0].strip())
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def grade_with_retries(ask: Callable[[str], str], prompt: str) -> tuple[float, int]:
    """``(score, replies read)``: ask ``prompt``, then the retry prompt, until a reply parses;
    0.0 after :data:`GRADE_ATTEMPTS` unreadable replies (the grader's rule)."""
    reply = ask(prompt)
    for attempt in range(1, GRADE_ATTEMPTS + 1):
        value = parse_grade(reply)
        if value is not None:
            return value, attempt
        if attempt < GRADE_ATTEMPTS:
            reply = ask(prompt + RETRY_SUFFIX)
    return 0.0, GRADE_ATTEMPTS


def capability_order(capabilities: Mapping[str, Sequence[str]]) -> list[str]:
    """Capabilities most frequent first (ties: first seen), the grader's column order."""
    counter: Counter[str] = Counter()
    for caps in capabilities.values():
        counter.update(list(dict.fromkeys(caps)))  # a capability listed twice in one sample counts once, as a set
    return [name for name, _ in counter.most_common()]


def combination_name(caps: Sequence[str], order: Sequence[str]) -> str:
    rank = {name: i for i, name in enumerate(order)}
    return "_".join(sorted(set(caps), key=lambda c: (rank.get(c, len(rank)), c)))


def _round(value: float) -> float:
    return round(value, DECIMALS)


def score(
    grades: Mapping[str, Sequence[float | None]],
    capabilities: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Metrics from per-sample grades (a list of runs each; ``None`` = a grade out of range
    or unreadable, scored 0.0 as the grader does and counted in ``unparsed``).

    Keys: ``total`` (percent), ``runs``, ``n``, ``unparsed``, ``std`` (several runs); with
    ``capabilities``, ``cap/<capability>`` and ``cap_int/<combination>`` (percent).
    """
    if not grades:
        raise ScoreInputError("no grades to score")
    runs = max(len(v) for v in grades.values())
    unparsed = sum(1 for v in grades.values() for s in v if s is None)
    order = capability_order(capabilities) if capabilities is not None else []
    totals: list[float] = []
    cap_runs: dict[str, list[float]] = {}
    for r in range(runs):
        scored = {k: (v[r] or 0.0) for k, v in grades.items() if r < len(v)}
        if not scored:
            continue
        totals.append(100.0 * sum(scored.values()) / len(scored))
        if capabilities is not None:
            sums: dict[str, list[float]] = {}
            for key, value in scored.items():
                caps = list(dict.fromkeys(capabilities.get(key, ())))
                for cap in caps:
                    sums.setdefault(f"cap/{cap}", []).append(value)
                if caps:
                    sums.setdefault("cap_int/" + combination_name(caps, order), []).append(value)
            for name, values in sums.items():
                cap_runs.setdefault(name, []).append(100.0 * sum(values) / len(values))
    mean = sum(totals) / len(totals) if totals else 0.0
    metrics = {"total": _round(mean), "runs": float(runs), "n": float(len(grades)), "unparsed": float(unparsed)}
    if len(totals) > 1:
        metrics["std"] = _round((sum((t - mean) ** 2 for t in totals) / len(totals)) ** 0.5)
    for name in sorted(cap_runs):
        metrics[name] = _round(sum(cap_runs[name]) / len(cap_runs[name]))
    return metrics
