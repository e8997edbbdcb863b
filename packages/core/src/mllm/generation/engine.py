"""The evaluation engine: batched greedy answers and closed-set choice scoring.

Every ``eval`` stage (and anything else that needs a model's greedy answers, as the
``generate`` stage) goes through :class:`AnswerEngine`::

    engine = AnswerEngine(adapter, batch_size=32, max_new_tokens=8,
                          cache_path=stage_dir / "answer_cache.jsonl", model_fingerprint=fp)
    answers = engine.answer(items, mode="generate")   # or mode="choice"; {item id: answer}

This module runs an evaluation: look every item up in the answer cache, plan the rest
into batches (:mod:`~mllm.generation.planning`), generate or score each batch, cache it.
The pieces, each in its own module:

* **Same preprocessing for both modes.** A prompt is the model's chat template applied
  to one user turn (``adapter.encode_prompt``), ending with the assistant's cue; images
  are loaded with ``adapter.load_images`` and encoded once per distinct image with
  ``adapter.encode_images`` (:mod:`~mllm.generation.prefix_cache`). An adapter whose
  images take their own token counts (``ImageTokenCounts`` in force,
  :func:`~mllm.generation.decoding.per_image_tokens`) encodes each prompt with its
  images and gets the adapter's ``image_inputs`` (``pixel_values`` + ``image_grid_thw``)
  in every forward and ``generate`` instead; its prompt-start caches are off.
* **Generate**: ``model.generate`` on left-padded batches, greedy, stopping at the end of
  the assistant turn (EOS, or the template's stop token); only the new tokens are
  decoded, then stripped -- the decoding helpers sampling uses too
  (:mod:`~mllm.generation.decoding`).
* **Choice**: the likeliest of an item's choices, by the first answer token when that
  tells them apart, else by each choice's full log-likelihood in one tree-masked pass
  (:mod:`~mllm.generation.choice`). Items without choices are generated.
* **Prompt-start caches.** The shared prompt start (BOS, system prompt, ``USER:``) and
  each prompt through its last image token are computed once and reused by every batch
  (:mod:`~mllm.generation.prefix_cache`).
* **Batching never changes an answer.** Rows are left-padded; the attention mask hides
  the padding and position ids are counted over real tokens only (``generate`` derives
  them from the mask; the forward passes build them explicitly), so a padded row
  computes what the same row computes alone, up to floating-point rounding of
  differently shaped matrix products (~1e-6), far below the margins that decide a
  greedy answer. Tests check batched, one-at-a-time, uncached and plain
  ``model.generate`` answers are identical on a trained model. Items are sorted by
  length so batches carry little padding.
* **Answer cache.** Each answer is appended to ``cache_path`` (a
  :class:`~mllm.generation.cache.KeyedJsonlCache`, ``{"key", "id", "answer"}`` lines,
  flushed and fsynced after every batch) under a key hashing the model fingerprint, the
  prompt, the images (path, size, mtime) and the generation settings (mode,
  ``max_new_tokens``, choices). An interrupted evaluation resumes with only the missing
  items; a finished one is never recomputed. The batch size is not part of the key: it
  cannot change an answer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from mllm.generation.cache import KeyedJsonlCache
from mllm.generation.choice import ChoiceScorer
from mllm.generation.decoding import decode_new_tokens, generation_config, inference, stop_ids
from mllm.generation.planning import AnswerMode, Job, Planner, answer_key, batches
from mllm.generation.prefix_cache import PromptCaches
from mllm.pipeline.progress import track
from mllm.records import EvalItem

__all__ = ["AnswerEngine", "AnswerMode"]

logger = logging.getLogger("mllm.generation.engine")


class AnswerEngine:
    """Answers :class:`~mllm.records.EvalItem` s with a model adapter; see the module docstring.

    Args:
        adapter: a model adapter (``mllm.models.llava.adapter.LlavaAdapter`` or one with the same
            methods: ``encode_prompt``, ``encode_conversation``, ``load_images``,
            ``encode_images``, ``tokenizer``, ``pad_token_id``, ``eos_token_id``, ``model``).
        batch_size: rows per forward pass (choice mode: items per pass).
        max_new_tokens: generation budget per answer.
        cache_path: JSON Lines answer cache (``None``: keep answers in memory only).
        model_fingerprint: identifies the model's weights (the fingerprint of the stage
            that produced it); part of every cache key.
        on_batch: called as ``on_batch(done, total)`` after each batch is cached.
        label: what the progress display (:mod:`mllm.pipeline.progress`) calls the answering.
        image_cache_bytes: memory budget of the encoded-image cache.
        kv_cache_bytes: memory budget of the prompt-through-the-image cache (0: none).
    """

    def __init__(self, adapter: Any, *, batch_size: int = 32, max_new_tokens: int = 16,
                 cache_path: Path | str | None = None, model_fingerprint: str = "",
                 on_batch: Callable[[int, int], None] | None = None,
                 image_cache_bytes: int = 512 * 2**20, kv_cache_bytes: int = 512 * 2**20,
                 label: str = "answers") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.adapter = adapter
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.model_fingerprint = model_fingerprint
        self.on_batch = on_batch
        self.label = label
        self.stats = {"cached": 0, "computed": 0, "batches": 0, "images_encoded": 0, "prompt_prefixes_computed": 0,
                      "seconds": 0.0}
        self.planner = Planner(adapter)
        self.caches = PromptCaches(adapter, self.stats, image_cache_bytes=image_cache_bytes,
                                   kv_cache_bytes=kv_cache_bytes)
        self.choices = ChoiceScorer(adapter, self.caches, batch_size)
        self._stops: list[int] | None = None

    def answer(self, items: Sequence[EvalItem], mode: AnswerMode = "generate") -> dict[str, str]:
        """Answers keyed by item id (``choice``: one of the item's choices, or generated
        text for items without choices)."""
        if mode not in ("generate", "choice"):
            raise ValueError(f"answer mode {mode!r} is not 'generate' or 'choice'")
        with KeyedJsonlCache(self.cache_path, value_field="answer") as cache:
            return self._answer(items, mode, cache)

    def _plan(self, items: Sequence[EvalItem], mode: str, cache: KeyedJsonlCache,
              answers: dict[str, str]) -> list[Job]:
        """Cached answers into ``answers``; one job per distinct missing key, in first-seen order."""
        keys: dict[str, str] = {}
        jobs: dict[str, Job] = {}
        for item in items:
            if item.id in keys:
                raise ValueError(f"item id {item.id!r} appears twice")
            key = answer_key(item, mode, model_fingerprint=self.model_fingerprint, max_new_tokens=self.max_new_tokens)
            keys[item.id] = key
            cached = cache.get(key)
            if cached is not None:
                answers[item.id] = cached
                self.stats["cached"] += 1
            elif key in jobs:
                jobs[key].ids.append(item.id)
            else:
                job = (self.planner.choice_job(key, item) if mode == "choice" and item.choices
                       else self.planner.generate_job(key, item))
                job.ids.append(item.id)
                jobs[key] = job
        return list(jobs.values())

    def _answer(self, items: Sequence[EvalItem], mode: str, cache: KeyedJsonlCache) -> dict[str, str]:
        answers: dict[str, str] = {}
        pending = self._plan(items, mode, cache, answers)
        if not pending:
            return answers
        order = {job.key: index for index, job in enumerate(pending)}
        self.caches.set_shared_prefix([job.prefix for job in pending])
        for job in pending:
            job.cached = self.caches.cacheable(job)
        # rows of a batch share their cached length; longest first within it (the biggest
        # batch runs first, and equal lengths share batches)
        pending.sort(key=lambda job: (-job.cached, -job.length, order[job.key]))
        generate_jobs = [job for job in pending if job.choices is None]
        first_token_jobs = [job for job in pending if job.choices is not None and job.first_token_only]
        tree_jobs = [job for job in pending if job.choices is not None and not job.first_token_only]
        total, done = len(pending), 0
        logger.info("answering %d item(s): %d cached, %d to compute (%s)", len(items), len(answers), total, mode)
        started = time.monotonic()
        tracker = track(self.label, total, unit="answer")
        try:
            with inference(self.adapter.model):
                for group, run in ((generate_jobs, self._generate_batch), (first_token_jobs, self.choices.answers),
                                   (tree_jobs, self.choices.answers)):
                    for batch in batches(group, self.batch_size):
                        results = run(batch)
                        for job, text in zip(batch, results):
                            cache.add(job.key, text, id=job.ids[0])
                        cache.flush()
                        for job, text in zip(batch, results):
                            for item_id in job.ids:
                                answers[item_id] = text
                        done += len(batch)
                        self.stats["computed"] += len(batch)
                        self.stats["batches"] += 1
                        tracker.update(done)
                        if self.on_batch is not None:
                            self.on_batch(done, total)
        finally:
            tracker.close()
            self.stats["seconds"] += time.monotonic() - started
        return {item.id: answers[item.id] for item in items}

    def _generate_batch(self, jobs: list[Job]) -> list[str]:
        """Greedy answers of a batch of generate jobs."""
        ids, mask, past, images = self.caches.prompt_batch(jobs)
        if self._stops is None:
            self._stops = stop_ids(self.adapter)
        config = generation_config(self.adapter, self._stops, max_new_tokens=self.max_new_tokens)
        kwargs: dict[str, Any] = dict(images)
        if past is not None:
            kwargs["past_key_values"] = past
        output = self.adapter.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
        return decode_new_tokens(self.adapter, output, ids.shape[1], self._stops)
