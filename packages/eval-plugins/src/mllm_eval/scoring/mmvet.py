"""MM-Vet totals from the official grader's per-sample scores (0.0-1.0).

The grader's JSON maps ``v1_<id>`` to ``{"score": [run1, run2, ...], ...}``. Per run,
the total is the mean score x 100 and a capability's score the mean over the samples
that need it x 100; figures are then averaged over runs (as the grader's tables).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mllm_eval._io import ScoreInputError


def parse_grade(text: str) -> float | None:
    """A grader reply to a score in [0, 1]: the first token that is a number in range, else ``None``."""
    for token in text.strip().split():
        try:
            value = float(token.strip(".,;:"))
        except ValueError:
            continue
        return value if 0.0 <= value <= 1.0 else None
    return None


def score(
    grades: Mapping[str, Sequence[float | None]],
    capabilities: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Metrics from per-sample grades (a list of runs each; ``None`` = unparsed grade).

    Keys: ``total`` (percent), ``runs``, ``n``, ``unparsed``; with ``capabilities``,
    ``cap/<capability>`` and ``cap_int/<caps joined by _>`` (percent).
    """
    if not grades:
        raise ScoreInputError("no grades to score")
    runs = max(len(v) for v in grades.values())
    unparsed = sum(1 for v in grades.values() for s in v if s is None)
    totals: list[float] = []
    cap_runs: dict[str, list[float]] = {}
    for r in range(runs):
        scored = {k: v[r] for k, v in grades.items() if r < len(v) and v[r] is not None}
        if not scored:
            continue
        totals.append(100.0 * sum(scored.values()) / len(scored))
        if capabilities is not None:
            sums: dict[str, list[float]] = {}
            for key, value in scored.items():
                caps = list(capabilities.get(key, ()))
                for cap in caps:
                    sums.setdefault(f"cap/{cap}", []).append(value)
                if caps:
                    sums.setdefault("cap_int/" + "_".join(caps), []).append(value)
            for name, values in sums.items():
                cap_runs.setdefault(name, []).append(100.0 * sum(values) / len(values))
    metrics = {
        "total": sum(totals) / len(totals) if totals else 0.0,
        "runs": float(runs),
        "n": float(len(grades)),
        "unparsed": float(unparsed),
    }
    if len(totals) > 1:
        mean = metrics["total"]
        metrics["std"] = (sum((t - mean) ** 2 for t in totals) / len(totals)) ** 0.5
    for name in sorted(cap_runs):
        metrics[name] = sum(cap_runs[name]) / len(cap_runs[name])
    return metrics
