"""Planning an evaluation: which items need a forward pass, with which tokens, in which batches.

The answer engine (:mod:`mllm.generation.engine`) turns each item to answer into a
:class:`Job`: its cache key (:func:`answer_key`: everything that decides the answer), its
prompt tokens and, in choice mode, each choice's answer tokens (:class:`Planner`, which
tokenizes each distinct question once and learns when a choice's answer tokens do not
depend on the prompt). Items with the same key share one job. Jobs are then cut into
batches of rows that share one cached prompt length (:func:`batches`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from mllm.generation.cache import KeyedJsonlCache
from mllm.generation.decoding import encode_prompt, image_stamps, per_image_tokens
from mllm.records import EvalItem, Turn

AnswerMode = Literal["generate", "choice"]
CACHE_VERSION = 1
REUSE_AFTER = 3  # prompts after which a choice's answer tokens are taken as prompt-independent


def lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Choice:
    """One choice of a choice job, as tokens after the prefix its job's choices share."""

    text: str
    tokens: list[int]  # continuation after the shared prefix, cut after the last learned token
    learned: list[bool]  # which of them count in the log-likelihood


@dataclass
class Job:
    """One forward-pass unit: an item (and its duplicates) to generate for, or to score the choices of."""

    key: str
    item: EvalItem
    prefix: list[int]  # prompt ids (for choice jobs: the prefix shared by every choice's sequence)
    choices: list[Choice] | None = None
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


def answer_key(item: EvalItem, mode: str, *, model_fingerprint: str, max_new_tokens: int) -> str:
    """The answer cache key: the model, the prompt, the images (path, size, mtime) and the settings
    that decide the answer (choice: the choices; generate: ``max_new_tokens``). Not the batch
    size: it cannot change an answer."""
    payload: dict[str, Any] = {"v": CACHE_VERSION, "model": model_fingerprint, "prompt": item.prompt,
                               "images": image_stamps(item.images)}
    if mode == "choice" and item.choices:
        payload["mode"] = "choice"
        payload["choices"] = list(item.choices)
    else:
        payload["mode"] = "generate"
        payload["max_new_tokens"] = max_new_tokens
    return KeyedJsonlCache.key(payload, ensure_ascii=True)  # the keys earlier versions wrote


class Planner:
    """Tokenizes items into jobs, remembering what repeats across items.

    Benchmarks repeat question texts (easy-VQA, POPE), so each distinct prompt is
    tokenized once. Encoding every (prompt, choice) conversation costs more than the
    forward pass on small models, so a choice's answer tokens are remembered once they
    were seen to be the same after several different prompts (true of templates tokenized
    segment by segment, as LLaVA's); one mismatch turns the shortcut off for good.

    With per-image token counts (:func:`~mllm.generation.decoding.per_image_tokens`) each
    prompt is encoded with its item's images, and the prompt memo is keyed by the prompt and
    the image paths (the same question about a larger image has more image tokens).
    """

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.per_image = per_image_tokens(adapter)
        self._prompts: dict[Any, list[int]] = {}
        self._answer_tokens: dict[str, tuple[list[int], list[bool]]] = {}
        self._answer_seen: dict[str, int] = {}
        self._reuse_answers = True

    def prompt_ids(self, item: EvalItem) -> list[int]:
        """The item's prompt under the chat template, ending with the assistant's cue."""
        memo: Any = (item.prompt, tuple(os.fspath(p) for p in item.images)) if self.per_image else item.prompt
        ids = self._prompts.get(memo)
        if ids is None:
            ids = encode_prompt(self.adapter, (Turn("user", item.prompt),), item.images, self.per_image)
            if len(self._prompts) < 100_000:
                self._prompts[memo] = ids
        return ids

    def generate_job(self, key: str, item: EvalItem) -> Job:
        return Job(key, item, self.prompt_ids(item))

    def choice_job(self, key: str, item: EvalItem) -> Job:
        """The prompt and each choice's answer tokens (the template's learned tokens: answer + end of turn)."""
        prompt = self.prompt_ids(item)
        if self._reuse_answers and all(self._answer_seen.get(c, 0) >= REUSE_AFTER for c in item.choices):
            choices = [Choice(c, *self._answer_tokens[c]) for c in item.choices]
            return Job(key, item, prompt, choices)
        sequences = []
        images = {"images": list(item.images)} if self.per_image else {}
        for choice in item.choices:
            encoded = self.adapter.encode_conversation((Turn("user", item.prompt), Turn("assistant", choice)), **images)
            ids = list(encoded["input_ids"])
            learned = [label != -100 for label in encoded["labels"]]
            if not any(learned):
                raise ValueError(f"item {item.id!r}: choice {choice!r} has no answer tokens under this template")
            sequences.append((choice, ids, learned))
        # the prompt is a prefix of every choice's sequence with segment-wise tokenization;
        # if a tokenizer merged across the boundary, share only the common prefix
        shared = min(lcp(prompt, ids) for _, ids, _ in sequences)
        shared = min(shared, min(learned.index(True) for _, _, learned in sequences))
        if shared == 0:
            raise ValueError(f"item {item.id!r}: the choices share no prompt prefix")
        choices = []
        for choice, ids, learned in sequences:
            last = len(learned) - learned[::-1].index(True)
            choices.append(Choice(choice, ids[shared:last], learned[shared:last]))
        self._remember_answers(choices, clean=shared == len(prompt))
        return Job(key, item, prompt[:shared], choices)

    def _remember_answers(self, choices: list[Choice], *, clean: bool) -> None:
        if not clean:
            self._reuse_answers = False
        for choice in choices:
            known = self._answer_tokens.get(choice.text)
            if known is None:
                self._answer_tokens[choice.text] = (choice.tokens, choice.learned)
            elif known != (choice.tokens, choice.learned):
                self._reuse_answers = False
            self._answer_seen[choice.text] = self._answer_seen.get(choice.text, 0) + 1


def batches(jobs: list[Job], batch_size: int) -> list[list[Job]]:
    """Consecutive runs of at most ``batch_size`` jobs with one cached length."""
    out: list[list[Job]] = []
    for job in jobs:
        if out and len(out[-1]) < batch_size and out[-1][0].cached == job.cached:
            out[-1].append(job)
        else:
            out.append([job])
    return out
