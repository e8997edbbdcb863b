"""SteerLM attributes: rating answers, the aggregate, and the steering text.

The five attributes are those of SteerLM / HelpSteer, each on a 0-4 (5-point Likert)
scale: Helpfulness, Correctness, Coherence, Complexity, Verbosity. Candidates are ranked
by the **aggregate** ``Helpfulness + Correctness + Coherence`` (0-12), as mllm-dpo ranked
its sampled answers (Complexity and Verbosity describe an answer's style, not its quality).

A ``generate`` stage rates every candidate with ``score: {rule: attributes, ...}``::

    score: {rule: attributes, rules: description}           # rules (no model needed)
    score: {rule: attributes, judge: {name: openai, model: gpt-4-0613}}   # a named judge

* **judge**: the judge gets :data:`JUDGE_PROMPT` (question, reference answer, candidate)
  and must answer with the five ``Name: score`` lines; :func:`parse_attributes` reads
  them (case-insensitive, ``:`` or ``=``, integers 0-4). A judge that raises, or whose
  reply lacks an attribute or has one out of range, leaves that candidate **unscored**
  (``metadata.attributes`` is null); the stage counts them (``unscored`` in
  ``metrics.json``, the reason in ``metadata.unscored_reason``) and never fails for it.
  Replies are cached by the judge (``cache`` defaults to ``judge_cache.jsonl`` in the
  stage folder for judges that take a ``cache`` key).
* **rules** ``description`` (for answers that describe an image against a templated gold
  sentence, e.g. ``easyvqa-describe``): the gold's *keywords* are its words minus
  :data:`TEMPLATE_WORDS` (for "The image shows a red circle." that is red, circle);

  - Correctness = 4 x the share of keywords the answer names (rounded);
  - Coherence = well-formedness: 4, minus 1 each for no capital start, no final
    ``.``/``!``/``?``, a word repeated back to back, a fragment under 3 words (min 0);
  - Verbosity = length in words: 0 (0-1), 1 (2-3), 2 (4-7), 3 (8-15), 4 (16+);
  - Complexity = distinct words: 0 (0-1), 1 (2-3), 2 (4-6), 3 (7-10), 4 (11+);
  - Helpfulness = Correctness, minus 1 when the answer rambles (Verbosity 4) or is a
    fragment (Verbosity 0), minus 1 when it names a keyword-like word the gold does not
    have (``distractors``: another colour or shape), clipped to 0-4.

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
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


# -- rules ------------------------------------------------------------------------------------

TEMPLATE_WORDS = frozenset(
    "a an the this that it is are of in on with there image picture photo shows show showing depicts contains "
    "background white and".split())
#: words that look like keywords of easy-VQA descriptions (colours and shapes)
DISTRACTORS = frozenset("red green blue black gray grey teal brown yellow circle rectangle triangle square".split())
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def keywords(gold: str, ignore: frozenset[str] = TEMPLATE_WORDS) -> list[str]:
    """The content words of a templated gold sentence: its words minus ``ignore``."""
    return list(dict.fromkeys(w for w in words(gold) if w not in ignore))


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


# -- the score block ----------------------------------------------------------------------------


class AttributeRule(BaseModel):
    """``score: {rule: attributes, rules: description}`` or ``{rule: attributes, judge: {name: ...}}``."""

    model_config = ConfigDict(extra="forbid")

    rule: Literal["attributes"]
    rules: Literal["description"] | None = Field(None, description="rate with built-in rules (no model)")
    judge: dict[str, Any] | None = Field(None, description="rate with a named judge: {name: openai, model: ...}")
    prompt: str = Field(JUDGE_PROMPT, description="judge prompt; {question}, {gold} and {answer} are filled in")
    system: str | None = Field(None, description="judge system message")
    correct_at: int = Field(4, ge=0, le=4, description="metadata.correct is Correctness >= this (for wrong-vs-gold)")

    @model_validator(mode="after")
    def _one_source(self) -> AttributeRule:
        if (self.rules is None) == (self.judge is None):
            raise ValueError("give exactly one of rules: description or judge: {name: ...}")
        if self.judge is not None and not self.judge.get("name"):
            raise ValueError("judge needs a name, e.g. judge: {name: openai, model: gpt-4-0613}")
        return self


def question_of(turns: Any) -> str:
    """The last user turn's text without the image placeholder (what a judge reads)."""
    text = turns[-1].content if turns else ""
    return text.replace("<image>", "").strip()


class AttributeScorer:
    """Rates answers with an :class:`AttributeRule`; never raises for a bad judge reply."""

    def __init__(self, rule: AttributeRule, judge: Any = None) -> None:
        self.rule = rule
        self.judge = judge
        if rule.judge is not None and judge is None:
            raise ValueError("an attribute rule with a judge needs the built judge")
        self.failures: dict[str, int] = {}

    def rate(self, question: str, answer: str, gold: str | None) -> tuple[dict[str, int] | None, str | None]:
        """``(attributes, None)`` or ``(None, reason)`` when the candidate stays unscored."""
        try:
            if self.rule.rules is not None:
                return RULE_SETS[self.rule.rules](answer, gold), None
            prompt = self.rule.prompt.format(question=question, gold=gold if gold is not None else "(none)",
                                             answer=answer)
            reply = self.judge.complete(prompt, system=self.rule.system)
            return parse_attributes(reply), None
        except Exception as error:  # a failing or unparseable judge leaves the candidate unscored
            reason = f"{type(error).__name__}: {error}"
            kind = "unparseable" if isinstance(error, ValueError) else "failed"
            self.failures[kind] = self.failures.get(kind, 0) + 1
            return None, reason[:300]

    def metadata(self, question: str, answer: str, gold: str | None) -> dict[str, Any]:
        """What a generated record carries: attributes, aggregate, score, correct (or unscored)."""
        scores, reason = self.rate(question, answer, gold)
        if scores is None:
            return {"attributes": None, "aggregate": None, "score": None, "correct": None,
                    "unscored_reason": reason}
        return {"attributes": scores, "aggregate": aggregate(scores), "score": aggregate(scores),
                "correct": scores["correctness"] >= self.rule.correct_at}


def build_judge(ref: Mapping[str, Any], registry: Any, cache_path: Any = None) -> Any:
    """A judge from ``{name: ..., <its keys>}`` through the registry; ``cache`` defaults to ``cache_path``."""
    from mllm.pipeline.config import resolve_component

    options = dict(ref)
    component = resolve_component(registry, "judge", options, "score.judge")
    config = component.config
    if cache_path is not None and config is not None and "cache" in type(config).model_fields \
            and getattr(config, "cache", None) is None:
        config = config.model_copy(update={"cache": str(cache_path)})
    impl = component.spec.load()
    return impl(config) if config is not None else impl()


def rate_records(records: list[Any], scorer: AttributeScorer) -> tuple[list[Any], dict[str, Any]]:
    """Generated Conversations with attribute metadata added, and the metrics of the rating."""
    from mllm.records import Conversation

    out = []
    totals = {name: 0.0 for name in ATTRIBUTES}
    aggregates: list[float] = []
    for record in records:
        metadata = dict(record.metadata or {})
        metadata.update(scorer.metadata(question_of(record.turns[:-1]), record.turns[-1].content,
                                        metadata.get("gold")))
        if metadata["attributes"] is not None:
            aggregates.append(metadata["aggregate"])
            for name in ATTRIBUTES:
                totals[name] += metadata["attributes"][name]
        out.append(Conversation(id=record.id, turns=record.turns, images=record.images, metadata=metadata,
                                check_files=False))
    scored = len(aggregates)
    metrics: dict[str, Any] = {"scored": scored, "unscored": len(out) - scored,
                               "unscored_unparseable": scorer.failures.get("unparseable", 0),
                               "unscored_failed": scorer.failures.get("failed", 0),
                               "mean_aggregate": sum(aggregates) / scored if scored else 0.0}
    for name in ATTRIBUTES:
        metrics[f"mean_{name}"] = totals[name] / scored if scored else 0.0
    correct = [r.metadata["correct"] for r in out if r.metadata["attributes"] is not None]
    metrics["accuracy"] = sum(bool(c) for c in correct) / len(correct) if correct else 0.0
    return out, metrics


# -- steering an eval stage ---------------------------------------------------------------------


class SteerConfig(BaseModel):
    """An eval stage's ``steer:``: desired attributes (each defaults to 4), and which models get them.

    ``steer: {}`` (or ``steer: true``) asks for 4 on every attribute; ``steer: {verbosity: 1}``
    changes one; ``models`` limits steering to some of the stage's models (default: all)."""

    model_config = ConfigDict(extra="forbid")

    helpfulness: int = Field(4, ge=0, le=4)
    correctness: int = Field(4, ge=0, le=4)
    coherence: int = Field(4, ge=0, le=4)
    complexity: int = Field(4, ge=0, le=4)
    verbosity: int = Field(4, ge=0, le=4)
    models: list[str] | None = Field(None, description="model ids to steer; default: every model of the stage")

    def attributes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def applies_to(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


def steer_items(items: list[Any], scores: Mapping[str, int]) -> list[Any]:
    """Benchmark items with the steering text appended to every prompt."""
    from dataclasses import replace

    return [replace(item, prompt=add_steer(item.prompt, scores), check_files=False) for item in items]


def strip_answers(answers: Mapping[str, str]) -> dict[str, str]:
    """Answers with an echoed steering text / attribute line removed."""
    return {key: strip_steer_text(value) for key, value in answers.items()}
