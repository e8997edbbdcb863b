"""SteerLM attributes: the vocabulary, the aggregate, the steering text and judge replies.

The five attributes are those of SteerLM / HelpSteer, each on a 0-4 (5-point Likert)
scale: Helpfulness, Correctness, Coherence, Complexity, Verbosity. Candidates are ranked
by the **aggregate** ``Helpfulness + Correctness + Coherence`` (0-12), as mllm-dpo ranked
its sampled answers (Complexity and Verbosity describe an answer's style, not its quality).

A ``generate`` stage rates every candidate with the ``attributes`` score rule
(:mod:`mllm_align.steerlm.rule`)::

    score: {rule: attributes, rules: description}           # rules (no model needed)
    score: {rule: attributes, judge: {name: openai, model: gpt-4-0613}}   # a named judge

A judge gets :data:`JUDGE_PROMPT` (question, reference answer, candidate) and must answer
with the five ``Name: score`` lines; :func:`parse_attributes` reads them (case-insensitive,
``:`` or ``=``, integers 0-4). The ``description`` rules are in
:mod:`mllm_align.steerlm.description`.

The **steering text** follows mllm-dpo's SteerLM prompt (its MT-Bench "prompted"
answers append it to the user turn)::

    Please answer the question such that your response is in the following attributes in
    5-point Likert scale:
    Helpfulness: 4, Correctness: 4, Coherence: 4, Complexity: 4, Verbosity: 4

:func:`steer_text` builds it, :func:`parse_steer_text` reads it back, :func:`add_steer`
appends it to a user turn and :func:`strip_steer_text` removes an echoed attribute line
(SteerLM models tend to repeat it) from an answer before it is scored.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

ATTRIBUTES: tuple[str, ...] = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
AGGREGATE_OF: tuple[str, ...] = ("helpfulness", "correctness", "coherence")
MIN_SCORE, MAX_SCORE = 0, 4

STEER_INSTRUCTION = ("Please answer the question such that your response is in the following attributes "
                     "in 5-point Likert scale:")

JUDGE_PROMPT = """Rate the assistant's answer to the question on five attributes, each an integer from 0 (worst) to 4 (best):
Helpfulness: the overall usefulness of the answer for the question.
Correctness: the answer is factually right (compare it with the reference answer) and misses nothing.
Coherence: the answer is clear, well-formed and self-consistent.
Complexity: the depth of expertise the answer shows (0: anyone could write it, 4: an expert).
Verbosity: the amount of detail relative to what was asked (0: terse, 4: very long).

[Question]
{question}

[Reference answer]
{gold}

[Assistant's answer]
{answer}

Reply with exactly five lines and nothing else:
Helpfulness: <0-4>
Correctness: <0-4>
Coherence: <0-4>
Complexity: <0-4>
Verbosity: <0-4>"""


# -- the aggregate and the steering text -------------------------------------------------------


def aggregate(scores: Mapping[str, float] | None) -> float | None:
    """Helpfulness + Correctness + Coherence; ``None`` for an unscored candidate."""
    if not scores:
        return None
    return float(sum(float(scores[name]) for name in AGGREGATE_OF))


def check_attributes(values: Mapping[str, Any]) -> dict[str, int]:
    """Every attribute present, an integer 0-4; lower-case keys. Raises ValueError otherwise."""
    lowered = {str(k).lower(): v for k, v in values.items()}
    unknown = sorted(set(lowered) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; attributes are {list(ATTRIBUTES)}")
    out = {}
    for name in ATTRIBUTES:
        if name not in lowered:
            raise ValueError(f"attribute {name!r} is missing")
        value = lowered[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"attribute {name!r} must be an integer 0-4, got {value!r}")
        if not MIN_SCORE <= int(value) <= MAX_SCORE:
            raise ValueError(f"attribute {name!r} must be between {MIN_SCORE} and {MAX_SCORE}, got {value}")
        out[name] = int(value)
    return out


def steer_attributes(partial: Mapping[str, int] | None = None) -> dict[str, int]:
    """The desired attributes: 4 for each, overridden by ``partial``."""
    values = {name: MAX_SCORE for name in ATTRIBUTES}
    values.update({str(k).lower(): v for k, v in (partial or {}).items()})
    return check_attributes(values)


def attribute_line(scores: Mapping[str, int]) -> str:
    """``Helpfulness: 4, Correctness: 4, Coherence: 4, Complexity: 4, Verbosity: 4``."""
    checked = check_attributes(scores)
    return ", ".join(f"{name.capitalize()}: {checked[name]}" for name in ATTRIBUTES)


def steer_text(scores: Mapping[str, int]) -> str:
    """mllm-dpo's SteerLM conditioning text: the instruction, then the attribute line."""
    return f"{STEER_INSTRUCTION}\n{attribute_line(scores)}"


def add_steer(user_text: str, scores: Mapping[str, int]) -> str:
    """A user turn with the steering text appended on new lines."""
    return f"{user_text.rstrip()}\n{steer_text(scores)}"


_PAIR = r"(helpfulness|correctness|coherence|complexity|verbosity)\s*[:=]\s*(\d+)"
_PAIR_RE = re.compile(_PAIR, re.IGNORECASE)
# an attribute line: two or more "Name: n" pairs separated by commas / spaces
_LINE_RE = re.compile(rf"(?:{_PAIR}[\s,;]*){{2,}}", re.IGNORECASE)
_INSTRUCTION_RE = re.compile(re.escape(STEER_INSTRUCTION).replace(r"\ ", r"\s+"), re.IGNORECASE)


def parse_steer_text(text: str) -> dict[str, int] | None:
    """The attributes of a steering text (or any text holding all five ``Name: n``), else ``None``."""
    found: dict[str, int] = {}
    for name, value in _PAIR_RE.findall(text):
        found.setdefault(name.lower(), int(value))
    try:
        return check_attributes(found)
    except ValueError:
        return None


def split_steer(user_text: str) -> tuple[str, dict[str, int] | None]:
    """``(user text without the steering text, its attributes)``; ``(text, None)`` when there is none."""
    match = _INSTRUCTION_RE.search(user_text)
    if match is None:
        return user_text, None
    return user_text[:match.start()].rstrip(), parse_steer_text(user_text[match.start():])


def strip_steer_text(answer: str) -> str:
    """An answer without an echoed steering instruction or attribute line."""
    text = _INSTRUCTION_RE.sub(" ", answer)
    text = _LINE_RE.sub(" ", text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip(" ,;\n")


# -- parsing a judge's reply --------------------------------------------------------------------


def parse_attributes(reply: str) -> dict[str, int]:
    """The five attributes of a judge's reply; ValueError naming what is wrong otherwise."""
    if not isinstance(reply, str) or not reply.strip():
        raise ValueError("empty reply")
    found: dict[str, int] = {}
    for name, value in _PAIR_RE.findall(reply):
        found.setdefault(name.lower(), int(value))
    missing = [name for name in ATTRIBUTES if name not in found]
    if missing:
        raise ValueError(f"reply has no score for {', '.join(missing)}")
    return check_attributes(found)
