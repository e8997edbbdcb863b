"""Sampling: several answers per prompt (or greedy answers to multi-turn prompts), reproducibly.

:class:`SampleGenerator` answers :class:`Prompt` s (turns ending with a user turn, images,
an optional gold answer) with ``model.generate`` and ``num_return_sequences``, through
the same decoding helpers as the answer engine (:mod:`mllm.generation.decoding`:
left padding, end-of-turn stops, the cut at the first stop), so a greedy answer here
is decoded exactly as an eval stage decodes it. Each batch's random seed derives from
``seed`` and its prompts' cache keys, so the same settings give the same samples
whatever was cached before; finished batches go to a
:class:`~mllm.generation.cache.KeyedJsonlCache` (``sample_cache.jsonl``: ``{"key", "id",
"answers"}`` lines) for resume. Used by the ``generate`` stage and by methods that
sample their own candidates (rejection sampling).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

from mllm.generation.cache import KeyedJsonlCache
from mllm.generation.decoding import (
    decode_new_tokens,
    device_of,
    encode_prompt,
    generation_config,
    image_inputs,
    image_stamps,
    inference,
    left_pad,
    per_image_inputs,
    per_image_tokens,
    stop_ids,
)
from mllm.pipeline.progress import track
from mllm.records import Conversation, EvalItem, Turn


class Prompt:
    """One prompt to answer: its turns (ending with a user turn), images and gold answer."""

    __slots__ = ("id", "turns", "images", "gold")

    def __init__(self, id: str, turns: tuple[Turn, ...], images: tuple[Any, ...], gold: str | None) -> None:
        self.id, self.turns, self.images, self.gold = id, turns, images, gold

    @classmethod
    def of(cls, record: Any) -> Prompt:
        """A Conversation's turns but the last answer (gold: that answer), or an EvalItem's prompt and answer."""
        if isinstance(record, Conversation):
            return cls(record.id, tuple(record.turns[:-1]), tuple(record.images), record.turns[-1].content)
        if isinstance(record, EvalItem):
            return cls(record.id, (Turn("user", record.prompt),), tuple(record.images), record.answer)
        raise TypeError(f"the generate stage answers Conversations or EvalItems, not {type(record).__name__}")


class SampleGenerator:
    """Sampled (or multi-turn) answers with ``model.generate`` on left-padded batches.

    Each distinct image of a batch is encoded once; ``num_return_sequences`` answers per
    prompt; the batch's seed derives from ``seed`` and its prompts' keys. ``temperature``
    0 decodes greedily. ``cache_path``: the sample cache (``None``: no cache);
    ``model_fingerprint`` identifies the weights and is part of every key. With per-image
    token counts (:func:`~mllm.generation.decoding.per_image_tokens`) prompts are encoded
    with their images and the model gets the adapter's ``image_inputs`` instead.
    """

    def __init__(self, adapter: Any, *, num_samples: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, max_new_tokens: int = 32, batch_size: int = 32,
                 cache_path: Path | None = None, model_fingerprint: str = "", label: str = "samples") -> None:
        self.adapter = adapter
        self.num_samples = num_samples
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.model_fingerprint = model_fingerprint
        self.label = label  # what the progress display calls the sampling
        self.per_image = per_image_tokens(adapter)

    def _key(self, prompt: Prompt) -> str:
        payload = {"model": self.model_fingerprint, "turns": [[t.role, t.content] for t in prompt.turns],
                   "images": image_stamps(prompt.images), "n": self.num_samples, "t": self.temperature,
                   "p": self.top_p, "seed": self.seed, "max_new_tokens": self.max_new_tokens}
        return KeyedJsonlCache.key(payload, ensure_ascii=True)  # the keys (and so the seeds) earlier versions used

    def answer(self, prompts: Sequence[Prompt]) -> dict[str, list[str]]:
        """``num_samples`` answers per prompt id."""
        with KeyedJsonlCache(self.cache_path, value_field="answers") as cache:
            keys = {p.id: self._key(p) for p in prompts}
            todo = [p for p in prompts if keys[p.id] not in cache]
            rows = {p.id: encode_prompt(self.adapter, p.turns, p.images, self.per_image) for p in todo}
            todo.sort(key=lambda p: -len(rows[p.id]))
            with inference(self.adapter.model), track(self.label, len(todo), unit="prompt") as tracker:
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start:start + self.batch_size]
                    texts = self._generate([rows[p.id] for p in batch], batch, [keys[p.id] for p in batch])
                    for prompt, answers in zip(batch, texts):
                        cache.add(keys[prompt.id], answers, id=prompt.id)
                    cache.flush()
                    tracker.update(start + len(batch))
            return {p.id: list(cache.get(keys[p.id])) for p in prompts}

    def _generate(self, rows: list[list[int]], prompts: list[Prompt], keys: list[str]) -> list[list[str]]:
        import torch

        device = device_of(self.adapter.model)
        ids, mask = left_pad(rows, self.adapter.pad_token_id, device)
        kwargs: dict[str, Any] = {}
        paths = [os.fspath(image) for p in prompts for image in p.images]
        if paths and self.per_image:
            kwargs.update(per_image_inputs(self.adapter, paths, device))
        elif paths:
            distinct = list(dict.fromkeys(paths))
            features = self.adapter.encode_images(self.adapter.load_images(distinct).to(device))
            by_path = dict(zip(distinct, features))
            kwargs["mm_encoder_outputs"] = image_inputs([by_path[p] for p in paths])
        stops = stop_ids(self.adapter)
        config = generation_config(self.adapter, stops, max_new_tokens=self.max_new_tokens,
                                   temperature=self.temperature, top_p=self.top_p,
                                   num_return_sequences=self.num_samples)
        batch_seed = int(hashlib.sha256(f"{self.seed}:{':'.join(keys)}".encode()).hexdigest()[:8], 16)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_seed)
            output = self.adapter.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
        texts = decode_new_tokens(self.adapter, output, ids.shape[1], stops)
        k = self.num_samples
        return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]
