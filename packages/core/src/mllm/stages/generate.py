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
gets). Sampled or multi-turn prompts use ``model.generate`` on left-padded batches with
``num_return_sequences``; each batch is seeded from ``seed`` and its prompts, so the
same settings give the same samples, and finished batches are cached
(``sample_cache.jsonl``) for resume.

Score rules: ``exact-match`` (the answer equals the gold after normalisation: case,
surrounding whitespace and punctuation, articles, repeated spaces), ``regex``
(``pattern`` found in the answer, or matching all of it with ``full_match``), ``length``
(score = characters; correct when between ``min_chars`` and ``max_chars``).
``attributes`` (``{rule: attributes, rules: description}`` or ``{rule: attributes, judge:
{name: ...}}``): the five SteerLM attributes 0-4 and their aggregate (Helpfulness +
Correctness + Coherence) in ``metadata.attributes`` / ``metadata.aggregate``; a judge
that fails or answers unparseably leaves the candidate unscored and counted
(:mod:`mllm.data.scoring_attributes`). ``pairs: best-vs-worse`` reads such candidates back as
DPO pairs (:mod:`mllm.data.candidates`).

Output: ``records.jsonl`` (:mod:`mllm.data.recordio`): one Conversation per answer, the prompt
turns plus the answer, id ``<prompt id>`` (``<prompt id>-s<k>`` with several samples),
``metadata``: ``source_id``, ``gold``, ``sample``, and with a rule ``score`` and
``correct``; ``metrics.json``: prompts, answers, and with a rule ``accuracy``,
``mean_score`` and ``wrong``.

The dataset ``stage-output`` (``data: {from: <stage>, pairs: ...}`` in a train stage)
reads those records back, as they are or as ``wrong-vs-gold`` Preference pairs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mllm.data.badrows import DataReport
from mllm.data.recordio import RECORDS_FILE, read_records, stage_records_path, write_records
from mllm.data.scoring_attributes import AttributeRule
from mllm.interfaces import DatasetConfig
from mllm.pipeline.config import INIT, ComponentRef, ConfigError, ResolvedComponent, StageConfig
from mllm.plugins.specs import ComponentKind
from mllm.records import Conversation, EvalItem, Preference, Turn

DATA_REPORT = "data_report.json"
ANSWER_CACHE = "answer_cache.jsonl"
SAMPLE_CACHE = "sample_cache.jsonl"


# -- score rules ---------------------------------------------------------------------------------


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExactMatchRule(_Rule):
    """Correct when the normalised answer equals the normalised gold answer."""

    rule: Literal["exact-match"]
    normalize: bool = Field(True, description="compare lower-cased, without surrounding punctuation, articles "
                                              "and repeated spaces")


class RegexRule(_Rule):
    """Correct when ``pattern`` is found in the answer (``full_match``: matches all of it)."""

    rule: Literal["regex"]
    pattern: str = Field(description="a Python regular expression")
    full_match: bool = False
    ignore_case: bool = False

    @model_validator(mode="after")
    def _compiles(self) -> RegexRule:
        try:
            re.compile(self.pattern)
        except re.error as error:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {error}") from None
        return self


class LengthRule(_Rule):
    """Score = the answer's length in characters; correct when within the bounds."""

    rule: Literal["length"]
    min_chars: int = Field(0, ge=0)
    max_chars: int | None = Field(None, ge=0)


# AttributeRule (mllm.data.scoring_attributes): the five SteerLM attributes from rules or a judge
ScoreRule = Annotated[Union[ExactMatchRule, RegexRule, LengthRule, AttributeRule], Field(discriminator="rule")]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lower case, no surrounding punctuation or whitespace, no articles, single spaces."""
    text = text.lower().strip().strip(string.punctuation + " ")
    text = _ARTICLES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def score_answer(rule: Any, answer: str, gold: str | None) -> tuple[float, bool]:
    """``(score, correct)`` of one answer under a rule."""
    if isinstance(rule, ExactMatchRule):
        if gold is None:
            raise ValueError("exact-match needs a gold answer, and this prompt has none")
        same = normalize_answer(answer) == normalize_answer(gold) if rule.normalize else answer.strip() == gold.strip()
        return float(same), same
    if isinstance(rule, RegexRule):
        flags = re.IGNORECASE if rule.ignore_case else 0
        found = (re.fullmatch(rule.pattern, answer.strip(), flags) if rule.full_match
                 else re.search(rule.pattern, answer, flags)) is not None
        return float(found), found
    if isinstance(rule, LengthRule):
        length = len(answer)
        ok = length >= rule.min_chars and (rule.max_chars is None or length <= rule.max_chars)
        return float(length), ok
    raise TypeError(f"unknown score rule {rule!r}")


# -- config -----------------------------------------------------------------------------------


class GenerateStageConfig(StageConfig):
    """A ``generate`` stage: a model (``from``) answers a dataset's prompts."""

    component_fields: ClassVar[dict[str, ComponentKind]] = {"data": "dataset"}

    data: ComponentRef = Field(description="prompts: a dataset of Conversations (prompt = all but the last answer, "
                                           "gold = the last answer) or EvalItems")
    score: ScoreRule | None = Field(None, description="score each answer: {rule: exact-match} | {rule: regex, "
                                                      "pattern: ...} | {rule: length, min_chars, max_chars}")
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


# -- prompts ------------------------------------------------------------------------------------


class Prompt:
    """One prompt to answer: its turns (ending with a user turn), images and gold answer."""

    __slots__ = ("id", "turns", "images", "gold")

    def __init__(self, id: str, turns: tuple[Turn, ...], images: tuple[Any, ...], gold: str | None) -> None:
        self.id, self.turns, self.images, self.gold = id, turns, images, gold

    @classmethod
    def of(cls, record: Any) -> Prompt:
        if isinstance(record, Conversation):
            return cls(record.id, tuple(record.turns[:-1]), tuple(record.images), record.turns[-1].content)
        if isinstance(record, EvalItem):
            return cls(record.id, (Turn("user", record.prompt),), tuple(record.images), record.answer)
        raise TypeError(f"the generate stage answers Conversations or EvalItems, not {type(record).__name__}")


def _image_stats(images: Sequence[Any]) -> list[Any]:
    out = []
    for image in images:
        try:
            st = os.stat(image)
            out.append([os.fspath(image), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([os.fspath(image), None, None])
    return out


class SampleGenerator:
    """Sampled (or multi-turn) answers with ``model.generate`` on left-padded batches.

    Each distinct image of a batch is encoded once; ``num_return_sequences`` answers per
    prompt; the batch's seed derives from ``seed`` and its prompts' keys.
    """

    def __init__(self, adapter: Any, *, num_samples: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, max_new_tokens: int = 32, batch_size: int = 32,
                 cache_path: Path | None = None, model_fingerprint: str = "") -> None:
        self.adapter = adapter
        self.num_samples = num_samples
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.model_fingerprint = model_fingerprint

    def _key(self, prompt: Prompt) -> str:
        payload = {"model": self.model_fingerprint, "turns": [[t.role, t.content] for t in prompt.turns],
                   "images": _image_stats(prompt.images), "n": self.num_samples, "t": self.temperature,
                   "p": self.top_p, "seed": self.seed, "max_new_tokens": self.max_new_tokens}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _stop_ids(self) -> list[int]:
        stops = [self.adapter.eos_token_id]
        stop_text = getattr(getattr(self.adapter, "template", None), "stop", None)
        if stop_text:
            encoded = self.adapter.tokenizer.encode(stop_text, add_special_tokens=False)
            if len(encoded) == 1:
                stops.append(encoded[0])
        return list(dict.fromkeys(s for s in stops if s is not None))

    def _load_cache(self) -> dict[str, list[str]]:
        cache: dict[str, list[str]] = {}
        if self.cache_path is not None and self.cache_path.exists():
            for line in self.cache_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    cache[entry["key"]] = list(entry["answers"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interruption
        return cache

    def answer(self, prompts: Sequence[Prompt]) -> dict[str, list[str]]:
        """``num_samples`` answers per prompt id."""
        import torch

        cache = self._load_cache()
        keys = {p.id: self._key(p) for p in prompts}
        todo = [p for p in prompts if keys[p.id] not in cache]
        todo.sort(key=lambda p: -len(self.adapter.encode_prompt(p.turns)))
        model = self.adapter.model
        was_training = model.training
        model.eval()
        handle = None
        try:
            if self.cache_path is not None and todo:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(self.cache_path, "a")
            with torch.inference_mode():
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start:start + self.batch_size]
                    texts = self._generate([self.adapter.encode_prompt(p.turns) for p in batch], batch,
                                           [keys[p.id] for p in batch])
                    for prompt, answers in zip(batch, texts):
                        cache[keys[prompt.id]] = answers
                        if handle is not None:
                            handle.write(json.dumps({"key": keys[prompt.id], "id": prompt.id, "answers": answers}) + "\n")
                    if handle is not None:
                        handle.flush()
                        os.fsync(handle.fileno())
        finally:
            if handle is not None:
                handle.close()
            model.train(was_training)
        return {p.id: cache[keys[p.id]] for p in prompts}

    def _generate(self, rows: list[list[int]], prompts: list[Prompt], keys: list[str]) -> list[list[str]]:
        import torch
        from transformers import GenerationConfig
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        device = next(self.adapter.model.parameters()).device
        width = max(len(r) for r in rows)
        pad = self.adapter.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
        kwargs: dict[str, Any] = {}
        paths = [os.fspath(image) for p in prompts for image in p.images]
        if paths:
            distinct = list(dict.fromkeys(paths))
            features = self.adapter.encode_images(self.adapter.load_images(distinct).to(device))
            by_path = dict(zip(distinct, features))
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=[by_path[p] for p in paths])}
        stops = self._stop_ids()
        sample = self.temperature > 0
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens, do_sample=sample, num_beams=1,
            temperature=self.temperature if sample else None, top_p=self.top_p if sample else None, top_k=None,
            num_return_sequences=self.num_samples, pad_token_id=pad, eos_token_id=stops,
            bos_token_id=getattr(self.adapter.tokenizer, "bos_token_id", None))
        batch_seed = int(hashlib.sha256(f"{self.seed}:{':'.join(keys)}".encode()).hexdigest()[:8], 16)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_seed)
            output = self.adapter.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
        new_tokens = output[:, ids.shape[1]:].tolist()
        texts = []
        for row in new_tokens:
            cut = next((i for i, token in enumerate(row) if token in stops), len(row))
            texts.append(self.adapter.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        k = self.num_samples
        return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]


# -- the stage ----------------------------------------------------------------------------------


def _model_fingerprint(context: Any, stage_id: str) -> str:
    runner = context.runner
    return runner.init_fingerprint() if stage_id == INIT else runner.fingerprint(runner.pipeline.stage(stage_id))


def generated_records(prompts: Sequence[Prompt], answers: dict[str, list[str]], rule: Any = None) -> list[Conversation]:
    """One Conversation per answer: the prompt turns plus the answer, with gold and score in metadata."""
    out = []
    for prompt in prompts:
        samples = answers[prompt.id]
        for index, answer in enumerate(samples):
            metadata: dict[str, Any] = {"source_id": prompt.id, "gold": prompt.gold, "sample": index}
            if rule is not None:
                score, correct = score_answer(rule, answer, prompt.gold)
                metadata.update(score=score, correct=correct)
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
        if isinstance(config.score, ExactMatchRule) and any(p.gold is None for p in prompts):
            missing = next(p.id for p in prompts if p.gold is None)
            raise ConfigError(f"{where}: score rule exact-match needs gold answers; prompt {missing!r} has none")

        adapter = context.load_model(config.from_)
        fingerprint = _model_fingerprint(context, config.from_)
        context.logger.info("%s: %d prompts, %d answer(s) each", where, len(prompts), config.num_samples)
        greedy_single_turn = config.temperature == 0 and config.num_samples == 1 and all(
            len(p.turns) == 1 for p in prompts)
        if greedy_single_turn:
            from mllm.generation.engine import AnswerEngine

            engine = AnswerEngine(adapter, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                                  cache_path=context.stage_dir / ANSWER_CACHE, model_fingerprint=fingerprint)
            items = [EvalItem(id=p.id, prompt=p.turns[0].content, images=p.images, answer=p.gold, check_files=False)
                     for p in prompts]
            answers = {k: [v] for k, v in engine.answer(items, mode="generate").items()}
        else:
            generator = SampleGenerator(
                adapter, num_samples=config.num_samples, temperature=config.temperature, top_p=config.top_p,
                seed=config.seed if config.seed is not None else context.seed,
                max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                cache_path=context.stage_dir / SAMPLE_CACHE, model_fingerprint=fingerprint)
            answers = generator.answer(prompts)
        attribute_metrics: dict[str, Any] = {}
        if isinstance(config.score, AttributeRule):  # SteerLM attributes: rules or a judge; never fails on a reply
            from mllm.data.scoring_attributes import AttributeScorer, build_judge, rate_records

            judge = (build_judge(config.score.judge, context.registry, context.stage_dir / "judge_cache.jsonl")
                     if config.score.judge is not None else None)
            out, attribute_metrics = rate_records(generated_records(prompts, answers), AttributeScorer(config.score, judge))
        else:
            out = generated_records(prompts, answers, config.score)
        write_records(context.stage_dir / RECORDS_FILE, out)
        metrics: dict[str, Any] = {"prompts": len(prompts), "answers": len(out)}
        if attribute_metrics:
            metrics.update(attribute_metrics)
        elif config.score is not None:
            correct = [bool(r.metadata["correct"]) for r in out]
            metrics["accuracy"] = sum(correct) / len(correct)
            metrics["mean_score"] = sum(float(r.metadata["score"]) for r in out) / len(out)
            metrics["wrong"] = len(correct) - sum(correct)
        context.metrics = metrics
        context.logger.info("%s: %s", where, json.dumps(metrics))


# -- reading it back: the stage-output dataset ----------------------------------------------------


PairRule = Literal["wrong-vs-gold", "best-vs-worse"]  # best-vs-worse: mllm.data.candidates


class StageOutputConfig(DatasetConfig):
    """``stage-output``: the records an earlier generate (or transform) stage wrote."""

    stage: str = Field(description="id of an earlier stage that wrote records.jsonl")
    pairs: PairRule | None = Field(None, description="wrong-vs-gold: Preference pairs from scored answers; "
                                                     "none: the records as written (Conversations)")

    def stage_inputs(self) -> list[str]:
        """The stage read is an input: it must come earlier, and its fingerprint chains into the reader's."""
        return [self.stage]


def wrong_vs_gold(records: Iterator[Any], report: DataReport, path: Path) -> Iterator[Preference]:
    """For each scored answer that is wrong: chosen = the gold answer, rejected = the answer.

    Answers that are right, empty, or equal to the gold answer after normalisation make no
    pair (they are not bad rows); one pair per distinct wrong answer of a prompt."""
    seen: set[tuple[str, str]] = set()
    for record in records:
        metadata = record.metadata or {}
        if not isinstance(record, Conversation):
            report.skip(file=path, row=f"id {record.id}", reason=f"record {record.id!r} is not a generated Conversation")
            continue
        if "correct" not in metadata:
            raise ConfigError(f"{path}: record {record.id!r} has no score; pairs: wrong-vs-gold needs a generate "
                              "stage with a score rule, e.g. score: {rule: exact-match}")
        answer, gold = record.turns[-1].content, metadata.get("gold")
        if metadata["correct"] is None:  # an attribute judge left it unscored: no verdict, no pair
            continue
        if metadata["correct"] or not answer.strip() or gold is None or not str(gold).strip():
            continue
        if normalize_answer(answer) == normalize_answer(str(gold)):
            continue
        source = str(metadata.get("source_id", record.id))
        if (source, answer) in seen:
            continue
        seen.add((source, answer))
        yield Preference(id=record.id, prompt=tuple(record.turns[:-1]), chosen=str(gold), rejected=answer,
                         images=record.images, metadata={"source_id": source, "pairs": "wrong-vs-gold"},
                         check_files=False)


class StageOutput:
    """The ``stage-output`` dataset (``data: {from: <stage>, pairs: ...}`` of a train stage)."""

    record_kind: ClassVar[str] = "conversation"

    def __init__(self, config: StageOutputConfig) -> None:
        self.config = config
        self.record_kind = "preference" if config.pairs else "conversation"  # type: ignore[misc]

    def path(self) -> Path:
        return stage_records_path(self.config.stage)

    def records(self, report: DataReport) -> Iterator[Any]:
        path = self.path()
        records = read_records(path, report)
        if self.config.pairs == "best-vs-worse":
            from mllm.data.candidates import best_vs_worse

            yield from best_vs_worse(records, report, path)
        elif self.config.pairs == "wrong-vs-gold":
            yield from wrong_vs_gold(records, report, path)
        else:
            yield from records
