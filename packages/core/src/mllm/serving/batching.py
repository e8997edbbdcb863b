"""Concurrent requests answered in batches, by the engines evaluation uses.

One worker thread owns the model. It takes the first waiting request, collects what
else arrives within ``wait_ms`` (up to ``max_batch``), groups the requests by decoding
settings and answers each group in one call:

* greedy, one user turn: :class:`~mllm.generation.engine.AnswerEngine`, the engine of
  the eval stage, so the answer is the eval stage's answer for the same prompt and image;
* greedy with earlier turns, or sampled (``temperature`` > 0):
  :class:`~mllm.generation.sampling.SampleGenerator`, which decodes through the same
  helpers. A request with a ``seed`` is sampled alone: the generator seeds each batch
  from its seed and every prompt in it, so only a batch of one makes the same seed give
  the same answer whatever else was asked at the time.

Batching never changes a greedy answer (left padding, masked; see the engine's
docstring). A batch that fails is retried one request at a time, so one bad request
fails alone. ``stop`` sequences cut the decoded text at the first one.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mllm.errors import MllmError
from mllm.generation.decoding import encode_prompt, per_image_tokens
from mllm.records import EvalItem
from mllm.serving.prompts import ChatPrompt
from mllm.serving.schema import ApiError

logger = logging.getLogger("mllm.serving")


@dataclass(frozen=True)
class Decoding:
    """How one request is decoded."""

    max_tokens: int | None = None  # None: the server's default
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stops: tuple[str, ...] = ()


@dataclass
class Completion:
    """The answers to one request, with OpenAI's finish reasons and token counts."""

    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _Pending:
    id: int
    prompt: ChatPrompt
    decoding: Decoding
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    prompt_tokens: int = 0
    max_new_tokens: int = 0

    def group(self) -> tuple:
        d = self.decoding
        if d.temperature == 0:
            # one user turn: the answer engine; earlier turns: the sampler at temperature 0
            return ("greedy", len(self.prompt.turns) == 1, self.max_new_tokens)
        return ("sample", d.temperature, d.top_p, d.n, self.max_new_tokens, self.id if d.seed is not None else None)


def context_length(adapter: Any) -> int:
    """Tokens the model can attend to: the language model's positions, else the adapter's ``max_length``."""
    config = getattr(getattr(adapter, "model", None), "config", None)
    text = getattr(config, "text_config", config)
    positions = getattr(text, "max_position_embeddings", None)
    return int(positions or getattr(adapter, "max_length", 512))


class Batcher:
    """The worker thread answering requests in batches; see the module docstring.

    Args:
        adapter: a loaded model adapter (the eval stage's kind).
        max_batch: requests answered in one engine call at most.
        wait_ms: how long the first request of a batch waits for company.
        default_max_tokens: the budget of a request that gives no ``max_tokens``.
        max_tokens_limit: the largest ``max_tokens`` accepted.
    """

    def __init__(self, adapter: Any, *, max_batch: int = 16, wait_ms: float = 5.0, default_max_tokens: int = 64,
                 max_tokens_limit: int = 512) -> None:
        self.adapter = adapter
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.context_length = context_length(adapter)
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._ids = 0
        self._ids_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="mllm-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: ChatPrompt, decoding: Decoding) -> concurrent.futures.Future:
        """Queue a request; the future gives its :class:`Completion` (or raises an :class:`ApiError`)."""
        requested = decoding.max_tokens or self.default_max_tokens
        if requested > self.max_tokens_limit:
            raise ApiError(400, f"max_tokens is {requested}; this server generates at most {self.max_tokens_limit} "
                                "tokens per answer (--max-tokens-limit)", param="max_tokens")
        with self._ids_lock:
            self._ids += 1
            pending = _Pending(self._ids, prompt, decoding)
        self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- the worker ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._answer(batch)

    def _answer(self, batch: list[_Pending]) -> None:
        self.stats["batches"] += 1
        self.stats["requests"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        groups: dict[tuple, list[_Pending]] = {}
        for pending in batch:
            if not pending.future.set_running_or_notify_cancel():
                continue  # the client went away before its turn
            try:
                self._measure(pending)
            except ApiError as error:
                pending.future.set_exception(error)
                continue
            groups.setdefault(pending.group(), []).append(pending)
        for key, members in groups.items():
            self._run_group(key, members)

    def _measure(self, pending: _Pending) -> None:
        """The prompt's length and the tokens left for the answer (an :class:`ApiError` when none are)."""
        pending.prompt_tokens = len(encode_prompt(self.adapter, pending.prompt.turns, pending.prompt.images,
                                                  per_image_tokens(self.adapter)))
        room = self.context_length - pending.prompt_tokens
        if room < 1:
            raise ApiError(400, f"the prompt is {pending.prompt_tokens} tokens; this model takes at most "
                                f"{self.context_length} tokens, answer included", param="messages",
                           code="context_length_exceeded")
        pending.max_new_tokens = min(pending.decoding.max_tokens or self.default_max_tokens, room)

    def _run_group(self, key: tuple, members: list[_Pending]) -> None:
        try:
            answers = self._generate(key, members)
        except Exception as error:  # noqa: BLE001 - every request gets an answer, an error at worst
            if len(members) > 1:
                for pending in members:  # find the request at fault; the others still get answers
                    self._run_group(key, [pending])
                return
            members[0].future.set_exception(_as_api_error(error))
            return
        for pending, texts in zip(members, answers):
            pending.future.set_result(self._complete(pending, texts))

    def _generate(self, key: tuple, members: list[_Pending]) -> list[list[str]]:
        from mllm.generation.engine import AnswerEngine
        from mllm.generation.sampling import Prompt, SampleGenerator

        if key[0] == "greedy" and key[1]:
            # a fresh engine per batch: its image cache is keyed by path, and a file under
            # --image-root may change between requests
            engine = AnswerEngine(self.adapter, batch_size=len(members), max_new_tokens=key[2],
                                  image_cache_bytes=64 * 2**20, kv_cache_bytes=64 * 2**20)
            items = [EvalItem(id=str(p.id), prompt=p.prompt.turns[0].content, images=p.prompt.images)
                     for p in members]
            answers = engine.answer(items, mode="generate")
            return [[answers[str(p.id)]] * p.decoding.n for p in members]
        greedy = key[0] == "greedy"
        seeds = {p.decoding.seed for p in members}
        seed = seeds.pop() if len(seeds) == 1 and None not in seeds else random.randrange(2**31)
        out: dict[int, list[str]] = {}
        # identical prompts in one call would share one cache entry (the same samples): split them
        for part in _distinct(members):
            generator = SampleGenerator(self.adapter, num_samples=1 if greedy else members[0].decoding.n,
                                        temperature=0.0 if greedy else members[0].decoding.temperature,
                                        top_p=1.0 if greedy else members[0].decoding.top_p, seed=seed,
                                        max_new_tokens=members[0].max_new_tokens, batch_size=len(part))
            prompts = [Prompt(str(p.id), p.prompt.turns, p.prompt.images, None) for p in part]
            answers = generator.answer(prompts)
            for p in part:
                texts = answers[str(p.id)]
                out[p.id] = texts * p.decoding.n if greedy else texts
        return [out[p.id] for p in members]

    def _complete(self, pending: _Pending, texts: list[str]) -> Completion:
        tokenizer = self.adapter.tokenizer
        finished, reasons, used = [], [], 0
        for text in texts:
            cut = _cut_at_stops(text, pending.decoding.stops)
            # re-encoding decoded text can exceed what was generated (bytes split across tokens): cap it
            tokens = min(len(tokenizer.encode(text, add_special_tokens=False)), pending.max_new_tokens)
            used += min(len(tokenizer.encode(cut, add_special_tokens=False)), tokens)
            if cut != text:
                reasons.append("stop")
                text = cut
            else:
                reasons.append("length" if tokens >= pending.max_new_tokens else "stop")
            finished.append(text)
        return Completion(finished, reasons, pending.prompt_tokens, used)


def _distinct(members: list[_Pending]) -> list[list[_Pending]]:
    """Consecutive parts in which no two requests ask the same turns about the same images."""
    parts: list[tuple[set, list[_Pending]]] = []
    for pending in members:
        signature = (pending.prompt.turns, pending.prompt.images)
        for seen, part in parts:
            if signature not in seen:
                seen.add(signature)
                part.append(pending)
                break
        else:
            parts.append(({signature}, [pending]))
    return [part for _, part in parts]


def _cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    cuts = [text.find(stop) for stop in stops if stop in text]
    return text[:min(cuts)] if cuts else text


def _as_api_error(error: BaseException) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, MllmError):
        return ApiError(400, str(error))
    logger.error("answering a request failed", exc_info=error)
    return ApiError(500, f"the model failed to answer ({type(error).__name__}); the server log has the details",
                    type="server_error")
