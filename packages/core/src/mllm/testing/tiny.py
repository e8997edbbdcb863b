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
    """Build a new tiny :class:`mllm.models.llava.adapter.LlavaAdapter` (``TINY_LLAVA`` plus ``overrides``)."""
    from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig

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
    from mllm.models.llava.adapter import LlavaAdapter

    return LlavaAdapter.load(tiny_llava_folder())


def save_tiny_causal_lm(folder: Path, corpus: str = "rate the answer from 1 to 10. The answer is A.",
                        max_positions: int = 512) -> Path:
    """Save a tiny, randomly initialised text-only causal LM (Llama, byte-level BPE trained
    on ``corpus``) to ``folder``: a local ``hf-local`` judge or generator for tests."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([corpus] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=max_positions, eos_token_id=0, pad_token_id=0))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
