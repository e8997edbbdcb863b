"""Prompt-start caches: what every batch would recompute is computed once and reused.

Three levels, all inside one answer engine's lifetime (:class:`PromptCaches`):

* **Encoded images**: each distinct image is encoded once (byte-bounded LRU) and reaches
  the model as ``mm_encoder_outputs``, so the vision tower never runs twice for one image.
* **The shared prefix**: the tokens every prompt starts with (BOS, system prompt,
  ``USER:``) are run once and their keys/values copied into every batch.
* **Prompt through the image**: each prompt's start through its last image token -- the
  same for every question about an image -- is computed once on top of the shared
  prefix and kept (byte-bounded LRU); a batch then computes only the question after it.

Rows of a batch have one cached length, so the cache is a plain ``DynamicCache`` and
padding sits between the cached start and the rest (:meth:`PromptCaches.prompt_batch`).
Choice trees use no cache (their 4-D masks cover the whole row). An adapter with
``uses_position_caches = False`` (:class:`mllm.interfaces.HasPositionCaches`: position
ids computed from the whole prompt, as M-RoPE) gets no prompt-start cache at all: every
batch runs its full prompts (encoded images are still reused).

An adapter whose images take their own token counts
(:func:`~mllm.generation.decoding.per_image_tokens`: Qwen2-VL's ``dynamic_resolution``) gets
neither cache: its images reach the model as the adapter's per-image inputs
(``image_inputs``: ``pixel_values`` + ``image_grid_thw``, the vision tower runs in each
forward) and the prompt-start caches are off (logged), since their keys/values were built
for one feature shape per image.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Sequence

from mllm.generation.decoding import device_of, image_inputs, left_pad, per_image_inputs, per_image_tokens
from mllm.generation.planning import Job, lcp
from mllm.interfaces import HasPositionCaches, capability

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("mllm.generation.prefix_cache")

MIN_SHARED_PREFIX = 4  # shorter shared prompt starts are not worth a cache


def _kv_bytes(entry: list[tuple[Any, Any]]) -> int:
    return sum(k.numel() * k.element_size() * 2 for k, _ in entry)


class PromptCaches:
    """Encoded images and prompt-start keys/values of one answer engine; see the module docstring.

    ``stats`` (the engine's) counts ``images_encoded`` and ``prompt_prefixes_computed``.
    """

    def __init__(self, adapter: Any, stats: dict[str, Any], *, image_cache_bytes: int, kv_cache_bytes: int) -> None:
        self.adapter = adapter
        self.stats = stats
        self.image_cache_bytes = image_cache_bytes
        self.kv_cache_bytes = kv_cache_bytes
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._feature_bytes = 0
        self.shared_prefix: tuple[int, ...] = ()
        self._prefix_kv: list[tuple[Any, Any]] | None = None
        self._kv: OrderedDict[tuple, list[tuple[Any, Any]]] = OrderedDict()
        self._kv_bytes = 0
        # False: keys/values of a prompt start depend on the rest of the prompt (M-RoPE)
        self.enabled = bool(capability(adapter, HasPositionCaches, "uses_position_caches", True))
        # True: images take their own token counts; they go to the model as per-image inputs
        self.per_image = per_image_tokens(adapter)
        if self.per_image:
            if self.enabled:
                logger.info("prompt-start caches off: %s gives each image its own token count (ImageTokenCounts), "
                            "so cached prompt starts and encoded-image features do not apply",
                            type(adapter).__name__)
            logger.info("images go to the model as per-image inputs (image_inputs: pixel_values with their grid); "
                        "the encoded-image cache is off for %s", type(adapter).__name__)
            self.enabled = False

    @property
    def device(self) -> torch.device:
        return device_of(self.adapter.model)

    # -- images ----------------------------------------------------------------------------

    def image_features(self, jobs: Sequence[Job]) -> Any:
        """``mm_encoder_outputs`` for the images of ``jobs`` in order, or ``None``."""
        paths = [os.fspath(image) for job in jobs for image in job.item.images]
        if not paths:
            return None
        missing = list(dict.fromkeys(p for p in paths if p not in self._features))
        if missing:
            pixel_values = self.adapter.load_images(missing)
            pixel_values = pixel_values.to(self.device)
            features = self.adapter.encode_images(pixel_values)
            self.stats["images_encoded"] += len(missing)
            for path, feature in zip(missing, features):
                feature = feature.detach()
                self._features[path] = feature
                self._feature_bytes += feature.numel() * feature.element_size()
        wanted = [self._features[p] for p in paths]
        for path in dict.fromkeys(paths):
            self._features.move_to_end(path)
        while self._feature_bytes > self.image_cache_bytes and len(self._features) > len(set(paths)):
            _, old = self._features.popitem(last=False)
            self._feature_bytes -= old.numel() * old.element_size()
        return image_inputs(wanted)

    def image_kwargs(self, jobs: Sequence[Job]) -> dict[str, Any]:
        """The model's image kwargs for the images of ``jobs`` in order: ``mm_encoder_outputs``
        (encoded once, cached), or with per-image token counts the adapter's ``image_inputs``;
        ``{}`` without images."""
        if self.per_image:
            return per_image_inputs(self.adapter, [image for job in jobs for image in job.item.images], self.device)
        features = self.image_features(jobs)
        return {} if features is None else {"mm_encoder_outputs": features}

    # -- the shared prefix -------------------------------------------------------------------

    def set_shared_prefix(self, prompts: list[list[int]]) -> None:
        """Find the tokens every prompt starts with (BOS, system prompt, ``USER:``), before any image.

        Their keys and values are computed once (batch 1) and copied into every batch's
        cache, so no batch recomputes them, and every row, whatever batch it is in,
        attends to the very same numbers.
        """
        if not self.enabled:
            self.shared_prefix, self._prefix_kv = (), None
            return
        shared = min(len(p) for p in prompts) - 1  # every row keeps at least one token to compute
        first = prompts[0]
        for prompt in prompts[1:]:
            shared = min(shared, lcp(first, prompt))
        image_token = getattr(self.adapter, "image_token_id", None)
        if image_token is not None and image_token in first[:shared]:
            shared = first.index(image_token)
        prefix = tuple(first[:max(shared, 0)]) if shared >= MIN_SHARED_PREFIX else ()
        if prefix != self.shared_prefix:
            self.shared_prefix, self._prefix_kv = prefix, None

    def prefix_cache(self, batch: int) -> Any:
        """A fresh ``DynamicCache`` holding the shared prefix for ``batch`` rows (``None`` without one)."""
        if not self.shared_prefix:
            return None
        import torch
        from transformers import DynamicCache

        model = self.adapter.model
        if self._prefix_kv is None:
            ids = torch.tensor([self.shared_prefix], device=self.device)
            output = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self._prefix_kv = [(layer[0], layer[1]) for layer in output.past_key_values]
        data = [(k.expand(batch, *k.shape[1:]).contiguous(), v.expand(batch, *v.shape[1:]).contiguous())
                for k, v in self._prefix_kv]
        return DynamicCache(ddp_cache_data=data, config=model.config)

    # -- prompt through the image --------------------------------------------------------------

    def cacheable(self, job: Job) -> int:
        """How many leading prompt tokens come from caches: through the last image token
        (the shared prefix, then the image: the same for every question about that
        image), or just the shared prefix. Choice trees use no cache."""
        if not self.enabled or (job.choices is not None and not job.first_token_only):
            return 0
        shared = len(self.shared_prefix)
        image_token = getattr(self.adapter, "image_token_id", None)
        if image_token is None or not job.item.images or self.kv_cache_bytes <= 0:
            return shared
        last = max((i for i in range(len(job.prefix)) if job.prefix[i] == image_token), default=-1)
        return last + 1 if shared <= last + 1 < len(job.prefix) else shared

    def image_prefix_cache(self, jobs: list[Job]) -> Any:
        """A ``DynamicCache`` of every row's prompt through its last image token.

        Each distinct (prompt start, images) is computed once -- on top of the shared
        prefix, with the encoded images -- and kept in a byte-bounded LRU, so a second
        question about an image reuses the first one's keys and values.
        """
        import torch
        from transformers import DynamicCache

        device = self.device
        cached = jobs[0].cached
        keys = [(tuple(job.prefix[:cached]), tuple(os.fspath(p) for p in job.item.images)) for job in jobs]
        missing = {key: job for key, job in zip(keys, jobs) if key not in self._kv}
        if missing:
            todo = list(missing.values())
            shared = len(self.shared_prefix)
            ids = torch.tensor([job.prefix[shared:cached] for job in todo], device=device)
            kwargs: dict[str, Any] = {}
            features = self.image_features(todo)
            if features is not None:
                kwargs["mm_encoder_outputs"] = features
            past = self.prefix_cache(len(todo))
            if past is not None:
                kwargs["past_key_values"] = past
                mask = torch.ones((len(todo), cached), dtype=torch.long, device=device)
                kwargs["attention_mask"] = mask
            output = self.adapter.model(input_ids=ids, use_cache=True, logits_to_keep=1,
                                        position_ids=torch.arange(shared, cached, device=device).expand(len(todo), -1),
                                        **kwargs)
            layers = [(layer[0], layer[1]) for layer in output.past_key_values]
            for row, key in enumerate(missing):
                entry = [(k[row:row + 1].clone(), v[row:row + 1].clone()) for k, v in layers]
                self._kv[key] = entry
                self._kv_bytes += _kv_bytes(entry)
            self.stats["prompt_prefixes_computed"] += len(todo)
        entries = [self._kv[key] for key in keys]
        for key in dict.fromkeys(keys):
            self._kv.move_to_end(key)
        while self._kv_bytes > self.kv_cache_bytes and len(self._kv) > len(set(keys)):
            _, old = self._kv.popitem(last=False)
            self._kv_bytes -= _kv_bytes(old)
        data = [(torch.cat([entry[layer][0] for entry in entries]), torch.cat([entry[layer][1] for entry in entries]))
                for layer in range(len(entries[0]))]
        return DynamicCache(ddp_cache_data=data, config=self.adapter.model.config)

    # -- a batch's inputs -----------------------------------------------------------------------

    def prompt_batch(self, jobs: list[Job]) -> tuple[torch.Tensor, torch.Tensor, Any, dict[str, Any]]:
        """``input_ids`` ``[cached start | left padding | rest]``, its 2-D attention mask, the cache
        holding the cached start (``None``: plain left padding) and the image kwargs the rest
        needs (:meth:`image_kwargs`; ``{}`` when its images are inside the cache)."""
        import torch

        cached = jobs[0].cached
        assert all(job.cached == cached for job in jobs)
        ids, mask = left_pad([job.prefix[cached:] for job in jobs], self.adapter.pad_token_id, self.device)
        if cached:
            start = torch.tensor([job.prefix[:cached] for job in jobs], dtype=torch.long, device=ids.device)
            ids = torch.cat([start, ids], dim=1)
            mask = torch.cat([torch.ones_like(start), mask], dim=1)
        if cached > len(self.shared_prefix):
            return ids, mask, self.image_prefix_cache(jobs), {}
        return ids, mask, self.prefix_cache(len(jobs)) if cached else None, self.image_kwargs(jobs)
