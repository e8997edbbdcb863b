"""LLaVA-Bench: judge reviews to relative scores, as LLaVA's ``summarize_gpt_review.py``.

The judge compares a reference answer (assistant 1) with the model's answer
(assistant 2) and writes the two scores on its first line. Protocol ``llava``
(haotian-liu/LLaVA ``llava/eval/eval_gpt_review_bench.py`` and
``summarize_gpt_review.py``), the only one:

* a review's first line (``content.split("\\n")[0]``, commas read as spaces) split on
  single spaces must give exactly two numbers, else the review scores ``[-1, -1]``
  (it still counts, pulling both means down, as LLaVA's ``parse_score`` does);
  a review row that already holds the parsed pair (``tuple``) is read as it is;
* per group (``all`` and each category) both means are rounded to 3 decimals, then
  ``round(model / reference * 100, 1)``.

``unparsed`` counts the ``[-1, -1]`` reviews (a number beside the scores, not a change to them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PROTOCOLS = ("llava",)
#: what LLaVA's parse_score gives a review it cannot read
UNPARSED = (-1.0, -1.0)


def parse_review_scores(content: str) -> tuple[float, float] | None:
    """The two scores on the first line of a review (``"8 10"``, ``"8,10"``), else ``None``.

    The line is split on single spaces, as LLaVA's ``parse_score``: ``"8  10"`` (two
    spaces) or a review starting with a blank line is unparsed.
    """
    parts = content.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


def category_name(category: str) -> str:
    """``llava_bench_conv`` -> ``conv`` (LLaVA's review files prefix the category)."""
    return category[len("llava_bench_"):] if category.startswith("llava_bench_") else category


def _mean3(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 3)


def relative_scores(reviews: Iterable[tuple[str, tuple[float, float] | None]]) -> dict[str, float]:
    """``(category, scores or None)`` pairs to metrics, as ``summarize_gpt_review.py`` prints them.

    ``None`` scores count as ``[-1, -1]``. Keys: ``overall`` and ``<category>`` (percent,
    1 decimal), ``<group>/model_mean`` and ``<group>/reference_mean`` (3 decimals, the
    figures the ratio is taken of), ``n`` and ``unparsed``.
    """
    groups: dict[str, list[tuple[float, float]]] = {}
    unparsed = n = 0
    for category, scores in reviews:
        n += 1
        if scores is None:
            unparsed += 1
            scores = UNPARSED
        groups.setdefault("overall", []).append(scores)
        if category:
            groups.setdefault(category_name(category), []).append(scores)
    metrics: dict[str, float] = {}
    for group in ["overall"] + sorted(g for g in groups if g != "overall"):
        pairs = groups.get(group)
        if not pairs:
            continue
        ref = _mean3([p[0] for p in pairs])
        model = _mean3([p[1] for p in pairs])
        # LLaVA divides the rounded means; a zero reference mean would be a ZeroDivisionError there
        metrics[group] = round(model / ref * 100, 1) if ref else 0.0
        metrics[f"{group}/model_mean"] = model
        metrics[f"{group}/reference_mean"] = ref
    metrics["n"] = float(n)
    metrics["unparsed"] = float(unparsed)
    return metrics


def review_prompt(question: str, context: str, reference: str, answer: str, rule: dict) -> tuple[str, str]:
    """(system, user) prompts of LLaVA's review: context, question, both answers, the rule."""
    role = rule.get("role", "Assistant")
    user = (
        f"[Context]\n{context}\n\n"
        f"[Question]\n{question}\n\n"
        f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule['prompt']}\n\n"
    )
    return "You are a helpful and precise assistant for checking the quality of the answer.", user
