"""The evaluation engine: batched greedy generation and closed-set choice scoring.

Every ``eval`` stage (and anything else that needs a model's answers) goes through
:class:`AnswerEngine`::

    engine = AnswerEngine(adapter, batch_size=32, max_new_tokens=8,
                          cache_path=stage_dir / "answer_cache.jsonl", model_fingerprint=fp)
    answers = engine.answer(items, mode="generate")   # or mode="choice"; {item id: answer}

How it works, and why each piece is there:

* **Same preprocessing for both modes.** A prompt is the model's chat template applied
  to one user turn (``adapter.encode_prompt``), ending with the assistant's cue; images
  are loaded with ``adapter.load_images`` and encoded once per distinct image with
  ``adapter.encode_images`` (byte-bounded LRU); the features reach the model as
  ``mm_encoder_outputs``, so the vision tower never runs twice for one image.
* **Generate**: ``model.generate`` on left-padded batches, greedy, stopping at the end of
  the assistant turn (EOS, or the template's stop token); only the new tokens are
  decoded, then stripped.
* **Choice**: for an item with ``choices``, the answer is the likeliest choice (ties: the
  first listed). When the choices' answer tokens differ in their first token (yes/no,
  option letters, one-word answers), that token's log-probability at the end of the
  prompt decides: one forward pass over the prompts, last position only. Otherwise
  each choice's full log-likelihood ``log P(answer + end of turn | prompt)`` (the
  template's learned tokens, from ``adapter.encode_conversation``) is computed, still in
  one forward pass per batch: the prompt is followed by the tokens of all choices laid
  out as a tree, with a 4-D attention mask (each choice sees the prompt and its own
  earlier tokens, never another choice's) and position ids that continue the prompt's
  for every choice. (With flash-attention, which takes no custom masks, each choice
  becomes its own row instead.) Items without choices are generated.
* **Prompt-start caches.** The tokens every prompt starts with (BOS, system prompt,
  ``USER:``) are run once and their keys/values copied into every batch; then each
  prompt's start through its last image token -- the same for every question about an
  image -- is computed once and kept (byte-bounded LRU). A batch computes only the
  question text after the image. Rows of a batch have one cached length, so the cache
  is a plain ``DynamicCache`` and padding sits between the cached start and the rest.
* **Batching never changes an answer.** Rows are left-padded; the attention mask hides
  the padding and position ids are counted over real tokens only (``generate`` derives
  them from the mask; the forward passes here build them explicitly), so a padded row
  computes what the same row computes alone, up to floating-point rounding of
  differently shaped matrix products (~1e-6), far below the margins that decide a
  greedy answer. Tests check batched, one-at-a-time, uncached and plain
  ``model.generate`` answers are identical on a trained model. Items are sorted by
  length so batches carry little padding.
* **Answer cache.** Each answer is appended to ``cache_path`` (JSON Lines, flushed and
  fsynced after every batch) under a key hashing the model fingerprint, the prompt, the
  images (path, size, mtime) and the generation settings (mode, ``max_new_tokens``,
  choices). An interrupted evaluation resumes with only the missing items; a finished
  one is never recomputed. The batch size is not part of the key: it cannot change an
  answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from mllm.records import EvalItem, Turn

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("mllm.generation.engine")

AnswerMode = Literal["generate", "choice"]
CACHE_VERSION = 1
_MIN_SHARED_PREFIX = 4  # shorter shared prompt starts are not worth a cache
_REUSE_AFTER = 3  # prompts after which a choice's answer tokens are taken as prompt-independent


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Choice:
    text: str
    tokens: list[int]  # continuation after the shared prefix, cut after the last learned token
    learned: list[bool]  # which of them count in the log-likelihood


@dataclass
class _Job:
    key: str
    item: EvalItem
    prefix: list[int]  # prompt ids (for choice jobs: the prefix shared by every choice's sequence)
    choices: list[_Choice] | None = None
    ids: list[str] = field(default_factory=list)  # item ids answered by this job (duplicates share it)
    cached: int = 0  # leading prompt tokens whose keys/values come from a cache (set per run)

    first_token_only: bool = False  # choices differ in their first token: it alone tells them apart
    length: int = 0  # tokens of its forward pass (prompt, plus choice tokens for a choice tree)

    def __post_init__(self) -> None:
        if self.choices is not None:
            self.first_token_only = len({c.tokens[0] for c in self.choices}) == len(self.choices)
        self.length = len(self.prefix)
        if self.choices is not None and not self.first_token_only:
            self.length += sum(max(len(c.tokens) - 1, 0) for c in self.choices)


class AnswerCache:
    """Answers keyed by a hash of everything that decides them; JSON Lines on disk."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.answers: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            with open(self.path) as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        self.answers[entry["key"]] = entry["answer"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by an interruption
        self._handle = None

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def add(self, entries: list[tuple[str, str, str]]) -> None:
        """Append ``(key, item id, answer)`` entries and flush them to disk."""
        for key, _, answer in entries:
            self.answers[key] = answer
        if self.path is None or not entries:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._needs_newline()
            self._handle = open(self.path, "a")
        for key, item_id, answer in entries:
            self._handle.write(json.dumps({"key": key, "id": item_id, "answer": answer}) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def _needs_newline(self) -> None:
        # a previous run killed mid-line leaves a partial last line: start on a fresh one
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    with open(self.path, "a") as append:
                        append.write("\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


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
        image_cache_bytes: memory budget of the encoded-image cache.
    """

    def __init__(self, adapter: Any, *, batch_size: int = 32, max_new_tokens: int = 16,
                 cache_path: Path | str | None = None, model_fingerprint: str = "",
                 on_batch: Callable[[int, int], None] | None = None,
                 image_cache_bytes: int = 512 * 2**20, kv_cache_bytes: int = 512 * 2**20) -> None:
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
        self.image_cache_bytes = image_cache_bytes
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._feature_bytes = 0
        self._stops: list[int] | None = None
        self._prompts: dict[str, list[int]] = {}
        self._shared_prefix: tuple[int, ...] = ()
        self._prefix_kv: list[tuple[Any, Any]] | None = None
        self.kv_cache_bytes = kv_cache_bytes
        self._kv: OrderedDict[tuple, list[tuple[Any, Any]]] = OrderedDict()
        self._kv_bytes = 0
        self._answer_tokens: dict[str, tuple[list[int], list[bool]]] = {}
        self._answer_seen: dict[str, int] = {}
        self._reuse_answers = True
        self.stats = {"cached": 0, "computed": 0, "batches": 0, "images_encoded": 0, "prompt_prefixes_computed": 0,
                      "seconds": 0.0}

    # -- public ---------------------------------------------------------------------------

    def answer(self, items: Sequence[EvalItem], mode: AnswerMode = "generate") -> dict[str, str]:
        """Answers keyed by item id (``choice``: one of the item's choices, or generated
        text for items without choices)."""
        if mode not in ("generate", "choice"):
            raise ValueError(f"answer mode {mode!r} is not 'generate' or 'choice'")
        cache = AnswerCache(self.cache_path)
        try:
            return self._answer(items, mode, cache)
        finally:
            cache.close()

    # -- planning -------------------------------------------------------------------------

    def _key(self, item: EvalItem, mode: str) -> str:
        images = []
        for image in item.images:
            try:
                st = os.stat(image)
                images.append([os.fspath(image), st.st_size, st.st_mtime_ns])
            except OSError:
                images.append([os.fspath(image), None, None])
        payload: dict[str, Any] = {"v": CACHE_VERSION, "model": self.model_fingerprint, "prompt": item.prompt,
                                   "images": images}
        if mode == "choice" and item.choices:
            payload["mode"] = "choice"
            payload["choices"] = list(item.choices)
        else:
            payload["mode"] = "generate"
            payload["max_new_tokens"] = self.max_new_tokens
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _prompt_ids(self, item: EvalItem) -> list[int]:
        ids = self._prompts.get(item.prompt)
        if ids is None:  # benchmarks repeat question texts (easy-VQA, POPE): tokenize each once
            ids = list(self.adapter.encode_prompt((Turn("user", item.prompt),)))
            if len(self._prompts) < 100_000:
                self._prompts[item.prompt] = ids
        return ids

    def _choice_job(self, key: str, item: EvalItem) -> _Job:
        """The prompt and each choice's answer tokens (the template's learned tokens: answer + end of turn).

        Encoding every (prompt, choice) conversation costs more than the forward pass on
        small models, so a choice's answer tokens are remembered once they were seen to
        be the same after several different prompts (true of templates tokenized segment
        by segment, as LLaVA's); one mismatch turns the shortcut off for good.
        """
        prompt = self._prompt_ids(item)
        if self._reuse_answers and all(self._answer_seen.get(c, 0) >= _REUSE_AFTER for c in item.choices):
            choices = [_Choice(c, *self._answer_tokens[c]) for c in item.choices]
            return _Job(key, item, prompt, choices)
        sequences = []
        for choice in item.choices:
            encoded = self.adapter.encode_conversation((Turn("user", item.prompt), Turn("assistant", choice)))
            ids = list(encoded["input_ids"])
            learned = [label != -100 for label in encoded["labels"]]
            if not any(learned):
                raise ValueError(f"item {item.id!r}: choice {choice!r} has no answer tokens under this template")
            sequences.append((choice, ids, learned))
        # the prompt is a prefix of every choice's sequence with segment-wise tokenization;
        # if a tokenizer merged across the boundary, share only the common prefix
        shared = min(_lcp(prompt, ids) for _, ids, _ in sequences)
        shared = min(shared, min(learned.index(True) for _, _, learned in sequences))
        if shared == 0:
            raise ValueError(f"item {item.id!r}: the choices share no prompt prefix")
        choices = []
        for choice, ids, learned in sequences:
            last = len(learned) - learned[::-1].index(True)
            choices.append(_Choice(choice, ids[shared:last], learned[shared:last]))
        self._remember_answers(choices, clean=shared == len(prompt))
        return _Job(key, item, prompt[:shared], choices)

    def _remember_answers(self, choices: list[_Choice], *, clean: bool) -> None:
        if not clean:
            self._reuse_answers = False
        for choice in choices:
            known = self._answer_tokens.get(choice.text)
            if known is None:
                self._answer_tokens[choice.text] = (choice.tokens, choice.learned)
            elif known != (choice.tokens, choice.learned):
                self._reuse_answers = False
            self._answer_seen[choice.text] = self._answer_seen.get(choice.text, 0) + 1

    # -- running --------------------------------------------------------------------------

    def _answer(self, items: Sequence[EvalItem], mode: str, cache: AnswerCache) -> dict[str, str]:
        keys = {}
        jobs: dict[str, _Job] = {}
        answers: dict[str, str] = {}
        for item in items:
            if item.id in keys:
                raise ValueError(f"item id {item.id!r} appears twice")
            key = self._key(item, mode)
            keys[item.id] = key
            cached = cache.get(key)
            if cached is not None:
                answers[item.id] = cached
                self.stats["cached"] += 1
            elif key in jobs:
                jobs[key].ids.append(item.id)
            else:
                job = (self._choice_job(key, item) if mode == "choice" and item.choices
                       else _Job(key, item, self._prompt_ids(item)))
                job.ids.append(item.id)
                jobs[key] = job
        if not jobs:
            return answers
        pending = list(jobs.values())
        order = {job.key: index for index, job in enumerate(pending)}
        # longest first: the biggest batch runs first, and equal lengths share batches
        self._set_shared_prefix([job.prefix for job in pending])
        for job in pending:
            job.cached = self._cacheable(job)
        # rows of a batch share their cached length; longest first within it (the biggest
        # batch runs first, and equal lengths share batches)
        pending.sort(key=lambda job: (-job.cached, -job.length, order[job.key]))
        generate_jobs = [job for job in pending if job.choices is None]
        first_token_jobs = [job for job in pending if job.choices is not None and job.first_token_only]
        tree_jobs = [job for job in pending if job.choices is not None and not job.first_token_only]
        total, done = len(pending), 0
        logger.info("answering %d item(s): %d cached, %d to compute (%s)", len(items), len(answers), total, mode)
        started = time.monotonic()
        import torch

        model = self.adapter.model
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for group, run in ((generate_jobs, self._generate_batch), (first_token_jobs, self._choice_batch),
                                   (tree_jobs, self._choice_batch)):
                    for batch in self._batches(group):
                        results = run(batch)
                        cache.add([(job.key, job.ids[0], text) for job, text in zip(batch, results)])
                        for job, text in zip(batch, results):
                            for item_id in job.ids:
                                answers[item_id] = text
                        done += len(batch)
                        self.stats["computed"] += len(batch)
                        self.stats["batches"] += 1
                        if self.on_batch is not None:
                            self.on_batch(done, total)
        finally:
            model.train(was_training)
            self.stats["seconds"] += time.monotonic() - started
        return {item.id: answers[item.id] for item in items}

    # -- model inputs ---------------------------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return next(self.adapter.model.parameters()).device

    def _image_features(self, jobs: Sequence[_Job]) -> Any:
        """``mm_encoder_outputs`` for the images of ``jobs`` in order, or ``None``."""
        paths = [os.fspath(image) for job in jobs for image in job.item.images]
        if not paths:
            return None
        missing = list(dict.fromkeys(p for p in paths if p not in self._features))
        if missing:
            pixel_values = self.adapter.load_images(missing)
            pixel_values = pixel_values.to(self._device)
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
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return {"image": BaseModelOutputWithPooling(pooler_output=wanted)}

    def _set_shared_prefix(self, prompts: list[list[int]]) -> None:
        """Find the tokens every prompt starts with (BOS, system prompt, ``USER:``), before any image.

        Their keys and values are computed once (batch 1) and copied into every batch's
        cache, so no batch recomputes them, and every row, whatever batch it is in,
        attends to the very same numbers.
        """
        shared = min(len(p) for p in prompts) - 1  # every row keeps at least one token to compute
        first = prompts[0]
        for prompt in prompts[1:]:
            shared = min(shared, _lcp(first, prompt))
        image_token = getattr(self.adapter, "image_token_id", None)
        if image_token is not None and image_token in first[:shared]:
            shared = first.index(image_token)
        prefix = tuple(first[:max(shared, 0)]) if shared >= _MIN_SHARED_PREFIX else ()
        if prefix != self._shared_prefix:
            self._shared_prefix, self._prefix_kv = prefix, None

    def _prefix_cache(self, batch: int) -> Any:
        """A fresh ``DynamicCache`` holding the shared prefix for ``batch`` rows (``None`` without one)."""
        if not self._shared_prefix:
            return None
        import torch
        from transformers import DynamicCache

        model = self.adapter.model
        if self._prefix_kv is None:
            ids = torch.tensor([self._shared_prefix], device=self._device)
            output = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self._prefix_kv = [(layer[0], layer[1]) for layer in output.past_key_values]
        data = [(k.expand(batch, *k.shape[1:]).contiguous(), v.expand(batch, *v.shape[1:]).contiguous())
                for k, v in self._prefix_kv]
        return DynamicCache(ddp_cache_data=data, config=model.config)

    def _batches(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Consecutive runs of at most ``batch_size`` jobs with one cached length."""
        batches: list[list[_Job]] = []
        for job in jobs:
            if batches and len(batches[-1]) < self.batch_size and batches[-1][0].cached == job.cached:
                batches[-1].append(job)
            else:
                batches.append([job])
        return batches

    def _cacheable(self, job: _Job) -> int:
        """How many leading prompt tokens come from caches: through the last image token
        (the shared prefix, then the image: the same for every question about that
        image), or just the shared prefix. Choice trees use no cache."""
        if job.choices is not None and not job.first_token_only:
            return 0
        shared = len(self._shared_prefix)
        image_token = getattr(self.adapter, "image_token_id", None)
        if image_token is None or not job.item.images or self.kv_cache_bytes <= 0:
            return shared
        last = max((i for i in range(len(job.prefix)) if job.prefix[i] == image_token), default=-1)
        return last + 1 if shared <= last + 1 < len(job.prefix) else shared

    def _image_prefix_cache(self, jobs: list[_Job]) -> Any:
        """A ``DynamicCache`` of every row's prompt through its last image token.

        Each distinct (prompt start, images) is computed once -- on top of the shared
        prefix, with the encoded images -- and kept in a byte-bounded LRU, so a second
        question about an image reuses the first one's keys and values.
        """
        import torch
        from transformers import DynamicCache

        cached = jobs[0].cached
        keys = [(tuple(job.prefix[:cached]), tuple(os.fspath(p) for p in job.item.images)) for job in jobs]
        missing = {key: job for key, job in zip(keys, jobs) if key not in self._kv}
        if missing:
            todo = list(missing.values())
            shared = len(self._shared_prefix)
            ids = torch.tensor([job.prefix[shared:cached] for job in todo], device=self._device)
            kwargs: dict[str, Any] = {}
            features = self._image_features(todo)
            if features is not None:
                kwargs["mm_encoder_outputs"] = features
            past = self._prefix_cache(len(todo))
            if past is not None:
                kwargs["past_key_values"] = past
                mask = torch.ones((len(todo), cached), dtype=torch.long, device=self._device)
                kwargs["attention_mask"] = mask
            output = self.adapter.model(input_ids=ids, use_cache=True, logits_to_keep=1,
                                        position_ids=torch.arange(shared, cached, device=self._device).expand(len(todo), -1),
                                        **kwargs)
            layers = [(layer[0], layer[1]) for layer in output.past_key_values]
            for row, key in enumerate(missing):
                entry = [(k[row:row + 1].clone(), v[row:row + 1].clone()) for k, v in layers]
                self._kv[key] = entry
                self._kv_bytes += sum(k.numel() * k.element_size() * 2 for k, _ in entry)
            self.stats["prompt_prefixes_computed"] += len(todo)
        entries = [self._kv[key] for key in keys]
        for key in dict.fromkeys(keys):
            self._kv.move_to_end(key)
        while self._kv_bytes > self.kv_cache_bytes and len(self._kv) > len(set(keys)):
            _, old = self._kv.popitem(last=False)
            self._kv_bytes -= sum(k.numel() * k.element_size() * 2 for k, _ in old)
        data = [(torch.cat([entry[layer][0] for entry in entries]), torch.cat([entry[layer][1] for entry in entries]))
                for layer in range(len(entries[0]))]
        return DynamicCache(ddp_cache_data=data, config=self.adapter.model.config)

    def _prompt_batch(self, jobs: list[_Job]) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
        """``input_ids`` ``[cached start | left padding | rest]``, its 2-D attention mask, the cache
        holding the cached start (``None``: plain left padding) and the ``mm_encoder_outputs``
        the rest needs (``None`` when its images are inside the cache)."""
        import torch

        cached = jobs[0].cached
        assert all(job.cached == cached for job in jobs)
        ids, mask = self._left_pad([job.prefix[cached:] for job in jobs])
        if cached:
            start = torch.tensor([job.prefix[:cached] for job in jobs], dtype=torch.long, device=ids.device)
            ids = torch.cat([start, ids], dim=1)
            mask = torch.cat([torch.ones_like(start), mask], dim=1)
        if cached > len(self._shared_prefix):
            return ids, mask, self._image_prefix_cache(jobs), None
        return ids, mask, self._prefix_cache(len(jobs)) if cached else None, self._image_features(jobs)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(row) for row in rows)
        pad = self.adapter.pad_token_id
        ids = torch.tensor([[pad] * (width - len(row)) + list(row) for row in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
        return ids.to(self._device), mask.to(self._device)

    def _stop_ids(self) -> list[int]:
        if self._stops is None:
            self._stops = self._find_stop_ids()
        return self._stops

    def _find_stop_ids(self) -> list[int]:
        stops = [self.adapter.eos_token_id]
        template = getattr(self.adapter, "template", None)
        stop_text = getattr(template, "stop", None)
        if stop_text:
            encoded = self.adapter.tokenizer.encode(stop_text, add_special_tokens=False)
            if len(encoded) == 1:
                stops.append(encoded[0])
        return list(dict.fromkeys(s for s in stops if s is not None))

    # -- generate -------------------------------------------------------------------------

    def _generate_batch(self, jobs: list[_Job]) -> list[str]:
        from transformers import GenerationConfig

        ids, mask, past, features = self._prompt_batch(jobs)
        stops = self._stop_ids()
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=self.adapter.pad_token_id, eos_token_id=stops,
                                  bos_token_id=getattr(self.adapter.tokenizer, "bos_token_id", None))
        kwargs: dict[str, Any] = {}
        if features is not None:
            kwargs["mm_encoder_outputs"] = features
        if past is not None:
            kwargs["past_key_values"] = past
        output = self.adapter.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
        new_tokens = output[:, ids.shape[1]:].tolist()
        texts = []
        for row in new_tokens:
            cut = next((i for i, token in enumerate(row) if token in stops), len(row))
            texts.append(self.adapter.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
        return texts

    # -- choice ---------------------------------------------------------------------------

    def _tree_masks_supported(self) -> bool:
        config = getattr(self.adapter.model, "config", None)
        implementation = str(getattr(getattr(config, "text_config", config), "_attn_implementation", "") or "")
        return "flash" not in implementation

    def _choice_batch(self, jobs: list[_Job]) -> list[str]:
        if all(job.first_token_only for job in jobs):
            scores = self._choice_scores_first_token(jobs)
        elif self._tree_masks_supported():
            scores = self._choice_scores_tree(jobs)
        else:
            scores = self._choice_scores_rows(jobs)
        answers = []
        for job, job_scores in zip(jobs, scores):
            best = max(range(len(job_scores)), key=lambda i: (job_scores[i], -i))
            answers.append(job.choices[best].text)
        return answers

    def _choice_scores_first_token(self, jobs: list[_Job]) -> list[list[float]]:
        """``log P(first token of each choice | prompt)``: one pass over the prompts, last position only."""
        import torch

        ids, mask, past, features = self._prompt_batch(jobs)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cached = jobs[0].cached
        kwargs: dict[str, Any] = {}
        if features is not None:
            kwargs["mm_encoder_outputs"] = features
        if past is not None:
            kwargs.update(past_key_values=past, use_cache=True)
        else:
            kwargs["use_cache"] = False
        output = self.adapter.model(input_ids=ids[:, cached:], attention_mask=mask, position_ids=positions[:, cached:],
                                    logits_to_keep=1, **kwargs)
        logprobs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        return [logprobs[row, [c.tokens[0] for c in job.choices]].tolist() for row, job in enumerate(jobs)]

    def _choice_scores_tree(self, jobs: list[_Job]) -> list[list[float]]:
        """Every choice's full log-likelihood, all choices of a batch in one forward pass.

        Row layout: ``[left padding | prompt | choice 1 tokens | choice 2 tokens | ... | right padding]``,
        where choice ``c`` contributes its continuation tokens except the last (the
        last one is only predicted). A 4-D mask lets each choice token see the prompt
        and the earlier tokens of its own choice; its position id continues the
        prompt's. The prompt ends at the same column in every row, so one slice of the
        logits holds every prediction needed.
        """
        import torch

        device = self._device
        prompt_width = max(len(job.prefix) for job in jobs)
        tails = [[token for choice in job.choices for token in choice.tokens[:-1]] for job in jobs]
        tail_width = max(len(tail) for tail in tails)
        width = prompt_width + tail_width
        pad = self.adapter.pad_token_id
        id_rows, position_rows = [], []
        allowed = torch.zeros((len(jobs), width, width), dtype=torch.bool)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for row, (job, tail) in enumerate(zip(jobs, tails)):
            n_prompt = len(job.prefix)
            start = prompt_width - n_prompt
            id_rows.append([pad] * start + job.prefix + tail + [pad] * (tail_width - len(tail)))
            positions = [0] * start + list(range(n_prompt))
            allowed[row, start:prompt_width, start:prompt_width] = causal[:n_prompt, :n_prompt]
            column = prompt_width
            for choice in job.choices:
                n = len(choice.tokens) - 1
                if n <= 0:
                    continue
                positions.extend(range(n_prompt, n_prompt + n))
                allowed[row, column:column + n, start:prompt_width] = True
                allowed[row, column:column + n, column:column + n] = causal[:n, :n]
                column += n
            position_rows.append(positions + [0] * (width - len(positions)))
        # padding attends to itself only (keeps its softmax well defined; nobody reads it)
        lonely = ~allowed.any(-1)
        allowed |= torch.diag_embed(lonely)
        dtype = next(self.adapter.model.parameters()).dtype
        mask = torch.zeros((len(jobs), 1, width, width), dtype=dtype)
        mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
        kwargs: dict[str, Any] = {}
        features = self._image_features(jobs)
        if features is not None:
            kwargs["mm_encoder_outputs"] = features
        keep = width - prompt_width + 1  # the last prompt position and every tail position
        output = self.adapter.model(input_ids=torch.tensor(id_rows, device=device), attention_mask=mask.to(device),
                                    position_ids=torch.tensor(position_rows, device=device), logits_to_keep=keep,
                                    use_cache=False, **kwargs)
        logprobs = torch.log_softmax(output.logits.float(), dim=-1)  # [batch, keep, vocab]; column 0: prompt end
        scores = []
        for row, job in enumerate(jobs):
            columns, tokens, owners = [], [], []
            offset = 1  # logits column of the current choice's first tail token
            for index, choice in enumerate(job.choices):
                for j, (token, learned) in enumerate(zip(choice.tokens, choice.learned)):
                    if learned:  # token j is predicted by the prompt end (j == 0) or by token j-1
                        columns.append(0 if j == 0 else offset + j - 1)
                        tokens.append(token)
                        owners.append(index)
                offset += max(len(choice.tokens) - 1, 0)
            picked = logprobs[row, columns, tokens].tolist()
            row_scores = [0.0] * len(job.choices)
            for owner, value in zip(owners, picked):
                row_scores[owner] += value
            scores.append(row_scores)
        return scores

    def _choice_scores_rows(self, jobs: list[_Job]) -> list[list[float]]:
        """Fallback for attention kernels without custom masks: one row per (item, choice)."""
        import torch

        rows, owners = [], []
        for index, job in enumerate(jobs):
            for choice in job.choices:
                rows.append(job.prefix + choice.tokens)
                owners.append((index, choice))
        scores: list[list[float]] = [[] for _ in jobs]
        for start in range(0, len(rows), self.batch_size):
            chunk, chunk_owners = rows[start:start + self.batch_size], owners[start:start + self.batch_size]
            ids, mask = self._left_pad(chunk)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = {}
            features = self._image_features([jobs[index] for index, _ in chunk_owners])
            if features is not None:
                kwargs["mm_encoder_outputs"] = features
            output = self.adapter.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                        use_cache=False, **kwargs)
            logprobs = torch.log_softmax(output.logits.float(), dim=-1)
            width = ids.shape[1]
            for row, (index, choice) in enumerate(chunk_owners):
                n = len(choice.tokens)
                total = 0.0
                for j, (token, learned) in enumerate(zip(choice.tokens, choice.learned)):
                    if learned:
                        total += float(logprobs[row, width - n - 1 + j, token])
                scores[index].append(total)
        return scores
