"""Protocols each component kind satisfies (no base classes to inherit).

A component is constructed as ``Impl(config)`` where ``config`` is an instance of the
pydantic model its spec names (or ``None``). Configs subclass :class:`ComponentConfig`
(unknown keys rejected); dataset configs subclass :class:`DatasetConfig` for the
bad-row policy.

The Protocols state everything the core calls on a component: the answer engine, the
stage kinds, the trainer and the runner call nothing that is not listed here. Members
the core uses only when a component has them are the *optional capabilities* at the end
of this module: small ``runtime_checkable`` Protocols the core tests with ``isinstance``.
The conformance kit (:mod:`mllm.testing`) checks the required members and exercises
them, so a component that passes the kit runs in every stage kind.

The model adapter is one Protocol made of three parts, so each reads on its own:
:class:`ModelHandle` (the model, its parts, saving), :class:`PromptEncoder` (tokens of
prompts and conversations) and :class:`ImageEncoder` (pixels, features, embeddings).
:class:`ModelAdapterClass` is what the adapter *class* offers (``from_config``, ``load``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mllm.data.badrows import DataReport, OnBadRow
from mllm.records import EvalItem, Record, RecordKind

if TYPE_CHECKING:  # torch and the runner stay out of import time
    import torch

    from mllm.models.templates import ChatTemplate
    from mllm.pipeline.runner import StageContext, TrainContext

#: Turns, a record holding them (``.turns`` / ``.prompt``) or, for a prompt, one user message.
TurnsLike = Any


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetConfig(ComponentConfig):
    """Base of dataset configs: the bad-row policy of ARCHITECTURE.md."""

    on_bad_row: OnBadRow = Field("error", description="error: stop at the first bad row; skip: list it in data_report.json")
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="with skip, the largest tolerated share of bad rows")


# -- the model adapter ----------------------------------------------------------------------


@runtime_checkable
class ModelHandle(Protocol):
    """The model an adapter holds, where its parts are, and how it is saved."""

    model: Any  # a transformers PreTrainedModel (possibly peft-wrapped); methods may replace it
    processor: Any

    def module_names(self) -> dict[str, str]:
        """Dotted module paths in ``model`` of ``vision_tower``, ``projector`` and ``language_model``
        (``lm_head`` too where it is a sibling of the language model)."""

    def save(self, path: Path) -> None:
        """Write a ``save_pretrained`` folder (safetensors) that ``load`` reads."""


@runtime_checkable
class PromptEncoder(Protocol):
    """Token ids of prompts and conversations in the model's chat template."""

    tokenizer: Any  # a transformers tokenizer: encode / decode of answers and stop strings
    template: ChatTemplate  # its ``stop`` string ends a generated answer; ``name`` is saved
    max_length: int  # longest sequence ``encode_conversation`` returns
    pad_token_id: int
    eos_token_id: int
    bos_token_id: int | None

    def encode_prompt(self, turns: TurnsLike) -> list[int]:
        """Ids of prompt turns up to the assistant's cue: a true prefix of
        ``encode_conversation`` of the same turns plus an answer. Takes turns, a record
        with ``.turns`` / ``.prompt`` turns, or a string (one user turn)."""

    def encode_conversation(self, turns: TurnsLike) -> dict[str, list[int]]:
        """``{"input_ids", "labels"}``; labels are ``-100`` except on assistant answers
        (and the separator closing each). A conversation longer than ``max_length`` is cut
        to it, and the result then also holds ``cut_from``: its length before the cut."""


@runtime_checkable
class ImageEncoder(Protocol):
    """Images to pixel values, features and the language model's input embeddings."""

    image_token_id: int  # the id ``<image>`` expands to, ``num_image_tokens`` times per image
    num_image_tokens: int

    def load_images(self, paths: Sequence[Any]) -> torch.Tensor:
        """``pixel_values`` ``[n, 3, H, W]`` of image files (or PIL images); a file that cannot
        be decoded raises :class:`mllm.data.badrows.ImageReadError` naming it."""

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image features as the language model consumes them (after the projector),
        ``[n, num_image_tokens, hidden]``."""

    def embed_inputs(self, input_ids: torch.Tensor,
                     image_features: torch.Tensor | Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``inputs_embeds`` with the image features put at the image tokens (rows of
        ``image_features`` follow the images in order over the batch)."""


@runtime_checkable
class ModelAdapter(ModelHandle, PromptEncoder, ImageEncoder, Protocol):
    """Loads or builds a model and gives what methods, the trainer and the engine need.

    The class offers :class:`ModelAdapterClass` (``from_config``, ``load``); an instance
    is all three parts: :class:`ModelHandle`, :class:`PromptEncoder`, :class:`ImageEncoder`.
    """


@runtime_checkable
class ModelAdapterClass(Protocol):
    """What the runner calls on a model adapter's class."""

    def from_config(self, config: Any, seed: int = 0) -> ModelAdapter:
        """Build or load what the pipeline's ``model:`` says (seeded when built)."""

    def load(self, path: Path, *, config: Any = None) -> ModelAdapter:
        """A folder written by ``save``; options set in ``config`` override what it recorded."""


# -- data, methods, benchmarks, judges, stage kinds ----------------------------------------


@runtime_checkable
class Dataset(Protocol):
    """Turns a source into records, following the bad-row policy through ``report``."""

    record_kind: ClassVar[RecordKind]

    def records(self, report: DataReport) -> Iterable[Record]:
        """Yield records; build each inside ``report.row(file=..., row=...)``."""


@runtime_checkable
class Method(Protocol):
    """An alignment method hosted by the core trainer."""

    record_kind: ClassVar[RecordKind]

    def setup(self, adapter: ModelAdapter) -> Any:
        """Freeze modules or wrap with LoRA; return the module to train."""

    def prepare(self, context: TrainContext) -> None:
        """One-off work before training (e.g. reference log-probs), cached in
        ``context.stage_dir``; may replace ``context.records``."""

    def collate(self, records: Sequence[Record]) -> dict[str, Any]:
        """Turn records into a batch of tensors."""

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of a batch and metrics to log."""


AnswerMode = Literal["generate", "choice"]


@runtime_checkable
class Benchmark(Protocol):
    """Builds eval items and turns answers into metrics; ``score`` needs no model."""

    metric_keys: ClassVar[tuple[str, ...]]

    def items(self) -> Sequence[EvalItem]:
        """The questions to answer."""

    def score(self, items: Sequence[EvalItem], answers: dict[str, str]) -> dict[str, float]:
        """Metrics from the answers (keyed by item id)."""


@runtime_checkable
class Judge(Protocol):
    """Text in, text out; implementations cache per request."""

    def complete(self, prompt: str, *, system: str | None = None) -> str:
        """The judge's reply to one prompt."""


@runtime_checkable
class StageKind(Protocol):
    """A kind of pipeline stage, constructed as ``Kind(stage_config, components)``.

    ``stage_config`` is the validated :class:`mllm.pipeline.config.StageConfig` subclass the
    spec's ``config`` names; ``components`` maps its component fields to
    :class:`mllm.pipeline.config.ResolvedComponent` (or lists of them). Stage ids the stage reads
    besides ``from`` come from the config's ``inputs()`` method.
    """

    def run(self, context: StageContext) -> None:
        """Do the work, writing outputs into ``context.stage_dir``; set ``context.metrics``
        to write metrics.json."""


# -- optional capabilities ------------------------------------------------------------------
# What the core uses only where a component has it. Test with isinstance (on the instance,
# or on the class for class methods); the kit checks the types of those a component has.


@runtime_checkable
class HasDataFiles(Protocol):
    """A dataset or benchmark class naming the files it reads (size and mtime go into the
    stage fingerprint; without it only the config is fingerprinted)."""

    def data_files(self, config: Any) -> Sequence[Path]:
        """Data files (or folders) read with ``config`` (a classmethod)."""


@runtime_checkable
class HasExampleConfig(Protocol):
    """A component class declaring config values the conformance kit builds it with."""

    def example_config(self, tmp_path: Path) -> dict[str, Any]:
        """Config values; may write small files into ``tmp_path`` (a classmethod)."""


@runtime_checkable
class HasExampleRecords(Protocol):
    """A method class giving the records the kit's ``train-step`` check trains on."""

    def example_records(self, tmp_path: Path) -> list[Record]:
        """Records of the method's ``record_kind`` (a classmethod)."""


@runtime_checkable
class GroupsByLength(Protocol):
    """A method that gives sequence lengths, for ``train: {group_by_length: true}`` batches."""

    def lengths(self, records: Sequence[Record]) -> list[int]:
        """An approximate length per record (no tokenization needed)."""


@runtime_checkable
class ChecksRows(Protocol):
    """A method that can tell, before training, that a record cannot be trained on as it is
    (e.g. longer than the model's ``max_length``, so a cut would drop its answer). The train
    stage applies the dataset's ``on_bad_row`` policy to each such record and lists it in
    ``data_report.json``."""

    def row_problem(self, record: Any) -> str | None:
        """Why ``record`` cannot be trained on (one line, with the fix), or ``None``."""


@runtime_checkable
class HasProjectorLr(Protocol):
    """A method with its own projector learning rate (LLaVA's ``mm_projector_lr``; ``None``: ``train.lr``)."""

    projector_lr: float | None


@runtime_checkable
class HasTrainCallbacks(Protocol):
    """A method that adds ``transformers.TrainerCallback`` objects to its training run."""

    def callbacks(self) -> list[Any]:
        """The callbacks (new objects per call)."""


@runtime_checkable
class ChoosesAnswerMode(Protocol):
    """A benchmark answered by choice scoring (``choice``) rather than generation (the default)."""

    answer_mode: AnswerMode


@runtime_checkable
class HasAnswerBudget(Protocol):
    """A benchmark with its own generation budget (default 16; the eval stage's ``max_new_tokens`` wins)."""

    max_new_tokens: int


@runtime_checkable
class ScoresFromFiles(Protocol):
    """A benchmark class that scores released answer files (``mllm eval score BENCH``).

    ``score_files`` is a classmethod taking each file as a keyword (``answers=...``,
    ``questions=...``; ``config=`` a mapping of config keys, ``judge=`` a judge config,
    both optional). The class declares its file options in ``score_inputs``
    (``{keyword: what the file is}``): they are what ``mllm eval score BENCH --help``
    lists; a keyword without a default is required, and a missing file is a one-line
    :class:`mllm.errors.MllmError` naming the option. An eval stage's own
    ``answers.jsonl`` (``{id, prompt, images, answer, gold}``) should be accepted as
    ``answers``. The kit checks that every declared option is a keyword of ``score_files``.
    """

    def score_files(self, **files: Any) -> dict[str, float]:
        """Metrics from files (``answers=...``, ``questions=...``; a classmethod)."""


@runtime_checkable
class RecordsProvenance(Protocol):
    """A benchmark that says how it scored: ``{"protocol": "llava", "judge": ..., "judge_model": ...}``.

    The eval stage writes these strings beside the benchmark's metrics in ``metrics.json``
    (and so in the report); they are never metrics. A benchmark following a published
    protocol lists those it can follow in ``protocols`` (a class attribute, the first the
    default) and takes ``protocol`` in its config.
    """

    def provenance(self) -> dict[str, str]:
        """The protocol followed and, for judged benchmarks, the judge and its model."""


@runtime_checkable
class HasSourcePath(Protocol):
    """A model adapter class whose config may name a folder to start from (not built, not copied)."""

    def source_path(self, config: Any) -> Path | None:
        """The folder ``config`` names, else ``None`` (a classmethod)."""


@runtime_checkable
class RunsDistributed(Protocol):
    """A stage kind that every torchrun process runs under ``mllm run --nproc-per-node N``."""

    distributed: ClassVar[bool]


@runtime_checkable
class HasPositionCaches(Protocol):
    """A model adapter saying whether the answer engine may reuse prompt-start keys/values.

    ``uses_position_caches = False``: the model's position ids depend on the whole prompt
    (Qwen2-VL's M-RoPE), so the engine's shared-prefix and prompt-through-the-image caches
    and its tree-masked choice pass (1-D position ids) would be wrong; the engine then runs
    plain full-prompt forwards and ``generate`` for it. Without the capability: caches on."""

    uses_position_caches: ClassVar[bool]


@runtime_checkable
class ImageTokenCounts(Protocol):
    """A model adapter whose images may take different numbers of tokens (per-image resolution,
    e.g. Qwen2-VL's ``dynamic_resolution``), so ``num_image_tokens`` is not one count for all.

    Such an adapter's ``encode_prompt`` / ``encode_conversation`` take the turns' images as
    ``images=`` (paths or PIL images, in order of their ``<image>``), and a batch's image
    inputs come from ``image_inputs`` (``pixel_values`` plus what the forward needs with them,
    e.g. ``image_grid_thw``), to pass to the model beside ``input_ids``. Code that assumes one
    count per image (shared image features, prefix caches, packed layouts) must check
    ``image_token_counts`` or stay off. Without the capability: ``num_image_tokens`` per image."""

    def image_token_counts(self, images: Sequence[Any]) -> list[int]:
        """Image tokens each image takes (its features; markers around them not counted)."""

    def image_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        """``{"pixel_values": ..., <other forward inputs>}`` of the images, batched in order."""


def capability(obj: Any, protocol: type, name: str, default: Any = None) -> Any:
    """``getattr(obj, name)`` when ``obj`` has the capability ``protocol``, else ``default``."""
    return getattr(obj, name) if isinstance(obj, protocol) else default



# == Pipeline-named components: score rules, transform ops, pairings, prompt styles, corpora ==
# (kinds score_rule, transform_op, pairing, prompt_style, text_corpus of mllm.plugins.kinds;
# each is built as ``Impl(config)`` with its spec's config, the keys beside ``rule:`` / ``op:`` /
# ``name:``). ``context`` is a :class:`mllm.data.context.ComponentContext`: the stage folder,
# seed, registry, logger, the bad-row report of ops, and ``build_judge``.


@runtime_checkable
class ScoreRule(Protocol):
    """Scores a ``generate`` stage's answers: ``score: {rule: <name>, <its keys>}``."""

    needs_gold: ClassVar[bool]  # every prompt must have a gold answer (checked before generating)

    def score(self, records: Sequence[Record], context: Any) -> tuple[list[Record], dict[str, float]]:
        """The generated Conversations (``metadata``: ``source_id``, ``gold``, ``sample``) with
        ``metadata.score`` (a number; ``None`` leaves the answer unscored) and
        ``metadata.correct`` (bool or ``None``) added, and the stage's metrics of the scoring."""


@runtime_checkable
class TransformOp(Protocol):
    """One op of a ``transform`` stage: ``ops: [{op: <name>, <its keys>}, ...]``."""

    def apply(self, records: list[Record], context: Any) -> list[Record]:
        """The records after the op; a row it cannot handle goes through
        ``context.report.row(...)`` (the stage's bad-row policy)."""


@runtime_checkable
class Pairing(Protocol):
    """Preference pairs from an earlier stage's records: ``data: {from: <stage>, pairs: <name>}``."""

    def pairs(self, records: Iterable[Record], report: DataReport, source: Path) -> Iterable[Record]:
        """Yield :class:`mllm.records.Preference` pairs; ``source`` is the file read (for messages)."""


@runtime_checkable
class PromptStyle(Protocol):
    """How an ``eval`` stage puts prompts to a model: ``prompt_style: {name: <name>, ...}``."""

    def apply(self, prompt: str) -> str:
        """The prompt the model sees (an :class:`EvalItem` prompt, ``<image>`` included)."""

    def clean(self, answer: str) -> str:
        """The answer as scored (e.g. without an echoed control line)."""


@runtime_checkable
class TextCorpus(Protocol):
    """Texts a tiny model's tokenizer is trained on: ``model: {..., tokenizer_corpus: <name>}``."""

    def texts(self) -> list[str]:
        """The texts, in a fixed order (the tokenizer must come out the same every time)."""
