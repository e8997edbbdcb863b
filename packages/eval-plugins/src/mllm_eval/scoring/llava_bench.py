"""LLaVA-Bench: judge reviews to relative scores, as LLaVA's ``summarize_gpt_review.py``.

The judge compares a reference answer (assistant 1) with the model's answer
(assistant 2) and writes the two scores on its first line. The relative score of a
group is ``mean(model scores) / mean(reference scores) * 100``, overall and per
category. A review whose first line does not hold exactly two numbers is unparsed: it
is counted (``unparsed``) and left out of the means, never scored as -1.
"""

from __future__ import annotations

from collections.abc import Iterable


def parse_review_scores(content: str) -> tuple[float, float] | None:
    """The two scores on the first line of a review (``"8 10"``, ``"8, 10"``), else ``None``."""
    first = content.strip().split("\n")[0].replace(",", " ")
    parts = first.split()
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


def category_name(category: str) -> str:
    """``llava_bench_conv`` -> ``conv`` (LLaVA's review files prefix the category)."""
    return category[len("llava_bench_"):] if category.startswith("llava_bench_") else category


def relative_scores(reviews: Iterable[tuple[str, tuple[float, float] | None]]) -> dict[str, float]:
    """``(category, scores or None)`` pairs to metrics.

    Keys: ``overall`` and ``<category>`` relative scores (percent), ``<group>/model_mean``,
    ``<group>/reference_mean``, ``n`` and ``unparsed``.
    """
    groups: dict[str, list[tuple[float, float]]] = {}
    unparsed = 0
    n = 0
    for category, scores in reviews:
        n += 1
        if scores is None:
            unparsed += 1
            continue
        groups.setdefault("overall", []).append(scores)
        if category:
            groups.setdefault(category_name(category), []).append(scores)
    metrics: dict[str, float] = {}
    for group in ["overall"] + sorted(g for g in groups if g != "overall"):
        pairs = groups.get(group)
        if not pairs:
            continue
        ref = sum(p[0] for p in pairs) / len(pairs)
        model = sum(p[1] for p in pairs) / len(pairs)
        metrics[group] = model / ref * 100 if ref else 0.0
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
