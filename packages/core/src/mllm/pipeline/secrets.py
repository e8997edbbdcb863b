"""What counts as a secret, and how it is kept out of files, logs and messages.

Two tests, used everywhere mllm writes or prints a config or a message:

* **a secret key** (:func:`is_secret_key`): the key's words (``snake_case``, ``kebab-case``
  and ``camelCase`` are split) include ``secret``, ``password``, ``credential(s)``,
  ``authorization`` or ``apikey``, or a known pair such as ``api key``, ``access
  token``, ``hf token``; or the key is just ``token``. Whole words only:
  ``max_new_tokens`` and ``pad_token`` are not secrets. A key ending in ``_env`` names
  an environment variable and is not a secret itself.
* **a secret value** (:func:`redact_text`): text that has the shape of an API key (``sk-...``,
  ``hf_...``, ``ghp_...``, ``AKIA...``, a JWT, ``Bearer ...``), a secret-named query
  parameter of a URL (``?key=...``, ``&access_token=...``) or a URL's password
  (``https://user:pass@host``), wherever it appears.

Pipelines never hold keys: :func:`secret_in_pipeline` finds the first secret key with a
value, a key-shaped value in an ``*_env`` key or a URL with a key in it, so the loader
refuses it with :data:`SECRET_HINT`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "***REDACTED***"

#: how to configure a key instead (the same words wherever a key is refused)
SECRET_HINT = ("keys never go into a pipeline file (it is copied into run folders, logs and version control): "
               "export the key in an environment variable and name that variable instead, e.g. "
               "api_key_env: OPENAI_API_KEY")

_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "passphrase", "credential", "credentials",
                 "authorization", "apikey"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key"), ("client", "secret"),
                 ("api", "token"), ("access", "token"), ("auth", "token"), ("bearer", "token"), ("hf", "token"),
                 ("refresh", "token"), ("session", "token"), ("id", "token"), ("github", "token"),
                 ("wandb", "key"), ("api", "secret")}

_KEY_SHAPES = re.compile("|".join([
    r"\bsk-[A-Za-z0-9_\-]{16,}",                   # OpenAI, Anthropic and compatible servers
    r"\bhf_[A-Za-z0-9]{20,}",                       # Hugging Face
    r"\bgh[pousr]_[A-Za-z0-9]{20,}", r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",              # Slack
    r"\bAKIA[0-9A-Z]{16}\b",                        # AWS access key id
    r"\bAIza[0-9A-Za-z_\-]{30,}",                   # Google
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # a JWT
]))
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]{8,}")
_QUERY = re.compile(r"(?i)([?&;](?:key|api[_-]?key|apikey|token|access[_-]?token|auth|auth[_-]?token|sig|signature|"
                    r"password|secret|client[_-]?secret)=)[^&#\s'\"]+")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@'\"]+:)[^/\s@'\"]+(@)")


def key_words(key: str) -> list[str]:
    """``"maxNewTokens"`` -> ``["max", "new", "tokens"]``; ``"api-key_env"`` -> ``["api", "key", "env"]``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(key))
    return [w for w in re.split(r"[\s_\-.]+", spaced.lower()) if w]


def is_secret_key(key: Any) -> bool:
    """Whether a config key names a secret (see the module docstring)."""
    words = key_words(str(key))
    if not words or words[-1] == "env":
        return False
    if words == ["token"] or _SECRET_WORDS.intersection(words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` holds something shaped like a key (see :func:`redact_text`)."""
    return redact_text(text) != text


def redact_text(text: str) -> str:
    """``text`` with every key-shaped part, secret URL query value and URL password replaced."""
    if not isinstance(text, str) or not text:
        return text
    text = _KEY_SHAPES.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _QUERY.sub(lambda m: m.group(1) + REDACTED, text)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(2), text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret keys' values and key-shaped text replaced.

    Keys naming an environment variable that holds the secret (``api_key_env``) are kept,
    unless their value is itself shaped like a key (a key pasted in by mistake)."""
    if isinstance(value, dict):
        return {key: (REDACTED if is_secret_key(key) and item not in (None, "") else redact(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def secret_in_pipeline(value: Any, path: str = "") -> tuple[str, str] | None:
    """``(dotted key, why)`` of the first secret written into a pipeline, or ``None``.

    A secret key with a value is one (``api_key: ...``, ``hf_token: ...``); so is a
    key-shaped value anywhere, e.g. the key itself pasted into ``api_key_env``."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if is_secret_key(key) and item not in (None, ""):
                return where, f"{key} holds a secret (value not shown)"
            found = secret_in_pipeline(item, where)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = secret_in_pipeline(item, f"{path}[{index}]")
            if found:
                return found
    elif isinstance(value, str) and looks_like_secret(value):
        name = path.rsplit(".", 1)[-1]
        if name.endswith("_env"):
            return path, f"{name} holds what looks like a key itself, not the name of the environment variable " \
                         "that holds it"
        if "://" in value:
            return path, f"{name} is a URL with a key or password in it (value not shown)"
    return None  # key-shaped text elsewhere (a prompt, a path) is redacted where written, not refused


class RedactingFilter(logging.Filter):
    """A logging filter that redacts key-shaped text from every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
