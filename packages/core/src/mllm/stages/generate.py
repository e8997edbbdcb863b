"""The ``generate`` stage: a model's answers to a dataset's prompts, optionally scored.

```yaml
- id: mistakes
  kind: generate
  from: sft                                  # the model that answers (default: init)
  data: {name: easyvqa, split: train, limit: 2000}   # Conversations or EvalItems
  score: {rule: exact-match}                 # optional: exact-match | regex | length
  num_samples: 1                             # answers per prompt (> 1 needs temperature > 0)
  temperature: 0.0                           # 0: greedy; > 0: sampling (with top_p, seed)
  max_new_tokens: 32
- id: dpo
  kind: train
  from: sft
  method: {name: dpo, beta: 0.1}
  data: {from: mistakes, pairs: wrong-vs-gold}       # chosen = gold, rejected = the wrong answer
```

The prompt of a Conversation is its turns without the last answer, the gold answer is
that last answer; an EvalItem gives its prompt and ``answer``. Greedy single-turn prompts
go through the evaluation engine (:class:`mllm.generation.engine.AnswerEngine`: left-padded
batches, one vision pass per image, an answer cache keyed by the model's fingerprint,
so an interrupted stage resumes and a greedy answer here is the answer an ``eval`` stage
gets). Sampled or multi-turn prompts go to :class:`mllm.generation.sampling.SampleGenerator`
(``model.generate`` on left-padded batches with ``num_return_sequences``, the engine's
decoding helpers); each batch is seeded from ``seed`` and its prompts, so the same
settings give the same samples, and finished batches are cached (``sample_cache.jsonl``)
for resume.

Score rules are components (kind ``score_rule``, resolved like every name: "did you
mean", ``dist:name``; the keys beside ``rule:`` are the rule's config). The core's:
``exact-match`` (the answer equals the gold after normalisation: case, surrounding
whitespace and punctuation, articles, repeated spaces), ``regex`` (``pattern`` found in the
answer, or matching all of it with ``full_match``), ``length`` (score = characters;
correct when between ``min_chars`` and ``max_chars``): :mod:`mllm.data.score_rules`.
Plugins add more (mllm-align: ``attributes``, SteerLM's five attributes from rules or a
judge). Every rule writes ``metadata.score`` (``None``: left unscored) and
``metadata.correct``; what reads candidates back ranks by ``score``.

Output: ``records.jsonl`` (:mod:`mllm.data.recordio`): one Conversation per answer, the prompt
turns plus the answer, id ``<prompt id>`` (``<prompt id>-s<k>`` with several samples),
``metadata``: ``source_id``, ``gold``, ``sample``, and with a rule ``score`` and
``correct`` (and what the rule adds); ``metrics.json``: prompts, answers, and the rule's
metrics (the core's rules: ``accuracy``, ``mean_score`` and ``wrong``).

The dataset ``stage-output`` (``data: {from: <stage>, pairs: ...}`` in a train stage,
:mod:`mllm.data.stage_output`) reads those records back, as they are or as Preference
pairs made by a pairing (kind ``pairing``; the core's ``wrong-vs-gold``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Sequence

from pydantic import ConfigDict, Field, model_validator

from mllm.data.context import ComponentContext
from mllm.data.recordio import RECORDS_FILE, write_records
from mllm.generation.sampling import Prompt, SampleGenerator
from mllm.pipeline.config import INIT, ComponentRef, ConfigError, ResolvedComponent, StageConfig
from mllm.plugins.specs import ComponentKind
from mllm.records import Conversation, EvalItem, Turn

DATA_REPORT = "data_report.json"
ANSWER_CACHE = "answer_cache.jsonl"
SAMPLE_CACHE = "sample_cache.jsonl"


# -- the score block ---------------------------------------------------------------------------


class ScoreRef(ComponentRef):
    """``score: {rule: <score rule>, <its keys>...}``: a score rule picked by name."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name_key: ClassVar[str] = "rule"
    name: str = Field(alias="rule", description="registered name of the score rule, or 'distribution:name'")


# -- config -----------------------------------------------------------------------------------


class GenerateStageConfig(StageConfig):
    """A ``generate`` stage: a model (``from``) answers a dataset's prompts."""

    component_fields: ClassVar[dict[str, ComponentKind]] = {"data": "dataset", "score": "score_rule"}

    data: ComponentRef = Field(description="prompts: a dataset of Conversations (prompt = all but the last answer, "
                                           "gold = the last answer) or EvalItems")
    score: ScoreRef | None = Field(None, description="score each answer with a score rule: {rule: exact-match} | "
                                                     "{rule: regex, pattern: ...} | {rule: length, min_chars, "
                                                     "max_chars} | a plugin's (e.g. {rule: attributes, ...})")
    num_samples: int = Field(1, ge=1, description="answers per prompt (model.generate's num_return_sequences)")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy; above 0: sampling at this temperature")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling (with temperature > 0)")
    seed: int | None = Field(None, description="sampling seed; default: the pipeline's seed")
    max_new_tokens: int = Field(32, ge=1, description="generation budget per answer")
    batch_size: int = Field(32, ge=1, description="prompts per generate call")

    @model_validator(mode="after")
    def _sampling(self) -> GenerateStageConfig:
        if self.num_samples > 1 and self.temperature == 0:
            raise ValueError(f"num_samples: {self.num_samples} with temperature: 0 would repeat one greedy answer; "
                             "set temperature above 0 (e.g. 0.7) to sample")
        return self


# -- the stage ----------------------------------------------------------------------------------


def _model_fingerprint(context: Any, stage_id: str) -> str:
    runner = context.runner
    return runner.init_fingerprint() if stage_id == INIT else runner.fingerprint(runner.pipeline.stage(stage_id))


def generated_records(prompts: Sequence[Prompt], answers: dict[str, list[str]]) -> list[Conversation]:
    """One Conversation per answer: the prompt turns plus the answer, with source id, gold and
    sample index in metadata (a score rule adds the score)."""
    out = []
    for prompt in prompts:
        samples = answers[prompt.id]
        for index, answer in enumerate(samples):
            metadata: dict[str, Any] = {"source_id": prompt.id, "gold": prompt.gold, "sample": index}
            record_id = prompt.id if len(samples) == 1 else f"{prompt.id}-s{index}"
            out.append(Conversation(id=record_id, turns=prompt.turns + (Turn("assistant", answer),),
                                    images=prompt.images, metadata=metadata, check_files=False))
    return out


class GenerateStage:
    """Runs one generate stage (see the module docstring)."""

    def __init__(self, config: GenerateStageConfig, components: dict[str, Any]) -> None:
        self.config = config
        self.components = components

    def run(self, context: Any) -> None:
        from mllm.stages.train import collect_records

        config = self.config
        where = f"stage {config.id!r}"
        data_ref: ResolvedComponent = self.components["data"]
        dataset = data_ref.build()
        kind = getattr(dataset, "record_kind", None)
        if kind not in ("conversation", "eval_item"):
            raise ConfigError(f"{where}: dataset {data_ref.spec.name!r} yields {kind!r} records; the generate stage "
                              "answers the prompts of 'conversation' or 'eval_item' records")
        records, report = collect_records(dataset, data_ref, where)
        report.write(context.stage_dir / DATA_REPORT)
        prompts = [Prompt.of(r) for r in records]
        if not prompts:
            raise ConfigError(f"{where}: dataset {data_ref.spec.name!r} gave no prompts")
        seen: set[str] = set()
        for prompt in prompts:
            if prompt.id in seen:
                raise ConfigError(f"{where}: prompt id {prompt.id!r} appears twice in the dataset")
            seen.add(prompt.id)
        rule_ref: ResolvedComponent | None = self.components.get("score")
        rule = rule_ref.build() if rule_ref is not None else None
        if rule is not None and rule.needs_gold and any(p.gold is None for p in prompts):
            missing = next(p.id for p in prompts if p.gold is None)
            raise ConfigError(f"{where}: score rule {rule_ref.spec.name} needs gold answers; prompt {missing!r} has none")

        adapter = context.load_model(config.from_)
        fingerprint = _model_fingerprint(context, config.from_)
        context.logger.info("%s: %d prompts, %d answer(s) each", where, len(prompts), config.num_samples)
        greedy_single_turn = config.temperature == 0 and config.num_samples == 1 and all(
            len(p.turns) == 1 for p in prompts)
        if greedy_single_turn:
            from mllm.generation.engine import AnswerEngine

            engine = AnswerEngine(adapter, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                                  cache_path=context.stage_dir / ANSWER_CACHE, model_fingerprint=fingerprint,
                                  label=config.id)
            items = [EvalItem(id=p.id, prompt=p.turns[0].content, images=p.images, answer=p.gold, check_files=False)
                     for p in prompts]
            answers = {k: [v] for k, v in engine.answer(items, mode="generate").items()}
        else:
            generator = SampleGenerator(
                adapter, num_samples=config.num_samples, temperature=config.temperature, top_p=config.top_p,
                seed=config.seed if config.seed is not None else context.seed,
                max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                cache_path=context.stage_dir / SAMPLE_CACHE, model_fingerprint=fingerprint,
                label=config.id)
            answers = generator.answer(prompts)
        out = generated_records(prompts, answers)
        metrics: dict[str, Any] = {"prompts": len(prompts), "answers": len(out)}
        if rule is not None:
            ctx = ComponentContext(context.stage_dir, context.seed, getattr(context, "registry", None),
                                   where=f"{where} score", logger=context.logger)
            out, rule_metrics = rule.score(out, ctx)
            metrics.update(rule_metrics)
        write_records(context.stage_dir / RECORDS_FILE, out)
        context.metrics = metrics
        context.logger.info("%s: %s", where, json.dumps(metrics))
