"""What answering and sampling share: the model inputs, the stops, the generate config, the cut.

Both the answer engine (:mod:`mllm.generation.engine`, greedy answers and choice
scoring) and sampling (:mod:`mllm.generation.sampling`, ``num_return_sequences``
samples) decode through these helpers, so a greedy answer is produced the same way
wherever it is asked for: prompts are left-padded (:func:`left_pad`; the mask hides the
padding, so a padded row computes what it computes alone), images reach the model as
encoded features (:func:`image_inputs`), generation stops at the end of the assistant
turn (:func:`stop_ids`: EOS, or the chat template's one-token stop), and only the new
tokens up to the first stop are decoded (:func:`decode_new_tokens`). The model runs in
eval and inference mode and is put back as it was (:func:`inference`); cache keys name
images by path, size and modification time (:func:`image_stamps`).

An adapter whose images take different numbers of tokens (the
:class:`~mllm.interfaces.ImageTokenCounts` capability in force, :func:`per_image_tokens`:
Qwen2-VL's ``dynamic_resolution``) is the one exception to "encoded features": each prompt
is encoded with its own images (:func:`encode_prompt`) and the model gets the adapter's
per-image inputs (:func:`per_image_inputs`: ``pixel_values`` and ``image_grid_thw``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import torch


def device_of(model: Any) -> torch.device:
    """The device of the model's parameters (where its inputs must be)."""
    return next(model.parameters()).device


@contextmanager
def inference(model: Any) -> Iterator[None]:
    """Eval mode (no dropout) and ``torch.inference_mode`` for the block; the training flag is restored."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def image_stamps(images: Sequence[Any]) -> list[Any]:
    """``[path, size, mtime_ns]`` per image (``None`` s when unreadable): a replaced image changes a cache key."""
    out = []
    for image in images:
        try:
            st = os.stat(image)
            out.append([os.fspath(image), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([os.fspath(image), None, None])
    return out


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token rows, padded on the left to the longest.

    Left, so that every row's last prompt token sits in the last column, where
    generation continues and where a next-token score is read."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.tensor([[pad_token_id] * (width - len(row)) + list(row) for row in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
    return ids.to(device), mask.to(device)


def image_inputs(features: Sequence[Any]) -> dict[str, Any]:
    """The ``mm_encoder_outputs`` argument carrying encoded images (one entry per image, in prompt order),
    so the model skips its vision tower."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"image": BaseModelOutputWithPooling(pooler_output=list(features))}


def per_image_tokens(adapter: Any) -> bool:
    """Whether the adapter's :class:`~mllm.interfaces.ImageTokenCounts` capability is in force: its
    images take their own numbers of tokens, so prompts are encoded with their images and images
    reach the model as ``adapter.image_inputs`` (never one count, or one feature shape, per image).

    In force when the adapter has the capability and does not switch it off with a false
    ``dynamic_resolution`` (Qwen2-VL's adapter has the methods either way)."""
    from mllm.interfaces import ImageTokenCounts

    return isinstance(adapter, ImageTokenCounts) and bool(getattr(adapter, "dynamic_resolution", True))


def encode_prompt(adapter: Any, turns: Any, images: Sequence[Any], per_image: bool) -> list[int]:
    """``adapter.encode_prompt(turns)``; with ``per_image`` (:func:`per_image_tokens`) the turns'
    images go along (``images=``), as each ``<image>`` takes that image's own token count."""
    if per_image:
        return list(adapter.encode_prompt(turns, images=list(images)))
    return list(adapter.encode_prompt(turns))


def per_image_inputs(adapter: Any, images: Sequence[Any], device: Any) -> dict[str, Any]:
    """The adapter's ``image_inputs`` of ``images`` (in prompt order over the batch) on ``device``:
    the model's forward / ``generate`` kwargs beside ``input_ids`` (``{}`` without images)."""
    if not images:
        return {}
    return {key: value.to(device) for key, value in adapter.image_inputs(list(images)).items()}


def stop_ids(adapter: Any) -> list[int]:
    """Token ids that end an answer: EOS, and the template's stop text when it is one token."""
    stops = [adapter.eos_token_id]
    stop_text = getattr(getattr(adapter, "template", None), "stop", None)
    if stop_text:
        encoded = adapter.tokenizer.encode(stop_text, add_special_tokens=False)
        if len(encoded) == 1:
            stops.append(encoded[0])
    return list(dict.fromkeys(s for s in stops if s is not None))


def generation_config(adapter: Any, stops: list[int], *, max_new_tokens: int, temperature: float = 0.0,
                      top_p: float = 1.0, num_return_sequences: int = 1) -> Any:
    """A ``GenerationConfig``: greedy at ``temperature`` 0, else sampling with ``temperature`` and ``top_p``
    (no top-k cut); stops at ``stops``."""
    from transformers import GenerationConfig

    sample = temperature > 0
    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=sample, num_beams=1,
        temperature=temperature if sample else None, top_p=top_p if sample else None, top_k=None,
        num_return_sequences=num_return_sequences, pad_token_id=adapter.pad_token_id, eos_token_id=stops,
        bos_token_id=getattr(adapter.tokenizer, "bos_token_id", None))


def cut_at_stop(tokens: Sequence[int], stops: Sequence[int]) -> list[int]:
    """The tokens before the first stop token (all of them when none stops)."""
    cut = next((i for i, token in enumerate(tokens) if token in stops), len(tokens))
    return list(tokens[:cut])


def decode_new_tokens(adapter: Any, output: Any, prompt_width: int, stops: Sequence[int]) -> list[str]:
    """Each row of ``model.generate``'s output after the prompt, cut at its first stop, decoded and stripped."""
    return [adapter.tokenizer.decode(cut_at_stop(row, stops), skip_special_tokens=True).strip()
            for row in output[:, prompt_width:].tolist()]
