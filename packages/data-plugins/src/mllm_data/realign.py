"""``realign`` (a transform op): ReAlign's reformatting of answers with a judge/generator model.

```yaml
- op: realign
  judge: {name: openai, model: gpt-4-0613}        # or {name: hf-local, path: /models/...}
  instruction: "Rewrite the answer as a short explanation followed by the final answer."
```

Each assistant answer is rewritten by the judge following ``instruction``; the prompt shows
the question and the original answer. With ``keep_final_answer`` (default) the original's
final-answer sentence is kept at the end of the rewrite (appended when the rewrite dropped
it); ``min_length_ratio`` keeps the original when the rewrite is much shorter (ReAlign's
length filter; 0 disables it). Replies are cached per prompt in the stage folder
(``realign_cache.jsonl``), so an interrupted stage resumes without asking again; an empty
reply is never cached.
"""

from __future__ import annotations

import re
from typing import Any

from mllm import (
    IMAGE_TOKEN,
    ComponentConfig,
    ComponentContext,
    ComponentRef,
    Conversation,
    KeyedJsonlCache,
    Record,
    Turn,
    rewrite_answers,
)
from pydantic import Field

REALIGN_INSTRUCTION = (
    "Rewrite the answer so that it is well organized and easy to follow: first the reasoning, step by step, "
    "then the final answer. Keep every fact of the original answer and add no new claims."
)
REALIGN_PROMPT = (
    "You are given a question and its original answer. {instruction}\n\n"
    "[Question]\n{question}\n\n[Original answer]\n{answer}\n\n"
    "Write only the rewritten answer."
)


class RealignConfig(ComponentConfig):
    """Keys of ``{op: realign, judge: {...}}``: rewrite each assistant answer with a judge/generator model."""

    judge: ComponentRef = Field(description="the model that rewrites: {name: openai | hf-local, <its keys>}")
    instruction: str = Field(REALIGN_INSTRUCTION, description="how to rewrite (the {instruction} of the prompt)")
    prompt: str = Field(REALIGN_PROMPT, description="prompt template with {instruction}, {question}, {answer}")
    system: str | None = Field(None, description="optional system message")
    keep_final_answer: bool = Field(True, description="keep the original's final-answer sentence (final_answer "
                                                      "pattern) at the end of the rewrite")
    final_answer: str = Field(r"The answer is .+?\.", description="regex of the final-answer sentence")
    min_length_ratio: float = Field(0.0, ge=0.0, le=1.0, description="keep the original when the rewrite is shorter "
                                                                      "than this share of it (0: never)")


def _question_before(turns: tuple[Turn, ...], index: int) -> str:
    return turns[index - 1].content.replace(IMAGE_TOKEN, "").strip() if index else ""


class Realign:
    """The ``realign`` op (see the module docstring)."""

    def __init__(self, config: RealignConfig) -> None:
        self.config = config

    @classmethod
    def example_config(cls, tmp_path: Any) -> dict[str, Any]:
        """For the conformance kit: a judge named, never called by the config check."""
        return {"judge": {"name": "openai", "model": "gpt-4-0613"}}

    def apply(self, records: list[Record], ctx: ComponentContext) -> list[Record]:
        return realign(self.config, records, ctx)


def realign(op: RealignConfig, records: list[Record], ctx: ComponentContext) -> list[Record]:
    """Every conversation with its assistant answers rewritten by ``op.judge`` (cached per prompt)."""
    judge = None
    cache = KeyedJsonlCache(ctx.stage_dir / "realign_cache.jsonl")
    final = re.compile(op.final_answer)
    judge_id = op.judge.model_dump()

    def rewrite(record: Conversation, index: int, turn: Turn) -> str:
        nonlocal judge
        question = _question_before(record.turns, index)
        prompt = op.prompt.format(instruction=op.instruction, question=question, answer=turn.content)
        key = KeyedJsonlCache.key(["realign", judge_id, op.system, prompt])
        reply = cache.get(key)
        if reply is None:
            if judge is None:
                judge = ctx.build_judge(op.judge, "judge")
            reply = judge.complete(prompt, system=op.system)
            if reply.strip():  # an empty reply is never cached: the next run asks again
                cache.put(key, reply)
        return _realigned(turn.content, reply, op, final)

    out = rewrite_answers(records, ctx, "realign", rewrite, realigned=True)
    ctx.logger.info("realign: %d rows, %d answers from the cache", len(records), cache.hits)
    return out


def _realigned(original: str, reply: str, op: RealignConfig, final: re.Pattern) -> str:
    rewrite = reply.strip()
    if not rewrite:
        raise ValueError("the judge returned an empty rewrite")
    if op.min_length_ratio and len(rewrite) < op.min_length_ratio * len(original):
        return original
    if op.keep_final_answer:
        matches = list(final.finditer(original))
        if matches:
            sentence = matches[-1].group(0).strip()
            found = list(final.finditer(rewrite))
            if not found or found[-1].group(0).strip() != sentence:
                rewrite = rewrite.rstrip() + " " + sentence  # the rewrite must end with the original's answer
            elif not rewrite.rstrip().endswith(sentence):
                rewrite = rewrite[: found[-1].start()].rstrip() + " " + sentence
    return rewrite
