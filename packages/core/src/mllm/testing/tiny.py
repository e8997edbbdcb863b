"""A tiny LLaVA for tests: built once per process, saved, and loaded fresh on demand.

Building a tiny model trains a byte-level tokenizer (a few seconds); loading the saved
folder takes milliseconds. :func:`load_tiny_llava` therefore builds once per process and
returns a fresh, independent adapter on every call, so a test that trains it never
changes what another test sees.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: The ``model:`` keys of the tiny LLaVA the kit uses: 16x16 images, 4 image tokens,
#: one layer per tower, a 300-token byte-level vocabulary. Seconds to build, milliseconds a step.
TINY_LLAVA: dict[str, Any] = {
    "init": "tiny",
    "image_size": 16,
    "patch_size": 8,
    "vision_hidden_size": 32,
    "vision_layers": 1,
    "vision_intermediate_size": 64,
    "text_hidden_size": 32,
    "text_layers": 1,
    "text_intermediate_size": 64,
    "heads": 2,
    "vocab_size": 300,
    "max_length": 256,
}

_folder: Path | None = None


def build_tiny_llava(seed: int = 0, **overrides: Any) -> Any:
    """Build a new tiny :class:`mllm.models.llava.LlavaAdapter` (``TINY_LLAVA`` plus ``overrides``)."""
    from mllm.models.llava import LlavaAdapter, LlavaModelConfig

    return LlavaAdapter.from_config(LlavaModelConfig(**{**TINY_LLAVA, **overrides}), seed=seed)


def tiny_llava_folder() -> Path:
    """A folder holding the saved tiny LLaVA (built on the first call, removed at exit)."""
    global _folder
    if _folder is None or not _folder.exists():
        folder = Path(tempfile.mkdtemp(prefix="mllm-tiny-llava-"))
        atexit.register(shutil.rmtree, folder, True)
        build_tiny_llava().save(folder / "model")
        _folder = folder
    return _folder / "model"


def load_tiny_llava() -> Any:
    """A fresh tiny LLaVA adapter (its own weights: train it freely)."""
    from mllm.models.llava import LlavaAdapter

    return LlavaAdapter.load(tiny_llava_folder())
