"""Judges: text in, text out, cached per request.

* ``openai``: any OpenAI-compatible chat-completions endpoint through the ``openai``
  client (its retries and timeouts: 429s, 5xx and timeouts are asked again
  ``max_retries`` times with backoff). A request that still fails, and a reply that is not
  JSON or not a chat completion, is a one-line :class:`JudgeError` naming the endpoint and
  what came back. The key is read from the environment variable
  named by ``api_key_env``; it is never logged, never part of the cache key and never
  written to disk. Needs the optional extra: ``pip install 'mllm-eval[judges]'``.
* ``hf-local``: a local Hugging Face causal LM (a ``save_pretrained`` folder, or an mllm
  stage folder holding one), greedy decoding.

Both cache each request in a JSON Lines file (the core's
:class:`~mllm.generation.cache.KeyedJsonlCache`) keyed by a SHA-256 of the model, the
messages and the decoding settings, so re-running a scorer costs nothing, and an
interrupted one asks only what it had not asked yet. Only real verdicts are cached: a
failed request raises :class:`JudgeError` and an empty reply is returned uncached
(``openai`` first asks again ``empty_retries`` times), so a later run asks again.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from mllm import ComponentConfig, KeyedJsonlCache, MllmError
from pydantic import Field, ValidationError

log = logging.getLogger(__name__)

#: how much of an endpoint's error body an error message quotes
_DETAIL_CHARS = 200


class JudgeError(MllmError, RuntimeError):
    """A judge could not be set up or could not answer."""


def judge_key(model: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
    """The cache key of one request: a SHA-256 of the model, the messages and the decoding settings."""
    return KeyedJsonlCache.key({"model": model, "messages": messages, "settings": settings})


def judge_cache(path: str | os.PathLike | None) -> KeyedJsonlCache:
    """A judge's cache: ``{"key", "model", "reply"}`` a line (only the key's hash, the model
    name and the reply are stored: never prompts' secrets, never credentials)."""
    return KeyedJsonlCache(path or None, value_field="reply")


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages


class OpenAIJudgeConfig(ComponentConfig):
    """An OpenAI-compatible chat-completions judge."""

    model: str = Field("gpt-4-0613", description="model name sent to the endpoint")
    base_url: str | None = Field(None, description="endpoint base URL (e.g. http://localhost:8000/v1); default: the client's")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (the key itself is never configured)")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=1)
    max_retries: int = Field(5, ge=0, description="retries of the openai client (rate limits, 5xx, timeouts)")
    empty_retries: int = Field(1, ge=0, description="times an empty reply is asked again at once "
                                                    "(empty replies are never cached)")
    timeout_s: float = Field(120.0, gt=0)
    cache: str | None = Field(None, description="JSON Lines cache file; none: no on-disk cache")


class OpenAIJudge:
    """Judge through the ``openai`` client's ``chat.completions.create``."""

    def __init__(self, config: OpenAIJudgeConfig | None = None) -> None:
        self.config = config or OpenAIJudgeConfig()
        try:
            import openai
        except ImportError as error:
            raise JudgeError(
                "the 'openai' judge needs the openai client: pip install 'mllm-eval[judges]'"
            ) from error
        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise JudgeError(
                f"the 'openai' judge reads its API key from ${self.config.api_key_env}, which is not set; "
                "export it (or set api_key_env to the variable that holds it)"
            )
        self._key = key  # only to scrub it from error messages
        self._client = openai.OpenAI(api_key=key, base_url=self.config.base_url,
                                     max_retries=self.config.max_retries, timeout=self.config.timeout_s)
        self._openai_error = openai.OpenAIError
        self.cache = judge_cache(self.config.cache)

    def _settings(self) -> dict[str, Any]:
        return {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens,
                "base_url": self.config.base_url or ""}

    def _failure(self, what: str) -> JudgeError:
        """One line naming the endpoint and what came back; never the key (a server may echo it)."""
        if self._key:  # before cutting, so no part of the key survives a cut
            what = what.replace(self._key, "***")
        what = " ".join(what.split())  # a multi-line error body stays on one line
        if len(what) > _DETAIL_CHARS:
            what = what[:_DETAIL_CHARS] + "..."
        return JudgeError(f"judge {self.config.model!r} at {self.config.base_url or 'the OpenAI API'}: {what}",
                          hint="check the endpoint and the judge's keys (base_url, model, timeout_s, max_retries)")

    def _describe(self, error: Exception) -> str:
        import openai

        retries = f"after {self.config.max_retries} retries"
        if isinstance(error, openai.APIStatusError):
            return f"HTTP {error.status_code} {retries}: {error.message}"
        if isinstance(error, openai.APITimeoutError):
            return f"no reply within timeout_s={self.config.timeout_s:g} {retries}"
        if isinstance(error, openai.APIConnectionError):
            return f"cannot connect {retries}: {error.__cause__ or error}"
        return f"{type(error).__name__}: {error}"

    def _ask(self, messages: list[dict[str, str]]) -> str:
        """One request (the client retries 429s, 5xx and timeouts ``max_retries`` times): the
        reply's text, ``""`` when it has none; a :class:`JudgeError` for a failed request or a
        reply that is not a chat completion."""
        try:
            response = self._client.chat.completions.create(
                model=self.config.model, messages=messages,  # type: ignore[arg-type]
                temperature=self.config.temperature, max_tokens=self.config.max_tokens,
            )
        except self._openai_error as error:
            raise self._failure(self._describe(error)) from None
        except ValueError as error:  # a 200 whose body is not JSON (a proxy's error page, a cut reply)
            raise self._failure(f"the reply is not JSON ({error})") from None
        choices = getattr(response, "choices", None)
        if choices == []:  # no choice (e.g. filtered): an empty reply, asked again, never cached
            return ""
        message = getattr(choices[0], "message", None) if isinstance(choices, list) else None
        content = getattr(message, "content", None)
        if message is None or not isinstance(content, (str, type(None))):
            dumped = response.model_dump() if hasattr(response, "model_dump") else {}
            keys = ", ".join(sorted(k for k, v in dumped.items() if v is not None)) or "none"
            raise self._failure(f"the reply is not a chat completion (no choices[0].message.content; "
                                f"its keys: {keys})")
        return content or ""

    def complete(self, prompt: str, *, system: str | None = None) -> str:
        messages = _messages(prompt, system)
        key = judge_key(self.config.model, messages, self._settings())
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        reply = ""
        for _ in range(self.config.empty_retries + 1):
            reply = self._ask(messages)
            if reply.strip():
                break
            log.warning("judge %s gave an empty reply; not cached", self.config.model)
        if reply.strip():  # only real verdicts are cached: an empty reply is asked again next run
            self.cache.put(key, reply, model=self.config.model)
        return reply


class HFLocalJudgeConfig(ComponentConfig):
    """A local Hugging Face causal LM used as a judge (greedy)."""

    path: str = Field(description="a save_pretrained folder, or an mllm stage folder containing one (model/)")
    max_new_tokens: int = Field(256, ge=1)
    device: str = Field("cpu", description="torch device")
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16")
    chat_template: bool = Field(True, description="use the tokenizer's chat template when it has one")
    cache: str | None = Field(None, description="JSON Lines cache file; none: no on-disk cache")


def resolve_model_folder(path: str | os.PathLike) -> Path:
    """The folder holding ``config.json``: ``path`` itself or a model folder inside a stage folder."""
    root = Path(path)
    if (root / "config.json").is_file():
        return root
    for sub in ("model", "final", "checkpoint"):
        if (root / sub / "config.json").is_file():
            return root / sub
    found = sorted(p.parent for p in root.glob("*/config.json")) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise JudgeError(f"hf-local judge: no Hugging Face model (config.json) in {os.fspath(root)!r} or its model/ folder")


class HFLocalJudge:
    """Greedy generation with a local ``AutoModelForCausalLM`` (or an mllm LLaVA stage)."""

    def __init__(self, config: HFLocalJudgeConfig) -> None:
        self.config = config
        self.folder = resolve_model_folder(config.path)
        self.cache = judge_cache(config.cache)
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[self.config.dtype]
        self._tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self._model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=dtype).to(self.config.device).eval()

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        tok = self._tokenizer
        if self.config.chat_template and getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return tok(text)["input_ids"]

    def complete(self, prompt: str, *, system: str | None = None) -> str:
        messages = _messages(prompt, system)
        settings = {"max_new_tokens": self.config.max_new_tokens, "greedy": True, "folder": os.fspath(self.folder)}
        key = judge_key(os.fspath(self.folder), messages, settings)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            ids = torch.tensor([self._encode(messages)], device=self.config.device)
            with torch.no_grad():
                out = self._model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                    max_new_tokens=self.config.max_new_tokens,
                    pad_token_id=self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None
                    else self._tokenizer.eos_token_id,
                )
            reply = self._tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        if reply.strip():  # only real verdicts are cached: an empty reply is asked again next run
            self.cache.put(key, reply, model=os.fspath(self.folder))
        return reply


def build_judge(ref: Any, *, cache: str | os.PathLike | None = None) -> Any:
    """A judge from ``{"name": ..., <its keys>}`` (a dict or ComponentRef), through the registry.

    ``cache``: the file a judge with a ``cache`` key caches to when ``ref`` sets none (the
    eval stage's ``judge_cache.jsonl``)."""
    from mllm import get_registry

    if hasattr(ref, "model_dump"):
        ref = ref.model_dump()
    options = dict(ref)
    name = options.pop("name", None)
    if not name:
        raise JudgeError("a judge needs a name, e.g. {name: openai, model: gpt-4-0613}")
    spec = get_registry().get("judge", name)
    config_cls = spec.load_config()
    if cache is not None and config_cls is not None and "cache" in config_cls.model_fields \
            and options.get("cache") is None:
        options["cache"] = os.fspath(cache)
    try:
        config = config_cls(**options) if config_cls is not None else None
    except ValidationError as error:  # a user's judge keys: one line naming each bad key
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}" for e in error.errors())
        raise JudgeError(f"judge {name!r}: {problems}", hint=f"its keys: {', '.join(config_cls.model_fields)}") from None
    return spec.load()(config)
