"""SteerLM (method ``steerlm``): attribute-conditioned SFT, as in mllm-dpo.

Trains on attribute-scored candidates (a generate stage with ``score: {rule: attributes,
...}``, read with ``data: {from: <that stage>}``). Each scored candidate becomes a
Conversation whose last user turn carries the candidate's *own* attributes in mllm-dpo's
SteerLM wording (:func:`mllm_align.steerlm.attributes.add_steer`)::

    USER: <image>\\nDescribe the image in one sentence.
    Please answer the question such that your response is in the following attributes in 5-point Likert scale:
    Helpfulness: 3, Correctness: 4, Coherence: 2, Complexity: 1, Verbosity: 2
    ASSISTANT: the candidate

so the model learns what answers of each attribute level look like; at inference an eval
stage's ``steer:`` asks for the attributes wanted (default 4 each) with the same text, and
strips an echoed attribute line from answers before scoring. Unscored candidates (a
judge failed) are left out. The loss is SFT's (labels only on the answer), by composition:
this method wraps :class:`mllm_align.sft.SFT`.

```yaml
- id: steerlm
  kind: train
  from: sft
  method: {name: steerlm}                 # plus the sft keys (lora, freeze_*, ...)
  data: {from: candidates}
- id: eval-steerlm
  kind: eval
  models: [steerlm]
  steer: {}                               # all attributes 4; e.g. {verbosity: 2} to ask for shorter answers
  benchmarks: [...]
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from mllm import Conversation, Turn
from pydantic import Field

from mllm_align.sft import SFT, SFTConfig
from mllm_align.steerlm.attributes import ATTRIBUTES, MAX_SCORE, add_steer, check_attributes


class SteerLMConfig(SFTConfig):
    """Options of ``steerlm``: SFT's, plus which candidates to condition on."""

    min_aggregate: float | None = Field(None, ge=0, le=12, description="leave out candidates whose aggregate "
                                                                        "(Helpfulness + Correctness + Coherence) is below this")
    include_gold: bool = Field(False, description="also train on each prompt's gold answer, conditioned on "
                                                  "all attributes 4 (when the candidates carry metadata.gold)")


def condition(record: Conversation, scores: dict[str, int]) -> Conversation:
    """``record`` with the SteerLM text for ``scores`` appended to its last user turn."""
    turns = list(record.turns)
    last_user = max(i for i, t in enumerate(turns) if t.role == "user")
    turns[last_user] = Turn("user", add_steer(turns[last_user].content, scores))
    return Conversation(id=record.id, turns=tuple(turns), images=record.images,
                        metadata={**(record.metadata or {}), "steer": scores}, check_files=False)


def steer_records(records: Sequence[Any], min_aggregate: float | None = None,
                  include_gold: bool = False) -> tuple[list[Conversation], dict[str, int]]:
    """Conditioned training records and counts (kept, unscored, below_min, gold)."""
    out: list[Conversation] = []
    counts = {"kept": 0, "unscored": 0, "below_min": 0, "gold": 0}
    golds: dict[str, Conversation] = {}
    for record in records:
        metadata = record.metadata or {}
        scores = metadata.get("attributes")
        if not scores:
            counts["unscored"] += 1
            continue
        if min_aggregate is not None and float(metadata.get("aggregate") or 0) < min_aggregate:
            counts["below_min"] += 1
            continue
        out.append(condition(record, check_attributes(scores)))
        counts["kept"] += 1
        gold = metadata.get("gold")
        source = str(metadata.get("source_id", record.id))
        if include_gold and gold and source not in golds:
            golds[source] = Conversation(id=f"{source}-gold", turns=tuple(record.turns[:-1]) + (Turn("assistant", gold),),
                                         images=record.images, metadata={"source_id": source, "gold": gold},
                                         check_files=False)
    for gold_record in golds.values():
        out.append(condition(gold_record, {name: MAX_SCORE for name in ATTRIBUTES}))
        counts["gold"] += 1
    return out, counts


class SteerLM:
    """Attribute-conditioned SFT on scored candidates (see the module docstring)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: SteerLMConfig | None = None) -> None:
        self.config = config or SteerLMConfig()
        self.sft = SFT(self.config)
        self.counts: dict[str, int] = {}

    @property
    def adapter(self) -> Any:
        return self.sft.adapter

    @property
    def projector_lr(self) -> float | None:
        return self.sft.projector_lr

    @classmethod
    def example_records(cls, tmp_path: Any) -> list[Conversation]:
        """Attribute-scored candidates for the conformance kit, as a generate stage with
        ``score: {rule: attributes}`` writes them."""
        from mllm.testing import example_records

        return [Conversation(id=r.id, turns=r.turns, images=r.images,
                             metadata={"source_id": r.id, "attributes": {name: 3 for name in ATTRIBUTES},
                                       "aggregate": 9.0, "score": 9.0})
                for r in example_records("conversation", tmp_path)]

    def setup(self, adapter: Any) -> Any:
        return self.sft.setup(adapter)

    def prepare(self, context: Any) -> None:
        """Replace the candidates by their conditioned conversations (``context.records``)."""
        records, self.counts = steer_records(context.records, self.config.min_aggregate, self.config.include_gold)
        logger = getattr(context, "logger", None)
        if logger is not None:
            logger.info("steerlm: %s", self.counts)
        if not records:
            raise ValueError(f"steerlm: no scored candidates to train on ({self.counts}); the data must come from a "
                             "generate stage with score: {rule: attributes, ...}")
        context.records = records

    def row_problem(self, record: Conversation) -> str | None:
        return self.sft.row_problem(record)

    def collate(self, records: Sequence[Conversation]) -> dict[str, Any]:
        return self.sft.collate(records)

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        return self.sft.loss(model, batch)

    def lengths(self, records: Sequence[Conversation]) -> list[int]:
        return self.sft.lengths(records)
