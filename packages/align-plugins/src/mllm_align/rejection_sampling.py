"""Rejection sampling (method ``rejection-sampling``): SFT on the best candidate per prompt.

Reads scored candidates (a generate stage with a score rule, e.g. ``score: {rule: attributes,
...}``, read with ``data: {from: <that stage>}``), keeps the best candidate of every prompt by
the generic ``metadata.score`` any rule writes (:func:`mllm_align.candidates.select_best`;
with ``attributes`` it is the aggregate Helpfulness + Correctness + Coherence) and trains
SFT on them; the loss is :class:`mllm_align.sft.SFT`'s (by composition).

* ``ties``: which of several candidates sharing the best score is kept: ``first``
  (lowest sample index, default), ``shortest``, ``longest``, or ``all`` of them;
* ``min_score``: prompts whose best score is below it are dropped (nothing to imitate);
* ``rounds: k`` repeats generate-score-train k times inside this stage. Round 1 trains on
  the best of the given candidates (the generate stage's, sampled once for every method of
  the pipeline); before each later round the model just trained samples new candidates for
  the same prompts with the generate stage's own settings (``num_samples``, ``temperature``,
  ``top_p``, ``max_new_tokens``; the seed is the stage's seed + round - 1), they are scored
  with the generate stage's ``score:`` block, and the best of them are trained on.
  Rounds before the last write their checkpoints, sample cache (``sample_cache.jsonl``)
  and train log under ``round-<r>/`` in the stage folder, so an interrupted stage resumes
  inside the round it was in; ``rounds.json`` lists per round the prompts, the candidates
  and the kept ones' mean score. The last round is the stage's own training run
  (its ``model/``, ``train_log.jsonl`` and metrics).

```yaml
- id: rejection-sampling
  kind: train
  from: sft
  method: {name: rejection-sampling, ties: first, min_score: 6, rounds: 1}   # plus the sft keys
  data: {from: candidates}
```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from mllm import Conversation
from pydantic import Field

from mllm_align.candidates import Ties, group_candidates, score_of, select_best
from mllm_align.sft import SFT, SFTConfig

ROUNDS_FILE = "rounds.json"


class RejectionSamplingConfig(SFTConfig):
    """Options of ``rejection-sampling``: SFT's, plus the selection and the rounds."""

    ties: Ties = Field("first", description="best-score ties: first (lowest sample index), shortest, longest, all")
    min_score: float | None = Field(None, description="drop prompts whose best score (the rule's metadata.score; "
                                                      "with attributes the 0-12 aggregate) is below this")
    rounds: int = Field(1, ge=1, description="generate-score-train rounds; rounds after the first sample new "
                                             "candidates from the model just trained")


def _source_stage(context: Any) -> Any:
    """The generate stage the candidates came from (its config, the sampling settings, and
    its resolved score rule in ``components["score"]``)."""
    data = context.stage.config.data
    source = getattr(data, "from_", None) or data.options().get("stage")
    if source is None:
        raise ValueError("rejection-sampling with rounds > 1 reads its candidates with data: {from: <generate stage>}")
    stage = context.pipeline.stage(source)
    if stage.components.get("score") is None or not hasattr(stage.config, "num_samples"):
        raise ValueError(f"rejection-sampling rounds > 1: stage {source!r} is not a generate stage with a score: block")
    return stage


class RejectionSampling:
    """SFT on the best scored candidate per prompt, optionally over several rounds (see the module docstring)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: RejectionSamplingConfig | None = None) -> None:
        self.config = config or RejectionSamplingConfig()
        self.sft = SFT(self.config)
        self.model: Any = None
        self.history: list[dict[str, Any]] = []

    @classmethod
    def example_records(cls, tmp_path: Any) -> list[Conversation]:
        """Scored candidates for the conformance kit: two samples of one prompt, as a
        generate stage with ``score: {rule: attributes}`` writes them."""
        from mllm.testing import example_records

        records = example_records("conversation", tmp_path)
        return [Conversation(id=r.id, turns=r.turns, images=r.images,
                             metadata={"source_id": "prompt-0", "sample": index, "score": 6.0 + index})
                for index, r in enumerate(records)]

    @property
    def adapter(self) -> Any:
        return self.sft.adapter

    @property
    def projector_lr(self) -> float | None:
        return self.sft.projector_lr

    def setup(self, adapter: Any) -> Any:
        self.model = self.sft.setup(adapter)
        return self.model

    def select(self, candidates: Sequence[Any], round_index: int) -> list[Conversation]:
        kept = select_best(candidates, self.config.ties, self.config.min_score)
        prompts = len(group_candidates(candidates))
        scores = [score_of(r) for r in kept]
        self.history.append({"round": round_index, "prompts": prompts, "candidates": len(candidates),
                             "unscored": sum(score_of(r) is None for r in candidates), "kept": len(kept),
                             "kept_mean_score": sum(scores) / len(scores) if scores else 0.0})
        if not kept:
            raise ValueError(f"rejection-sampling round {round_index}: no candidate kept out of {len(candidates)} "
                             f"(min_score {self.config.min_score}); are they scored (a generate stage with a score: "
                             "{rule: ...} block)?")
        return kept

    def prepare(self, context: Any) -> None:
        """Rounds 1..k-1 (train, sample, score), then the best candidates for the last round in ``context.records``."""
        candidates = list(context.records)
        for round_index in range(1, self.config.rounds):
            kept = self.select(candidates, round_index)
            candidates = self._round(context, round_index, kept, candidates)
        context.records = self.select(candidates, self.config.rounds)
        (context.stage_dir / ROUNDS_FILE).write_text(json.dumps(self.history, indent=2))
        logger = getattr(context, "logger", None)
        if logger is not None:
            logger.info("rejection-sampling: %s", json.dumps(self.history))

    def _round(self, context: Any, round_index: int, kept: list[Any], candidates: list[Any]) -> list[Any]:
        """Train on ``kept`` into ``round-<r>/``, then sample and score new candidates with the trained model."""
        from mllm import ComponentContext, Prompt, SampleGenerator, generated_records, train_method

        stage = _source_stage(context)
        source = stage.config
        folder = context.stage_dir / f"round-{round_index}"
        train_method(self, self.model, kept, context.stage.config.train, folder, seed=context.seed,
                     resume=context.resume, logger=getattr(context, "logger", None))
        prompts = []
        for source_id, group in group_candidates(candidates).items():
            first = group[0]
            prompts.append(Prompt(source_id, tuple(first.turns[:-1]), tuple(first.images),
                                  (first.metadata or {}).get("gold")))
        base_seed = source.seed if source.seed is not None else context.seed
        generator = SampleGenerator(
            self.adapter, num_samples=source.num_samples, temperature=source.temperature, top_p=source.top_p,
            seed=base_seed + round_index, max_new_tokens=source.max_new_tokens, batch_size=source.batch_size,
            cache_path=folder / "sample_cache.jsonl", model_fingerprint=f"{context.fingerprint}:round-{round_index}")
        answers = generator.answer(prompts)
        # the generate stage's own score rule, whatever it is; its caches go into this round's folder
        rule = stage.components["score"].build()
        score_context = ComponentContext(folder, context.seed, getattr(context, "registry", None),
                                         where=f"rejection-sampling round {round_index} score",
                                         logger=getattr(context, "logger", None))
        records, metrics = rule.score(generated_records(prompts, answers), score_context)
        self.history[-1]["resampled"] = metrics
        return records

    def row_problem(self, record: Conversation) -> str | None:
        return self.sft.row_problem(record)

    def collate(self, records: Sequence[Conversation]) -> dict[str, Any]:
        return self.sft.collate(records)

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        return self.sft.loss(model, batch)

    def lengths(self, records: Sequence[Conversation]) -> list[int]:
        return self.sft.lengths(records)
