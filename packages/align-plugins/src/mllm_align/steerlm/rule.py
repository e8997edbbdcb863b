"""The ``attributes`` score rule: SteerLM's five attributes of every candidate, from rules or a judge.

```yaml
score: {rule: attributes, rules: description}                        # rules (no model needed)
score: {rule: attributes, judge: {name: openai, model: gpt-4-0613}}  # a named judge
```

Every candidate gets ``metadata.attributes`` (the five 0-4 scores), ``metadata.aggregate``
(Helpfulness + Correctness + Coherence, 0-12), the generic ``metadata.score`` (= the
aggregate, what rejection sampling and ``best-vs-worse`` rank by) and ``metadata.correct``
(Correctness >= ``correct_at``, for ``wrong-vs-gold``). A judge that raises, or whose reply
lacks an attribute or has one out of range, leaves that candidate **unscored** (attributes,
aggregate, score and correct null, the reason in ``metadata.unscored_reason``); the stage
counts them (``unscored`` in ``metrics.json``) and never fails for it. Replies are cached
by the judge (``cache`` defaults to ``judge_cache.jsonl`` in the stage folder for judges
that take a ``cache`` key).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

from mllm import ComponentConfig, Conversation
from pydantic import Field, model_validator

from mllm_align.steerlm.attributes import ATTRIBUTES, JUDGE_PROMPT, aggregate, parse_attributes
from mllm_align.steerlm.description import RULE_SETS

JUDGE_CACHE = "judge_cache.jsonl"


class AttributeRuleConfig(ComponentConfig):
    """Keys of ``score: {rule: attributes, rules: description}`` or ``{rule: attributes, judge: {name: ...}}``."""

    rules: Literal["description"] | None = Field(None, description="rate with built-in rules (no model)")
    judge: dict[str, Any] | None = Field(None, description="rate with a named judge: {name: openai, model: ...}")
    prompt: str = Field(JUDGE_PROMPT, description="judge prompt; {question}, {gold} and {answer} are filled in")
    system: str | None = Field(None, description="judge system message")
    correct_at: int = Field(4, ge=0, le=4, description="metadata.correct is Correctness >= this (for wrong-vs-gold)")

    @model_validator(mode="after")
    def _one_source(self) -> AttributeRuleConfig:
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
    """Rates answers with an :class:`AttributeRuleConfig`; never raises for a bad judge reply."""

    def __init__(self, rule: AttributeRuleConfig, judge: Any = None) -> None:
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


def rate_records(records: list[Any], scorer: AttributeScorer) -> tuple[list[Any], dict[str, Any]]:
    """Generated Conversations with attribute metadata added, and the metrics of the rating."""
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


class AttributeRule:
    """The ``attributes`` score rule (see the module docstring)."""

    needs_gold: ClassVar[bool] = False  # rules need a gold sentence; a candidate without one stays unscored

    def __init__(self, config: AttributeRuleConfig) -> None:
        self.config = config

    @classmethod
    def example_config(cls, tmp_path: Any) -> dict[str, Any]:
        """For the conformance kit: the rules (no judge needed)."""
        return {"rules": "description"}

    def score(self, records: Sequence[Conversation], context: Any) -> tuple[list[Conversation], dict[str, Any]]:
        judge = None
        if self.config.judge is not None:
            judge = context.build_judge(self.config.judge, "judge", cache=context.stage_dir / JUDGE_CACHE)
        return rate_records(list(records), AttributeScorer(self.config, judge))
