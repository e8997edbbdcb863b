"""Several sequences per batch row: packing (``train: {packing: true}``) and the shared
prompt pass of preference pairs (``train: {shared_prompt: true}``).

A *unit* is what travels together in one row: one sequence (SFT, or one side of a pair),
two sequences (a pair without sharing), or one pair whose prompt is stored once, followed
by the chosen answer and then the rejected one. A row holds one unit (shared prompt alone)
or as many as fit (packing: first-fit decreasing into rows of 1 to 2 times the longest
unit, whichever leaves the least padding; a batch keeps its records and its step, only
its padding goes).

What keeps the rows equal to separate sequences:

- ``position_ids`` restart at 0 for every sequence; the rejected answer's positions
  continue from the end of the prompt, as if the chosen one were not there;
- attention (:func:`block_attention_mask`): a token sees the earlier tokens of its own
  sequence only (``doc_ids``), and inside a shared-prompt unit the rejected tokens see the
  prompt (branch 0) and themselves (branch 2), never the chosen ones (branch 1). With
  ``sdpa`` and ``eager`` this is a 4D mask; with ``flash_attention_2`` (no arbitrary masks)
  packing puts everything in one row and flash-attention's varlen path finds the sequence
  boundaries from the position ids, and the shared prompt is off. On ``sdpa`` a packed
  forward goes block by block instead (:mod:`mllm.training.segmented_attention`: each
  sequence against its own keys only, so long rows do not pay for the full square);
- the log-probs (:func:`packed_answer_logprobs`): each answer token is predicted by the
  position its own sequence has before it (``predictors``: for the first rejected token
  that is the prompt's last token, not the chosen answer's last), and summed into its own
  output row (``sequence_index``), so a preference method sees chosen rows then rejected
  rows exactly as with two padded sequences per pair;
- images stay with their sequence: ``image_index`` lists, in the order of the image
  tokens over the rows, which of the batch's ``pixel_values`` each one is (a shared prompt
  holds its image once; a pair without sharing twice).

Which model families can take this is their adapter's say: ``supports_packed_sequences``
(the LLaVA adapter and every ``mllm-models`` family set it; an adapter may make it a property
that is false in some settings, with ``packed_sequences_problem`` saying why).
:func:`layout_support` gives the reason when it is off.

Plugins use it through ``mllm``: :func:`pack_sequences` and :func:`pack_pairs` build the
rows, :func:`packed_model_inputs` gives a model its mask, position ids and images, and
:func:`mllm.answer_logprobs` scores packed rows per sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mllm.training.segmented_attention import IMPLEMENTATION as SEGMENTED
from mllm.training.segmented_attention import LAYOUT_KEYWORD, blocks_of, use_segmented_attention

IGNORE_INDEX = -100
#: attention implementations that take a 4D mask (or, segmented, the block layout itself)
MASK_IMPLEMENTATIONS = ("sdpa", "eager", SEGMENTED)
VARLEN_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")


@dataclass
class Unit:
    """Tokens of one unit; ``docs`` and ``predictors`` are local to the unit."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    docs: list[int] = field(default_factory=list)
    branches: list[int] = field(default_factory=list)
    predictors: list[int] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    images: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def add_sequence(self, encoded: dict[str, Sequence[int]], sequence: int, *, doc: int) -> None:
        """One whole sequence as its own document; its first token predicts nothing."""
        start = len(self.input_ids)
        ids, labels = list(encoded["input_ids"]), list(encoded["labels"])
        for i, (token, label) in enumerate(zip(ids, labels, strict=True)):
            learned = i > 0 and label != IGNORE_INDEX
            self.input_ids.append(token)
            self.labels.append(label if learned else IGNORE_INDEX)
            self.positions.append(i)
            self.docs.append(doc)
            self.branches.append(0)
            self.predictors.append(start + i - 1 if learned else -1)
            self.sequences.append(sequence if learned else -1)


def single_unit(encoded: dict[str, Sequence[int]], sequence: int, images: Sequence[int] = ()) -> Unit:
    """A unit of one sequence (``sequence``: its output row)."""
    unit = Unit(images=list(images))
    unit.add_sequence(encoded, sequence, doc=0)
    return unit


def pair_unit(first: dict[str, Sequence[int]], second: dict[str, Sequence[int]], sequences: tuple[int, int],
              images: Sequence[int] = ()) -> Unit:
    """Two separate sequences side by side (each its own document; the images twice)."""
    unit = Unit(images=list(images) * 2)
    unit.add_sequence(first, sequences[0], doc=0)
    unit.add_sequence(second, sequences[1], doc=1)
    return unit


def shared_prompt_unit(first: dict[str, Sequence[int]], second: dict[str, Sequence[int]],
                       sequences: tuple[int, int], images: Sequence[int] = (), *,
                       prompt_length: int | None = None) -> Unit:
    """Prompt once, then the rest of ``first`` (branch 1), then the rest of ``second`` (branch 2).

    The shared part is the longest common prefix of the two sequences that carries no
    labels (at most ``prompt_length``): every answer token stays in its own branch."""
    a_ids, b_ids = list(first["input_ids"]), list(second["input_ids"])
    a_labels, b_labels = list(first["labels"]), list(second["labels"])
    limit = min(len(a_ids), len(b_ids), prompt_length if prompt_length is not None else len(a_ids))
    shared = 0
    while shared < limit and a_ids[shared] == b_ids[shared] and a_labels[shared] == IGNORE_INDEX \
            and b_labels[shared] == IGNORE_INDEX:
        shared += 1
    shared = min(shared, len(a_ids) - 1, len(b_ids) - 1)  # each branch keeps at least one token
    if shared < 1:
        return pair_unit(first, second, sequences, images)
    unit = Unit(images=list(images))
    for i in range(shared):
        unit.input_ids.append(a_ids[i])
        unit.labels.append(IGNORE_INDEX)
        unit.positions.append(i)
        unit.docs.append(0)
        unit.branches.append(0)
        unit.predictors.append(-1)
        unit.sequences.append(-1)
    for branch, ids, labels, sequence in ((1, a_ids, a_labels, sequences[0]), (2, b_ids, b_labels, sequences[1])):
        previous = shared - 1  # the branch continues from the prompt's last token
        for i in range(shared, len(ids)):
            here = len(unit.input_ids)
            learned = labels[i] != IGNORE_INDEX
            unit.input_ids.append(ids[i])
            unit.labels.append(labels[i] if learned else IGNORE_INDEX)
            unit.positions.append(i)
            unit.docs.append(0)
            unit.branches.append(branch)
            unit.predictors.append(previous if learned else -1)
            unit.sequences.append(sequence if learned else -1)
            previous = here
    return unit


#: row lengths tried by :func:`arrange_rows`, as multiples of the longest unit: longer rows
#: take more units (less padding) but attention over a masked row costs its full square
CAPACITY_FACTORS = (1.0, 1.25, 1.5, 2.0)


def first_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing of unit ``lengths`` into rows of ``capacity`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[index] <= free:
                rows[r].append(index)
                room[r] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(capacity - lengths[index])
    for row in rows:
        row.sort()  # the batch's order within a row (images follow their tokens either way)
    return rows


def arrange_rows(lengths: Sequence[int], *, pack: bool, capacity: int | None = None) -> list[list[int]]:
    """Unit indices per row: one per row, or packed into rows of ``capacity`` tokens; by
    default the capacity (1 to 2 times the longest unit) that leaves the fewest padded
    positions (rows x longest row), the shorter on a tie."""
    if not pack:
        return [[i] for i in range(len(lengths))]
    longest = max(lengths, default=0)
    if capacity is not None:
        return first_fit(lengths, max(capacity, longest))
    best: tuple[int, int, list[list[int]]] | None = None
    for factor in CAPACITY_FACTORS:
        rows = first_fit(lengths, int(longest * factor))
        width = max(sum(lengths[i] for i in row) for row in rows)
        cost = (len(rows) * width, width)
        if best is None or cost < best[:2]:
            best = (*cost, rows)
    return best[2] if best is not None else []


def collate_units(units: Sequence[Unit], pad_token_id: int, *, pack: bool, one_row: bool = False,
                  num_sequences: int | None = None) -> dict[str, Any]:
    """The batch of ``units``: padded rows plus the keys the module docstring lists.

    ``one_row``: every unit in a single row (flash-attention's varlen path)."""
    rows = [list(range(len(units)))] if one_row else arrange_rows([len(u) for u in units], pack=pack)
    width = max(sum(len(units[i]) for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    docs = torch.full(shape, -1, dtype=torch.long)
    branches = torch.zeros(shape, dtype=torch.long)
    predictors = torch.full(shape, -1, dtype=torch.long)
    sequences = torch.full(shape, -1, dtype=torch.long)
    padding = torch.zeros(shape, dtype=torch.long)
    image_index: list[int] = []
    for r, row in enumerate(rows):
        offset, doc_offset = 0, 0
        for i in row:
            unit = units[i]
            n = len(unit)
            span = slice(offset, offset + n)
            input_ids[r, span] = torch.tensor(unit.input_ids)
            labels[r, span] = torch.tensor(unit.labels)
            positions[r, span] = torch.tensor(unit.positions)
            docs[r, span] = torch.tensor(unit.docs) + doc_offset
            branches[r, span] = torch.tensor(unit.branches)
            local = torch.tensor(unit.predictors)
            predictors[r, span] = torch.where(local >= 0, local + offset, local)
            sequences[r, span] = torch.tensor(unit.sequences)
            padding[r, span] = 1
            image_index.extend(unit.images)
            offset += n
            doc_offset += max(unit.docs) + 1
    count = num_sequences if num_sequences is not None else int(sequences.max()) + 1 if sequences.numel() else 0
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": padding, "position_ids": positions,
             "doc_ids": docs, "branch_ids": branches, "predictors": predictors, "sequence_index": sequences,
             "num_sequences": int(count)}
    if image_index:
        batch["image_index"] = torch.tensor(image_index, dtype=torch.long)
    return batch


def pack_sequences(encoded: Sequence[dict[str, Sequence[int]]], image_counts: Sequence[int], pad_token_id: int, *,
                   one_row: bool = False) -> dict[str, Any]:
    """Packed rows of sequences (SFT): output sequence ``i`` is ``encoded[i]``, whose images
    are the ``image_counts[i]`` next ones of the batch's ``pixel_values``."""
    units, first = [], 0
    for i, (item, count) in enumerate(zip(encoded, image_counts, strict=True)):
        units.append(single_unit(item, i, range(first, first + count)))
        first += count
    return collate_units(units, pad_token_id, pack=True, one_row=one_row, num_sequences=len(units))


def pack_pairs(pairs: Sequence[tuple[dict[str, Sequence[int]], dict[str, Sequence[int]]]],
               image_counts: Sequence[int], pad_token_id: int, *, prompt_lengths: Sequence[int] | None = None,
               shared_prompt: bool = True, packing: bool = False, one_row: bool = False) -> dict[str, Any]:
    """Rows of preference pairs (chosen, rejected encodings): output sequences ``i`` (chosen)
    and ``n + i`` (rejected); with ``shared_prompt`` each pair is one sequence (its prompt,
    at most ``prompt_lengths[i]`` tokens, once), with ``packing`` several pairs per row."""
    n, units, first = len(pairs), [], 0
    lengths = prompt_lengths if prompt_lengths is not None else [None] * n
    for i, ((chosen, rejected), count, prompt_length) in enumerate(zip(pairs, image_counts, lengths, strict=True)):
        images = range(first, first + count)
        if shared_prompt:
            units.append(shared_prompt_unit(chosen, rejected, (i, n + i), images, prompt_length=prompt_length))
        else:
            units.append(pair_unit(chosen, rejected, (i, n + i), images))
        first += count
    return collate_units(units, pad_token_id, pack=packing, one_row=one_row, num_sequences=2 * n)


def padding_share(batch: dict[str, Any]) -> float:
    """Share of a batch's positions that are padding."""
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / max(mask.numel(), 1)


# -- attention ---------------------------------------------------------------------------------


def attention_implementation(model: Any) -> str:
    """The attention implementation of ``model``'s language model (``sdpa`` when unsaid)."""
    config = getattr(model, "config", None)
    for candidate in (getattr(config, "text_config", None), config):
        value = getattr(candidate, "_attn_implementation", None)
        if value:
            return str(value)
    return "sdpa"


def layout_support(adapter: Any, *, shared_prompt: bool = False, packing: bool = False
                   ) -> tuple[bool, bool, bool, str]:
    """``(shared_prompt, packing, one_row, reason)``: what ``adapter``'s model can do of what
    was asked; ``one_row``: packed batches go in one row (flash-attention's varlen path);
    ``reason`` says why a part is off (empty when all asked for is on)."""
    if not (shared_prompt or packing):
        return False, False, False, ""
    name = type(adapter).__name__
    if not getattr(adapter, "supports_packed_sequences", False):
        # an adapter that supports them only in some settings says why they are off in this one
        problem = getattr(adapter, "packed_sequences_problem", None)
        return False, False, False, (str(problem) if problem else (
            f"{name} does not declare supports_packed_sequences (its model has not been "
            "checked with per-sequence position ids and block masks)"))
    implementation = attention_implementation(getattr(adapter, "model", None))
    if implementation in MASK_IMPLEMENTATIONS:
        return shared_prompt, packing, False, ""
    reasons = []
    if shared_prompt:
        reasons.append(f"shared_prompt is off: attention {implementation!r} takes no block mask "
                       f"(use {' or '.join(MASK_IMPLEMENTATIONS)}, e.g. MLLM_ATTN_IMPLEMENTATION=sdpa)")
    if packing and implementation not in VARLEN_IMPLEMENTATIONS:
        reasons.append(f"packing is off: attention {implementation!r} takes neither a block mask nor "
                       "varlen position ids")
        packing = False
    return False, packing, packing, "; ".join(reasons)


def block_attention_mask(doc_ids: torch.Tensor, branch_ids: torch.Tensor, *, implementation: str = "sdpa",
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[R, 1, T, T]``: query ``i`` sees key ``j`` iff ``j <= i``, both in one document, and
    ``j`` is in the prompt (branch 0) or in ``i``'s branch; padding sees only itself.
    Boolean for ``sdpa``, additive (0 / dtype min) for ``eager``."""
    width = doc_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = (doc_ids[:, :, None] == doc_ids[:, None, :]) & (doc_ids[:, :, None] >= 0)
    branch_ok = (branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :])
    allowed = causal & same_doc & branch_ok
    allowed |= torch.eye(width, dtype=torch.bool, device=doc_ids.device)
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=doc_ids.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def is_packed(batch: Any) -> bool:
    """Whether a batch was laid out by :func:`collate_units`."""
    return isinstance(batch, dict) and "sequence_index" in batch


def packed_model_inputs(model: Any, batch: dict[str, Any], *, pixel_values: bool = True) -> dict[str, Any]:
    """``attention_mask`` (4D; ``None`` for flash-attention's varlen path and for segmented
    attention, which gets the blocks instead: the first packed forward on ``sdpa`` switches
    the model to it, see :mod:`mllm.training.segmented_attention`),
    ``position_ids`` and (with ``pixel_values``) the batch's ``pixel_values`` in the order
    of their image tokens, for ``model(input_ids=..., **packed_model_inputs(model, batch))``."""
    implementation = attention_implementation(model)
    if implementation == "sdpa" and use_segmented_attention(model):
        implementation = SEGMENTED
    if implementation == SEGMENTED:
        # the attention layers read the blocks, not a mask: none is built for them
        out = {"attention_mask": None, "position_ids": batch["position_ids"],
               LAYOUT_KEYWORD: blocks_of(batch["doc_ids"], batch["branch_ids"])}
    elif implementation in VARLEN_IMPLEMENTATIONS:
        if batch["input_ids"].shape[0] != 1 or bool((batch["branch_ids"] != 0).any()):
            raise ValueError(f"{implementation}: packed batches must be one row without shared prompts")
        out = {"attention_mask": None, "position_ids": batch["position_ids"]}
    else:
        dtype = next(model.parameters()).dtype
        out = {"attention_mask": block_attention_mask(batch["doc_ids"], batch["branch_ids"],
                                                      implementation=implementation, dtype=dtype),
               "position_ids": batch["position_ids"]}
    if pixel_values:
        out["pixel_values"] = _ordered_pixel_values(batch)
    return out


def _ordered_pixel_values(batch: dict[str, Any]) -> Any:
    pixel_values = batch.get("pixel_values")
    if pixel_values is None:
        return None
    index = batch.get("image_index")
    return pixel_values if index is None else pixel_values[index.to(pixel_values.device)]


def packed_answer_logprobs(model: Any, batch: dict[str, Any], *, adapter: Any = None,
                           share_image_features: bool = True) -> Any:
    """:class:`mllm.training.logprobs.AnswerLogprobs` of a packed batch: one row per
    output sequence (``num_sequences``), in ``sequence_index`` order."""
    from mllm.training.logprobs import AnswerLogprobs

    input_ids = batch["input_ids"]
    predictors, labels, sequences = batch["predictors"], batch["labels"], batch["sequence_index"]
    selected = (predictors >= 0) & (labels != IGNORE_INDEX) & (sequences >= 0)
    start = int(predictors[selected].min()) if bool(selected.any()) else 0
    kwargs = dict(packed_model_inputs(model, batch, pixel_values=False), use_cache=False,
                  logits_to_keep=input_ids.shape[1] - start)
    pixel_values = batch.get("pixel_values")
    if pixel_values is None:
        outputs = model(input_ids=input_ids, **kwargs)
    elif share_image_features:
        if adapter is None:
            raise ValueError("packed_answer_logprobs: share_image_features needs adapter= (it encodes the images once)")
        features = adapter.encode_images(pixel_values)
        index = batch.get("image_index")
        if index is not None:
            features = features[index.to(features.device)]
        outputs = model(inputs_embeds=adapter.embed_inputs(input_ids, features), **kwargs)
    else:
        outputs = model(input_ids=input_ids, pixel_values=_ordered_pixel_values(batch), **kwargs)
    logits = outputs.logits
    rows = torch.arange(input_ids.shape[0], device=logits.device).unsqueeze(1).expand_as(input_ids)
    selected = selected.to(logits.device)
    picked = logits[rows[selected], predictors.to(logits.device)[selected] - start]
    targets = labels.to(logits.device)[selected]
    token_logps = torch.log_softmax(picked.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    owner = sequences.to(logits.device)[selected]
    count = int(batch["num_sequences"])
    sums = torch.zeros(count, dtype=token_logps.dtype, device=logits.device).index_add(0, owner, token_logps)
    counts = torch.zeros(count, dtype=torch.long, device=logits.device).index_add(
        0, owner, torch.ones_like(owner))
    return AnswerLogprobs(sums, counts)
