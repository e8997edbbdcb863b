"""The ``eval`` stage: models answer benchmarks through the core engine.

```yaml
- id: eval
  kind: eval
  models: [init, sft]                       # model ids: init and stage ids (default: [from])
  benchmarks: [{name: easyvqa, split: test}]
  batch_size: 32                            # rows per forward pass
  max_new_tokens: 8                         # optional: overrides every benchmark's own
  prompt_style: {name: instruction, text: "Answer briefly."}   # optional: how prompts are put to the models;
                                            # `models: [...]` inside limits it to some of them
  steer: {}                                 # optional: shorthand for prompt_style: {name: steerlm, <its keys>}
```

``prompt_style`` names a prompt style (kind ``prompt_style``, resolved like every name;
the keys beside ``name`` and ``models`` are the style's config): its ``apply`` turns each
benchmark prompt into the prompt the model sees and its ``clean`` turns each answer into
what is scored. The core's ``plain`` and ``instruction`` (:mod:`mllm.data.prompt_styles`);
``steer:`` (``steer: {}`` or ``steer: true``: no keys) is ``prompt_style: {name: steerlm,
...}``, SteerLM's attribute-conditioned prompt from mllm-align.

For each model and benchmark, the benchmark's items are answered by
:class:`mllm.generation.engine.AnswerEngine` in the benchmark's ``answer_mode`` (``generate`` or
``choice``) and scored by the benchmark. Outputs, per model and benchmark, in
``<stage>/<model id>/<benchmark>/``: ``answers.jsonl`` (one line per question: id,
prompt, images, answer, gold) and ``answer_cache.jsonl`` (the engine's cache: an
interrupted stage resumes where it stopped); a judged benchmark (one with
``cache_judge_verdicts(path)``) caches its judge's verdicts in ``judge_cache.jsonl`` there
too, unless its judge config names a ``cache``. ``metrics.json`` of the stage is
``{model id: {benchmark: {metric: value}}}``, which the ``report`` stage reads; a benchmark
that records how it scored (``provenance()``: ``protocol``, ``judge``) adds those strings
beside its numbers. When
one benchmark is listed twice (e.g. two splits), the second is named ``<name>_2``.

A model's cache key starts with the fingerprint of the stage that produced it (the
``init`` fingerprint for ``init``), so answers of a retrained model are never reused.
"""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from mllm.generation.engine import AnswerEngine
from mllm.interfaces import RecordsProvenance
from mllm.pipeline.config import INIT, ComponentRef, ResolvedComponent, StageConfig
from mllm.pipeline.progress import FILE_ONLY
from mllm.pipeline.runfolder import atomic_write_text
from mllm.plugins.specs import ComponentKind

ANSWERS = "answers.jsonl"
ANSWER_CACHE = "answer_cache.jsonl"
#: a judged benchmark's verdict cache, beside each model's answers
JUDGE_CACHE = "judge_cache.jsonl"
#: the prompt style ``steer:`` stands for (mllm-align's SteerLM attribute-conditioned prompt)
STEER_STYLE = "steerlm"


class PromptStyleRef(ComponentRef):
    """``prompt_style: {name: <prompt style>, models: [...], <its keys>...}``."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    models: list[str] | None = Field(None, description="model ids given this style; default: every model of the stage")

    def applies_to(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


class EvalStageConfig(StageConfig):
    """An ``eval`` stage: which models answer which benchmarks."""

    component_fields: ClassVar[dict[str, ComponentKind]] = {"benchmarks": "benchmark", "prompt_style": "prompt_style"}

    models: list[str] | None = Field(None, description="model ids to evaluate: 'init' and ids of stages that "
                                                       "train a model; default: [from]")
    benchmarks: list[ComponentRef] = Field(description="benchmarks: [{name: easyvqa, <its keys>...}, ...]")
    batch_size: int = Field(32, ge=1, description="questions per forward pass")
    max_new_tokens: int | None = Field(None, ge=1, description="generation budget; overrides each benchmark's own")
    prompt_style: PromptStyleRef | None = Field(
        None, description="how prompts are put to the models: {name: plain | instruction | a plugin's, models: "
                          "[ids], <its keys>}; steer: {...} is short for {name: steerlm, ...} (SteerLM, mllm-align)")

    @model_validator(mode="before")
    @classmethod
    def _steer_shorthand(cls, data: Any) -> Any:
        """``steer: {<keys>}`` (``true``: no keys; ``false``: none) is ``prompt_style: {name: steerlm, <keys>}``."""
        if not isinstance(data, dict) or "steer" not in data:
            return data
        data = dict(data)
        steer = data.pop("steer")
        if steer is None or steer is False:
            return data
        if data.get("prompt_style") is not None:
            raise ValueError("give prompt_style or steer (short for prompt_style: {name: steerlm, ...}), not both")
        if steer is True:
            steer = {}
        if not isinstance(steer, dict):
            raise ValueError(f"steer takes a mapping of the steerlm prompt style's keys or true, got {steer!r}")
        data["prompt_style"] = {"name": STEER_STYLE, **steer}
        return data

    @field_validator("benchmarks")
    @classmethod
    def _some_benchmarks(cls, value: list[ComponentRef]) -> list[ComponentRef]:
        if not value:
            raise ValueError("list at least one benchmark, e.g. [{name: easyvqa, split: test}]")
        return value

    @field_validator("models")
    @classmethod
    def _unique_models(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("list at least one model id (init or a stage id), or leave models out")
            if len(set(value)) != len(value):
                raise ValueError(f"model ids repeat: {value}")
        return value

    def model_ids(self) -> list[str]:
        return list(self.models) if self.models is not None else [self.from_]

    def inputs(self) -> list[str]:
        """The stages whose models this stage reads (the loader checks they come earlier)."""
        return self.model_ids()


def benchmark_names(benchmarks: list[ResolvedComponent]) -> list[str]:
    """Folder and metrics names of the benchmarks: the name, ``<name>_2`` for a repeat, ..."""
    names, seen = [], {}
    for component in benchmarks:
        base = component.spec.name
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


class EvalStage:
    """Runs one eval stage (see the module docstring)."""

    # under `mllm run --nproc-per-node N` every process answers every N-th item; rank 0 merges and scores
    distributed: ClassVar[bool] = True

    def __init__(self, config: EvalStageConfig, components: dict[str, Any]) -> None:
        self.config = config
        self.components = components

    def _model_fingerprint(self, context: Any, model_id: str) -> str:
        runner = context.runner
        if model_id == INIT:
            return runner.init_fingerprint()
        return runner.fingerprint(context.pipeline.stage(model_id))

    def run(self, context: Any) -> None:
        config = self.config
        benchmarks: list[ResolvedComponent] = self.components["benchmarks"]
        names = benchmark_names(benchmarks)
        built = [component.build() for component in benchmarks]
        items_of = [list(bench.items()) for bench in built]
        style_ref: ResolvedComponent | None = self.components.get("prompt_style")
        style = style_ref.build() if style_ref is not None else None
        results: dict[str, dict[str, dict[str, float]]] = {}
        for model_id in config.model_ids():
            adapter = context.load_model(model_id)
            place_on_local_device(adapter)
            fingerprint = self._model_fingerprint(context, model_id)
            results[model_id] = {}
            for name, bench, items in zip(names, built, items_of):
                out_dir = Path(context.stage_dir) / model_id / name
                out_dir.mkdir(parents=True, exist_ok=True)
                mode = getattr(bench, "answer_mode", "generate")
                max_new_tokens = config.max_new_tokens or getattr(bench, "max_new_tokens", None) or 16

                def progress(done: int, total: int, _model: str = model_id, _bench: str = name) -> None:
                    if done == total or done % (20 * config.batch_size) < config.batch_size:
                        # log.txt's record; the console shows the engine's progress display
                        context.logger.info("%s on %s: %d/%d answers computed", _model, _bench, done, total,
                                            extra={FILE_ONLY: True})

                engine = AnswerEngine(adapter, batch_size=config.batch_size, max_new_tokens=max_new_tokens,
                                      cache_path=out_dir / rank_cache_name(), model_fingerprint=fingerprint,
                                      on_batch=progress, label=f"{context.stage.id}: {model_id} on {name}")
                styled = style is not None and config.prompt_style.applies_to(model_id)
                if styled:  # the style's prompts are asked; its cleaned answers are scored
                    asked = [replace(item, prompt=style.apply(item.prompt), check_files=False) for item in items]
                    raw = answer_in_shards(engine, asked, mode)
                    answers = {key: style.clean(value) for key, value in raw.items()} if raw is not None else None
                else:
                    answers = answer_in_shards(engine, items, mode)
                if answers is None:
                    continue  # another process of a sharded stage: rank 0 writes and scores
                context.logger.info("%s on %s: %d answers (%d from the cache, %d computed in %.1fs, mode %s)",
                                    model_id, name, len(answers), engine.stats["cached"], engine.stats["computed"],
                                    engine.stats["seconds"], mode)
                write_answers(out_dir / ANSWERS, asked if styled else items, answers)
                cache_verdicts = getattr(bench, "cache_judge_verdicts", None)
                if callable(cache_verdicts):  # a judged benchmark: a re-run asks only the verdicts not given yet
                    cache_verdicts(out_dir / JUDGE_CACHE)
                metrics = {key: float(value) for key, value in bench.score(items, answers).items()}
                context.logger.info("%s on %s: %s", model_id, name,
                                    ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                # how it was scored (protocol, judge): strings beside the metrics, never metrics
                provenance = bench.provenance() if isinstance(bench, RecordsProvenance) else {}
                results[model_id][name] = {**metrics, **{k: str(v) for k, v in provenance.items()}}
            del adapter
            gc.collect()
        context.metrics = results


def rank_cache_name() -> str:
    """``answer_cache.jsonl``, or ``answer_cache.rank<r>.jsonl`` for each process of a sharded stage."""
    from mllm.distributed import rank, world_size

    return ANSWER_CACHE if world_size() == 1 else f"answer_cache.rank{rank()}.jsonl"


def place_on_local_device(adapter: Any) -> None:
    """Move the model to this process's GPU when there is one (torchrun sets it per process)."""
    import torch

    if torch.cuda.is_available():
        adapter.model.to(torch.device("cuda", torch.cuda.current_device()))


def answer_in_shards(engine: AnswerEngine, items: list[Any], mode: str) -> dict[str, str] | None:
    """Every item's answer, keyed by id in item order.

    With several processes (``mllm run --nproc-per-node N``) each answers every N-th
    item (:func:`mllm.distributed.shard`) and rank 0 receives them all
    (``gather_object``); the other ranks get ``None``. Batching never changes an
    answer, so the merged answers are the single-process ones."""
    from mllm.distributed import gather_to_main, shard, world_size

    if world_size() == 1:
        return engine.answer(items, mode=mode)
    parts = gather_to_main(engine.answer(shard(items), mode=mode))
    if parts is None:
        return None
    merged: dict[str, str] = {}
    for part in parts:
        merged.update(part)
    return {item.id: merged[item.id] for item in items}


def write_answers(path: Path, items: list[Any], answers: dict[str, str]) -> None:
    """``answers.jsonl``: one JSON object per item (id, prompt, images, answer, gold), atomically."""
    lines = []
    for item in items:
        lines.append(json.dumps({
            "id": item.id, "prompt": item.prompt, "images": [str(p) for p in item.images],
            "answer": answers[item.id], "gold": item.answer,
        }))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
