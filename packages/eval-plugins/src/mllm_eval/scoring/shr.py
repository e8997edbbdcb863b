"""SHR, HA-DPO's sentence-level hallucination ratio.

A model's image description is split into sentences; a judge sees the image's region
descriptions (``[x1, y1, x2, y2]: phrase``, Visual Genome style) and factual notes, and
labels every numbered sentence ``hallucination``, ``correct`` or ``cannot judge``. SHR is
hallucinated sentences / judged sentences. A judgement that does not label every
sentence is unparsed: counted, and its sentences left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

LABELS = ("hallucination", "correct", "cannot judge")

JUDGE_PROMPT = """Please help me judge if the comment of this image is hallucination or correct.
I will give you a list of region description of a image. The format is [x1, y1, x2, y2]: region description, where [x1, y1, x2, y2] is the bounding box of the region. Highly overlapping bounding boxes may refer to the same object. This is the ground truth information of the image. Besides, I give you some factual information about the content of the image (which is 100% accurate). Your judgement should base on this information. However, this information only descibe the objects in the region of image, so it cannot descibe the subjective part of the image, e.g., atmosphere, style, emotion. In that case, you can return "Cannot judge".
Also, I will give you a list of comments of the image for you to judge if it is hallucination. Please give a judgement one by one along with the reason.

Your output should be:
Judgement:
1. hallucination or correct or cannot judge: <reason>
2. ...

Here are the region descriptions of the image:
{regions}

Factual Information:
{factual}

Here is the comment for you to judge (hallucination, correct, or cannot judge):
{comments}
"""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_JUDGE_LINE = re.compile(r"^\s*(\d+)[.)]\s*(hallucination|correct|cannot judge)\b", re.IGNORECASE | re.MULTILINE)


def split_sentences(text: str) -> list[str]:
    """Sentences of a description (split after ``.``, ``!`` or ``?``; blank pieces dropped)."""
    pieces = _SENTENCE_END.split(" ".join(text.split()))
    return [p.strip() for p in pieces if p.strip() and any(ch.isalnum() for ch in p)]


def format_regions(regions: Iterable[Mapping[str, object]]) -> str:
    """Regions ``{x, y, w, h, phrase}`` as ``[x1, y1, x2, y2]: phrase`` lines."""
    lines = []
    for r in regions:
        x, y, w, h = (int(r[k]) for k in ("x", "y", "w", "h"))  # type: ignore[call-overload]
        lines.append(f"[{x}, {y}, {x + w}, {y + h}]: {r['phrase']}")
    return "\n".join(lines)


def judge_prompt(regions: Sequence[Mapping[str, object]], factual: Sequence[str], description: str) -> str:
    comments = "\n".join(f"{i}. {s}" for i, s in enumerate(split_sentences(description), 1))
    return JUDGE_PROMPT.format(regions=format_regions(regions), factual="\n".join(factual), comments=comments)


def parse_judgement(text: str, n_sentences: int) -> list[str] | None:
    """One label per sentence from a judge reply, or ``None`` when it does not label each one."""
    body = text.split("Judgement:", 1)[1] if "Judgement:" in text else text
    found: dict[int, str] = {}
    for match in _JUDGE_LINE.finditer(body):
        index = int(match.group(1))
        found.setdefault(index, match.group(2).lower())
    if sorted(found) != list(range(1, n_sentences + 1)):
        return None
    return [found[i] for i in range(1, n_sentences + 1)]


def summarize(judged: Iterable[list[str] | None]) -> dict[str, float]:
    """Per-description labels (``None`` = unparsed) to ``shr`` (percent) and counts."""
    hal = total = images = hal_images = unparsed = 0
    for labels in judged:
        if labels is None:
            unparsed += 1
            continue
        images += 1
        h = sum(1 for label in labels if label == "hallucination")
        hal += h
        total += len(labels)
        hal_images += h > 0
    return {
        "shr": 100.0 * hal / total if total else 0.0,
        "hallucinated_sentences": float(hal),
        "sentences": float(total),
        "hallucinated_images": float(hal_images),
        "judged": float(images),
        "unparsed": float(unparsed),
    }
