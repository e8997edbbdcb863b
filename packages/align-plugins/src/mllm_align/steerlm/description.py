"""SteerLM attributes by rules (``score: {rule: attributes, rules: description}``), for answers
that describe an image against a templated gold sentence (e.g. ``easyvqa-describe``).

The gold's *keywords* are its words minus :data:`TEMPLATE_WORDS` (for "The image shows a
red circle." that is red, circle);

- Correctness = 4 x the share of keywords the answer names (rounded);
- Coherence = well-formedness: 4, minus 1 each for no capital start, no final
  ``.``/``!``/``?``, a word repeated back to back, a fragment under 3 words (min 0);
- Verbosity = length in words: 0 (0-1), 1 (2-3), 2 (4-7), 3 (8-15), 4 (16+);
- Complexity = distinct words: 0 (0-1), 1 (2-3), 2 (4-6), 3 (7-10), 4 (11+);
- Helpfulness = Correctness, minus 1 when the answer rambles (Verbosity 4) or is a
  fragment (Verbosity 0), minus 1 when it names a keyword-like word the gold does not
  have (``distractors``: another colour or shape of easy-VQA), clipped to 0-4.

:func:`hallucinated_words` is the description-hallucination rule of the ``easyvqa-describe``
benchmark's ``hallucination_rate`` (SHR's analogue): the words of easy-VQA's colour and shape
vocabulary (:data:`VOCABULARY`) an answer names other than the image's own colour and shape.
"""

from __future__ import annotations

import re

from mllm_align.steerlm.attributes import MAX_SCORE, MIN_SCORE
from mllm_align.steerlm.describe_data import COLOURS, SHAPES

TEMPLATE_WORDS = frozenset(
    "a an the this that it is are of in on with there image picture photo shows show showing depicts contains "
    "background white and".split())
#: words that look like keywords of easy-VQA descriptions (colours and shapes)
DISTRACTORS = frozenset("red green blue black gray grey teal brown yellow circle rectangle triangle square".split())
_WORD = re.compile(r"[a-z0-9]+")
#: easy-VQA's colour and shape answers: the only words a description can hallucinate by this rule
VOCABULARY = frozenset(COLOURS) | frozenset(SHAPES)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def keywords(gold: str, ignore: frozenset[str] = TEMPLATE_WORDS) -> list[str]:
    """The content words of a templated gold sentence: its words minus ``ignore``."""
    return list(dict.fromkeys(w for w in words(gold) if w not in ignore))


def hallucinated_words(answer: str, colour: str, shape: str) -> list[str]:
    """The colour and shape words of easy-VQA's vocabulary (:data:`VOCABULARY`: its eight colours
    and three shapes) that ``answer`` names although the image is a ``colour`` ``shape``, in the
    order they first appear. Whole lowercased words only ("reddish", "squares" or "grey" are not
    vocabulary words); a word of the image's own colour or shape never counts, wherever it stands."""
    own = {colour.lower(), shape.lower()}
    return list(dict.fromkeys(w for w in words(answer) if w in VOCABULARY and w not in own))


def _bucket(value: int, bounds: tuple[int, int, int, int]) -> int:
    return sum(value >= bound for bound in bounds)


def description_attributes(answer: str, gold: str | None, *, distractors: frozenset[str] = DISTRACTORS) -> dict[str, int]:
    """Rule attributes of a description against its gold sentence (see the module docstring)."""
    if gold is None or not gold.strip():
        raise ValueError("the description rules need a gold sentence")
    tokens = words(answer)
    wanted = keywords(gold)
    named = sum(word in tokens for word in wanted)
    correctness = round(MAX_SCORE * named / len(wanted)) if wanted else MAX_SCORE
    stripped = answer.strip()
    coherence = MAX_SCORE
    if not stripped[:1].isupper():
        coherence -= 1
    if not stripped.endswith((".", "!", "?")):
        coherence -= 1
    if any(a == b for a, b in zip(tokens, tokens[1:])):
        coherence -= 1
    if len(tokens) < 3:
        coherence -= 1
    verbosity = _bucket(len(tokens), (2, 4, 8, 16))
    complexity = _bucket(len(set(tokens)), (2, 4, 7, 11))
    helpfulness = correctness
    if verbosity in (0, MAX_SCORE):
        helpfulness -= 1
    if any(word in distractors and word not in wanted for word in tokens):
        helpfulness -= 1
    clip = lambda v: max(MIN_SCORE, min(MAX_SCORE, v))  # noqa: E731
    return {"helpfulness": clip(helpfulness), "correctness": clip(correctness), "coherence": clip(coherence),
            "complexity": clip(complexity), "verbosity": clip(verbosity)}


RULE_SETS = {"description": description_attributes}
