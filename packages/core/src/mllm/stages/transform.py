"""The ``transform`` stage: subsample, shorten or rewrite a dataset's records.

```yaml
- id: short
  kind: transform
  data: {name: scienceqa, root: /data/scienceqa, split: train}   # any dataset, or the records of an earlier
                                                                 # stage: {name: stage-records, stage: <id>}
  ops:                                                           # applied in order
    - {op: subsample, n: 1000, seed: 0}            # seeded; or fraction: 0.1 (seed defaults to the pipeline's)
    - {op: shorten}                                # keep only the final answer: "... The answer is B." -> "The answer is B."
    - op: realign                                  # rewrite each answer with a judge/generator model (ReAlign)
      judge: {name: openai, model: gpt-4-0613}
      instruction: "Rewrite the answer as a short explanation followed by the final answer."
    - op: llava-instruct                           # LLaVA's data generation from captions (and boxes)
      generator: {name: hf-local, path: /models/vicuna}
      types: [conversation, detail, complex]
  on_bad_row: skip                                 # rows an op cannot handle: error (default) | skip
  max_bad_fraction: 0.05
- id: sft_short
  kind: train
  method: {name: sft}
  data: {name: stage-records, stage: short}        # the transform's output
```

Output in the stage folder: ``records.jsonl`` (the records, :mod:`mllm.data.recordio`
format), ``data_report.json`` (``{"data": <the dataset's report>, "ops": [<one report
per op>]}``: rows read, kept and skipped with file, row and reason), ``metrics.json``
(records in and out, per op), and for the model-calling ops a per-row cache
(``realign_cache.jsonl``, ``llava_instruct_cache.jsonl``), so an interrupted stage
resumes without asking the model again.

Ops (a registry of their own: :data:`OPS`):

- ``subsample``: ``n`` rows or a ``fraction``, seeded, file order kept.
- ``shorten``: every assistant turn becomes only its final answer: the last match of
  ``pattern`` (default ``The answer is (.+?)\\.``), written with ``template`` (default
  ``The answer is {answer}.``): the seed studies' "short" ScienceQA variant. A turn
  without a final answer is a bad row.
- ``realign``: ReAlign's reformatting: each assistant answer is rewritten by the judge
  following ``instruction``; the prompt shows the question and the original answer. With
  ``keep_final_answer`` (default) the original's final-answer sentence is kept at the end
  of the rewrite (appended when the rewrite dropped it); ``min_length_ratio`` keeps the
  original when the rewrite is much shorter (ReAlign's length filter; 0 disables it).
- ``llava-instruct``: the LLaVA paper's data generation. For each image record, the
  generator model gets LLaVA-style instructions (a system message and few-shot examples
  of captions and boxes with their answers) and writes a multi-turn ``conversation``, a
  ``detail`` description (asked with one of LLaVA's detailed-description questions) and
  a ``complex`` reasoning question with its answer, each a new Conversation
  (``<id>-conversation``, ``<id>-detail``, ``<id>-complex``) on the same image. Captions
  come from ``metadata.captions`` (a string or a list; e.g. extra keys of a
  ``llava-json`` row), else from the last assistant turn (LLaVA's caption data, e.g. the
  LCS-558K pre-training file); boxes from ``metadata.boxes``: ``[{"category": "person",
  "bbox": [x1, y1, x2, y2]}, ...]`` or ``[label, x1, y1, x2, y2]`` rows, coordinates
  normalized to 0-1 (as LLaVA's prompts give them). Replies are parsed in LLaVA's
  format (``Question:`` / ``===`` / ``Answer:``); a reply that does not parse is a bad row.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mllm.data.badrows import DataReport, OnBadRow
from mllm.data.recordio import RECORDS_FILE, record_kind_of, write_records
from mllm.pipeline.config import ComponentRef, ConfigError, ResolvedComponent, StageConfig, resolve_component
from mllm.pipeline.runfolder import atomic_write_text
from mllm.plugins.specs import ComponentKind
from mllm.records import IMAGE_TOKEN, Conversation, Record, Turn

DATA_REPORT = "data_report.json"


# -- op configs ---------------------------------------------------------------------------------------


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubsampleOp(_Op):
    """Keep a seeded random subset (file order kept)."""

    op: Literal["subsample"]
    n: int | None = Field(None, ge=1, description="rows to keep")
    fraction: float | None = Field(None, gt=0.0, le=1.0, description="share of rows to keep")
    seed: int | None = Field(None, description="default: the pipeline seed")

    @model_validator(mode="after")
    def _one_size(self) -> SubsampleOp:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("subsample takes n (rows) or fraction (share), exactly one")
        return self


class ShortenOp(_Op):
    """Keep only the final answer of each assistant turn."""

    op: Literal["shorten"]
    pattern: str = Field(r"The answer is (.+?)\.", description="regex of the final answer; group 1 is the answer; "
                                                                "its last match is used")
    template: str = Field("The answer is {answer}.", description="the short answer; {answer} is group 1")

    @model_validator(mode="after")
    def _valid_pattern(self) -> ShortenOp:
        try:
            compiled = re.compile(self.pattern)
        except re.error as error:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {error}") from None
        if compiled.groups < 1:
            raise ValueError(f"pattern {self.pattern!r} needs a group around the answer, e.g. 'The answer is (.+?)\\.'")
        return self


REALIGN_INSTRUCTION = (
    "Rewrite the answer so that it is well organized and easy to follow: first the reasoning, step by step, "
    "then the final answer. Keep every fact of the original answer and add no new claims."
)
REALIGN_PROMPT = (
    "You are given a question and its original answer. {instruction}\n\n"
    "[Question]\n{question}\n\n[Original answer]\n{answer}\n\n"
    "Write only the rewritten answer."
)


class RealignOp(_Op):
    """Rewrite each assistant answer with a judge/generator model (ReAlign)."""

    op: Literal["realign"]
    judge: ComponentRef = Field(description="the model that rewrites: {name: openai | hf-local, <its keys>}")
    instruction: str = Field(REALIGN_INSTRUCTION, description="how to rewrite (the {instruction} of the prompt)")
    prompt: str = Field(REALIGN_PROMPT, description="prompt template with {instruction}, {question}, {answer}")
    system: str | None = Field(None, description="optional system message")
    keep_final_answer: bool = Field(True, description="keep the original's final-answer sentence (final_answer "
                                                      "pattern) at the end of the rewrite")
    final_answer: str = Field(r"The answer is .+?\.", description="regex of the final-answer sentence")
    min_length_ratio: float = Field(0.0, ge=0.0, le=1.0, description="keep the original when the rewrite is shorter "
                                                                      "than this share of it (0: never)")


GenerationType = Literal["conversation", "detail", "complex"]


class LlavaInstructOp(_Op):
    """LLaVA's instruction-data generation from captions and boxes."""

    op: Literal["llava-instruct"]
    generator: ComponentRef = Field(description="the model that writes: {name: openai | hf-local, <its keys>}")
    types: list[GenerationType] = Field(["conversation", "detail", "complex"],
                                        description="samples to write per image: conversation, detail, complex")
    seed: int | None = Field(None, description="seed of the detailed-description question picked per image "
                                               "(default: the pipeline seed)")

    @model_validator(mode="after")
    def _some_types(self) -> LlavaInstructOp:
        if not self.types or len(set(self.types)) != len(self.types):
            raise ValueError("types lists each of conversation, detail, complex at most once, and at least one")
        return self


Op = Annotated[Union[SubsampleOp, ShortenOp, RealignOp, LlavaInstructOp], Field(discriminator="op")]


class TransformStageConfig(StageConfig):
    """A ``transform`` stage: a dataset and the ops applied to its records, in order."""

    component_fields: ClassVar[dict[str, ComponentKind]] = {"data": "dataset"}

    data: ComponentRef = Field(description="the records to transform: any dataset, or "
                                           "{name: stage-records, stage: <earlier stage>}")
    ops: list[Op] = Field(description="ops applied in order: subsample, shorten, realign, llava-instruct")
    on_bad_row: OnBadRow = Field("error", description="a row an op cannot handle: error stops, skip drops it")
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="with skip, the largest tolerated share of "
                                                                      "rows an op drops")


# -- op context and implementations ------------------------------------------------------------------


class OpContext:
    """What an op gets: the stage folder, seed, registry, the op's bad-row report."""

    def __init__(self, stage_dir: Path, seed: int, registry: Any, report: DataReport, where: str, logger: Any) -> None:
        self.stage_dir = Path(stage_dir)
        self.seed = seed
        self.registry = registry
        self.report = report
        self.where = where
        self.logger = logger

    def build_judge(self, ref: ComponentRef, key: str) -> Any:
        """A judge from ``{name: ..., <its keys>}``, validated against the judge's config."""
        if self.registry is None:
            from mllm.plugins.registry import get_registry

            self.registry = get_registry()
        resolved: ResolvedComponent = resolve_component(self.registry, "judge", ref, f"{self.where}.{key}")
        return resolved.build()


class RowCache:
    """Per-row JSON Lines cache in the stage folder: ``{"key", "value"}`` a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Any] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.entries[row["key"]] = row["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line of an interrupted run
        self.hits = 0

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()

    def get(self, key: str) -> Any:
        if key in self.entries:
            self.hits += 1
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        if isinstance(value, str) and not value.strip():
            return  # an empty reply is never cached: the next run asks again
        self.entries[key] = value
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")


def _conversations_only(record: Record, op: str) -> Conversation:
    if not isinstance(record, Conversation):
        raise TypeError(f"op {op} rewrites conversations; record {record.id!r} is a {record_kind_of(record)}")
    return record


def _replace_turns(record: Conversation, turns: list[Turn], **metadata: Any) -> Conversation:
    return Conversation(id=record.id, turns=tuple(turns), images=record.images,
                        metadata={**record.metadata, **metadata}, check_files=False)


def op_subsample(op: SubsampleOp, records: list[Record], ctx: OpContext) -> list[Record]:
    size = op.n if op.n is not None else max(1, round(op.fraction * len(records)))
    if size >= len(records):
        return list(records)
    seed = op.seed if op.seed is not None else ctx.seed
    keep = sorted(random.Random(seed).sample(range(len(records)), size))
    return [records[i] for i in keep]


def rewrite_answers(records: list[Record], ctx: OpContext, op_name: str,
                    rewrite: Callable[[Conversation, int, Turn], str], **metadata: Any) -> list[Record]:
    """Every conversation with each assistant answer replaced by ``rewrite(conversation,
    turn index, turn)``; a record the rewrite fails on follows the bad-row policy."""
    out: list[Record] = []
    for record in records:
        new = None
        with ctx.report.row(file=ctx.where, row=record.id):
            conversation = _conversations_only(record, op_name)
            turns = [Turn("assistant", rewrite(conversation, index, turn)) if turn.role == "assistant" else turn
                     for index, turn in enumerate(conversation.turns)]
            new = _replace_turns(conversation, turns, **metadata)
        if new is not None:
            out.append(new)
    return out


def op_shorten(op: ShortenOp, records: list[Record], ctx: OpContext) -> list[Record]:
    pattern = re.compile(op.pattern)

    def final_answer(record: Conversation, index: int, turn: Turn) -> str:
        matches = list(pattern.finditer(turn.content))
        if not matches:
            raise ValueError(f"record {record.id!r}: assistant turn {index} has no final answer matching "
                             f"{op.pattern!r}: {turn.content[-80:]!r}")
        return op.template.format(answer=matches[-1].group(1).strip())

    return rewrite_answers(records, ctx, "shorten", final_answer)


def _question_before(turns: tuple[Turn, ...], index: int) -> str:
    return turns[index - 1].content.replace(IMAGE_TOKEN, "").strip() if index else ""


def op_realign(op: RealignOp, records: list[Record], ctx: OpContext) -> list[Record]:
    judge = None
    cache = RowCache(ctx.stage_dir / "realign_cache.jsonl")
    final = re.compile(op.final_answer)
    judge_id = op.judge.model_dump()

    def realign(record: Conversation, index: int, turn: Turn) -> str:
        nonlocal judge
        question = _question_before(record.turns, index)
        prompt = op.prompt.format(instruction=op.instruction, question=question, answer=turn.content)
        key = RowCache.key("realign", judge_id, op.system, prompt)
        reply = cache.get(key)
        if reply is None:
            if judge is None:
                judge = ctx.build_judge(op.judge, "judge")
            reply = judge.complete(prompt, system=op.system)
            cache.put(key, reply)
        return _realigned(turn.content, reply, op, final)

    out = rewrite_answers(records, ctx, "realign", realign, realigned=True)
    ctx.logger.info("realign: %d rows, %d answers from the cache", len(records), cache.hits)
    return out


def _realigned(original: str, reply: str, op: RealignOp, final: re.Pattern) -> str:
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


# LLaVA-style generation prompts (written for mllm after the LLaVA paper's data pipeline:
# a system message per sample type and few-shot examples of context -> answer).
_SYSTEM_COMMON = (
    "You are an AI visual assistant looking at a single image. What you see is given as {what}. "
    "Answer as if you were seeing the image yourself, and never mention the descriptions or coordinates."
)
LLAVA_SYSTEM = {
    "conversation": _SYSTEM_COMMON.format(what="a few sentences describing it") + (
        "\n\nDesign a conversation between you and a person asking about this image. Ask diverse questions about the "
        "visual content (object types, counts, actions, locations, relative positions) and give the answers. Only ask "
        "questions with definite answers: what can be seen, or what can confidently be said not to be there. Also "
        "include a few more complex questions (background knowledge, events in the image) with detailed answers."
        "\n\nWrite each turn as 'Question:' or 'Answer:' on its own line followed by the text, and separate the turns "
        "with a line holding '==='."),
    "detail": _SYSTEM_COMMON.format(what="sentences describing it and the bounding boxes of its objects "
                                         "(object: [x1, y1, x2, y2], normalized to 0-1)") + (
        "\n\nDescribe the image in detail: the objects, their attributes, counts and positions, and what is going "
        "on. Write one or two paragraphs of plain description."),
    "complex": _SYSTEM_COMMON.format(what="sentences describing it and the bounding boxes of its objects "
                                          "(object: [x1, y1, x2, y2], normalized to 0-1)") + (
        "\n\nAsk one question about the image that needs reasoning beyond describing it (why something happens, "
        "what may happen next, what it suggests) and answer it in detail, step by step. Write 'Question:' on one "
        "line followed by the question, a line holding '===', then 'Answer:' followed by the answer."),
}
LLAVA_FEW_SHOT = {
    "conversation": [(
        "A man rides a bicycle down a city street.\nA cyclist passes parked cars on a sunny day.\n"
        "A person in a red jacket riding a bike.",
        "Question:\nWhat is the man in the image doing?\n===\nAnswer:\nThe man is riding a bicycle down a city "
        "street.\n===\nQuestion:\nWhat colour is his jacket?\n===\nAnswer:\nHe is wearing a red jacket.\n===\n"
        "Question:\nWhat should a cyclist watch out for on a street like this?\n===\nAnswer:\nParked cars line the "
        "street, so the cyclist should watch for doors opening suddenly and keep a safe distance from them.",
    )],
    "detail": [(
        "A kitchen counter with a bowl of apples.\nThree red apples in a white bowl.\n\n"
        "bowl: [0.310, 0.420, 0.690, 0.800]\napple: [0.360, 0.440, 0.480, 0.580]\n"
        "apple: [0.470, 0.430, 0.590, 0.570]\napple: [0.420, 0.520, 0.550, 0.660]",
        "The image shows a kitchen counter with a white bowl in the middle. The bowl holds three red apples, two "
        "side by side at the back and one in front of them. The counter around the bowl is otherwise empty.",
    )],
    "complex": [(
        "Two children build a sandcastle on a beach.\nWaves roll in close to the sandcastle.\n\n"
        "person: [0.120, 0.300, 0.350, 0.900]\nperson: [0.600, 0.280, 0.820, 0.880]",
        "Question:\nWhat might happen to the sandcastle soon, and why?\n===\nAnswer:\nThe waves are already rolling "
        "in close to the sandcastle, so as the tide rises they will likely reach it and wash part of it away. The "
        "children may need to build a wall of sand or move further up the beach to protect it.",
    )],
}
#: LLaVA's style of detailed-description questions; one is picked per image (seeded).
DETAIL_QUESTIONS = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Share a comprehensive rundown of the presented image.",
    "Offer a thorough analysis of the image.",
    "Explain the various aspects of the image before you.",
    "Clarify the contents of the displayed image with great detail.",
    "Characterize the image using a well-detailed description.",
    "Break down the elements of the image in a detailed manner.",
    "Walk through the important details of the image.",
    "Portray the image with a rich, descriptive narrative.",
    "Narrate the contents of the image with precision.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Illustrate the image through a descriptive explanation.",
    "Examine the image closely and share its details.",
    "Write an exhaustive depiction of the given image.",
)


def image_context(record: Conversation) -> str:
    """Captions (and boxes) of a record, as the generator reads them."""
    captions = record.metadata.get("captions")
    if captions is None:
        captions = [t.content for t in record.turns if t.role == "assistant"][-1:]
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions) or not any(c.strip() for c in captions):
        raise ValueError(f"record {record.id!r}: no captions (metadata.captions, or an assistant turn) to generate from")
    lines = [c.strip() for c in captions if c.strip()]
    boxes = record.metadata.get("boxes") or []
    box_lines = []
    for box in boxes:
        if isinstance(box, dict):
            label, coords = box.get("category", box.get("label")), box.get("bbox")
        elif isinstance(box, (list, tuple)) and len(box) == 5:
            label, coords = box[0], box[1:]
        else:
            raise ValueError(f"record {record.id!r}: box {box!r} is neither {{category, bbox}} nor [label, x1, y1, x2, y2]")
        if not isinstance(label, str) or not isinstance(coords, (list, tuple)) or len(coords) != 4:
            raise ValueError(f"record {record.id!r}: box {box!r} needs a label and 4 coordinates")
        box_lines.append(f"{label}: [{', '.join(f'{float(c):.3f}' for c in coords)}]")
    return "\n".join(lines) + ("\n\n" + "\n".join(box_lines) if box_lines else "")


def llava_prompt(kind: str, context: str) -> str:
    """The few-shot prompt of one sample type for one image."""
    parts = []
    for example_context, example_answer in LLAVA_FEW_SHOT[kind]:
        parts.append(f"Image descriptions:\n{example_context}\n\nResponse:\n{example_answer}")
    parts.append(f"Image descriptions:\n{context}\n\nResponse:\n")
    return "\n\n".join(parts)


_QA = re.compile(r"^\s*(Question|Answer)\s*:\s*", re.IGNORECASE)


def parse_qa(reply: str) -> list[Turn]:
    """LLaVA's ``Question:`` / ``===`` / ``Answer:`` format as alternating user/assistant turns."""
    turns: list[Turn] = []
    for block in re.split(r"\n\s*===+\s*\n?", reply.strip()):
        match = _QA.match(block)
        if not match:
            continue
        role = "user" if match.group(1).lower() == "question" else "assistant"
        text = block[match.end():].strip()
        if not text:
            continue
        if turns and turns[-1].role == role:
            continue  # two questions in a row: keep the first
        if not turns and role == "assistant":
            continue
        turns.append(Turn(role, text))
    if turns and turns[-1].role == "user":
        turns.pop()
    if not turns:
        raise ValueError(f"the generator's reply has no 'Question:' / '===' / 'Answer:' pairs: {reply[:120]!r}")
    return turns


def op_llava_instruct(op: LlavaInstructOp, records: list[Record], ctx: OpContext) -> list[Record]:
    generator = None
    cache = RowCache(ctx.stage_dir / "llava_instruct_cache.jsonl")
    generator_id = op.generator.model_dump()
    seed = op.seed if op.seed is not None else ctx.seed
    out: list[Record] = []
    for record in records:
        made: list[Conversation] = []
        with ctx.report.row(file=ctx.where, row=record.id):
            conversation = _conversations_only(record, "llava-instruct")
            if len(conversation.images) != 1:
                raise ValueError(f"record {record.id!r} has {len(conversation.images)} images; "
                                 "llava-instruct writes samples about one image")
            context = image_context(conversation)
            for kind in op.types:
                prompt = llava_prompt(kind, context)
                key = RowCache.key("llava-instruct", generator_id, kind, LLAVA_SYSTEM[kind], prompt)
                reply = cache.get(key)
                if reply is None:
                    if generator is None:
                        generator = ctx.build_judge(op.generator, "generator")
                    reply = generator.complete(prompt, system=LLAVA_SYSTEM[kind])
                    cache.put(key, reply)
                if kind == "detail":
                    if not reply.strip():
                        raise ValueError(f"record {record.id!r}: the generator's detail description is empty")
                    question = random.Random(f"{seed}-{record.id}").choice(DETAIL_QUESTIONS)
                    turns = [Turn("user", question), Turn("assistant", reply.strip())]
                else:
                    turns = parse_qa(reply)
                    if kind == "complex":
                        turns = turns[:2]
                turns[0] = Turn("user", f"{IMAGE_TOKEN}\n{turns[0].content}")
                made.append(Conversation(id=f"{record.id}-{kind}", turns=tuple(turns), images=conversation.images,
                                         metadata={"source_id": record.id, "type": kind}, check_files=False))
        out.extend(made if len(made) == len(op.types) else [])
    return out


OpFunction = Callable[[Any, list[Record], OpContext], list[Record]]
#: op name -> (config class, implementation)
OPS: dict[str, tuple[type[_Op], OpFunction]] = {
    "subsample": (SubsampleOp, op_subsample),
    "shorten": (ShortenOp, op_shorten),
    "realign": (RealignOp, op_realign),
    "llava-instruct": (LlavaInstructOp, op_llava_instruct),
}


# -- the stage ----------------------------------------------------------------------------------------


class TransformStage:
    """Runs one transform stage (see the module docstring)."""

    def __init__(self, config: TransformStageConfig, components: dict[str, Any]) -> None:
        self.config = config
        self.components = components

    def run(self, context: Any) -> None:
        config = self.config
        where = f"stage {config.id!r}"
        data: ResolvedComponent = self.components["data"]
        dataset = data.build()
        data_report = DataReport(source=f"{where}: dataset {data.spec.name!r}",
                                 on_bad_row=getattr(data.config, "on_bad_row", "error"),
                                 max_bad_fraction=getattr(data.config, "max_bad_fraction", 0.0))
        records: list[Record] = list(dataset.records(data_report))
        data_report.finish()
        if not records:
            raise ConfigError(f"{where}: dataset {data.spec.name!r} gave no records to transform")
        metrics: dict[str, Any] = {"records_in": len(records)}
        op_reports = []
        registry = getattr(context, "registry", None)
        for index, op in enumerate(config.ops):
            op_where = f"{where} op {index} ({op.op})"
            report = DataReport(source=op_where, on_bad_row=config.on_bad_row, max_bad_fraction=config.max_bad_fraction)
            ctx = OpContext(context.stage_dir, context.seed, registry, report, op_where, context.logger)
            before = len(records)
            _, function = OPS[op.op]
            records = function(op, records, ctx)
            report.finish()
            op_reports.append(report.to_dict())
            metrics[f"op{index}_{op.op}"] = {"in": before, "out": len(records), "skipped": len(report.skipped)}
            context.logger.info("%s: %d -> %d records (%d skipped)", op_where, before, len(records), len(report.skipped))
        count = write_records(Path(context.stage_dir) / RECORDS_FILE, records)
        atomic_write_text(Path(context.stage_dir) / DATA_REPORT,
                          json.dumps({"data": data_report.to_dict(), "ops": op_reports}, indent=2))
        metrics["records_out"] = count
        context.metrics = metrics
