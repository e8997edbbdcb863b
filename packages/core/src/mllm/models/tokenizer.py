"""A byte-level BPE tokenizer trained locally for tiny LLaVA models.

There is no model hub here, so ``init: tiny`` models get a tokenizer trained on the
spot with the ``tokenizers`` library:

- byte-level (GPT-2 style): every byte has a token, so no text is ever unknown;
- special tokens ``<pad>`` (0), ``<s>`` (1), ``</s>`` (2) and ``<image>`` (3); they are
  matched before pre-tokenization, so ``</s>`` and ``<image>`` written in text become
  those single ids (the chat templates rely on this);
- a small built-in corpus: the chat templates' words, letters, digits and punctuation,
  followed by the texts of the text corpus the model config names
  (``tokenizer_corpus: <name>``, a registered ``text_corpus`` component, e.g. mllm-data's
  ``easyvqa``: easy-VQA's questions and answers); the name is a model key, so it is part
  of the init fingerprint;
- deterministic (a fixed corpus in a fixed order) and quick (well under a second);
  nothing is cached anywhere: the trained tokenizer is saved with the model folder.

The result is wrapped as a transformers ``PreTrainedTokenizerFast`` whose encoding of a
text adds ``<s>`` in front (like Llama's); :mod:`mllm.models.llava.adapter` encodes with
``add_special_tokens=False`` and places ``<s>`` itself.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Any

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN)

# Template sentences: listed twice in the corpus so that their words clear the
# trainer's min_frequency=2 and become whole tokens (the system prompt then costs
# ~30 tokens instead of ~80 in every sequence).
_TEMPLATE_TEXTS = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: <image>\nWhat is in the image? ASSISTANT: A shape.</s>",
    "USER: ASSISTANT: Yes No yes no Answer with a single word. Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly. A B C D E Options: Question: Context:",
    "Is there a {} in the image? Describe the image briefly. What color is the shape? What is the shape?",
)
_CHARACTERS = (
    string.ascii_letters,
    " ".join(string.ascii_letters),
    string.digits,
    " ".join(string.digits),
    string.punctuation,
    " ".join(string.punctuation),
)


def default_corpus() -> list[str]:
    """The built-in training corpus: template words, letters, digits and punctuation."""
    return list(_TEMPLATE_TEXTS) * 2 + list(_CHARACTERS)


def corpus_texts(name: str | None, registry: Any = None) -> list[str]:
    """The texts of the text corpus ``name`` (kind ``text_corpus``), ``[]`` for ``None``."""
    if name is None:
        return []
    from mllm.pipeline.config import resolve_component
    from mllm.plugins.registry import get_registry

    corpus = resolve_component(registry or get_registry(), "text_corpus", {"name": name}, "tokenizer_corpus").build()
    texts = list(corpus.texts())
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"text corpus {name!r} must give strings")
    return texts


def train_tokenizer(vocab_size: int = 1000, corpus: Iterable[str] | None = None, model_max_length: int = 512,
                    extra: Iterable[str] = ()):
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    ``corpus`` replaces the built-in corpus; ``extra`` texts (a text corpus's) follow it.

    ``vocab_size`` is the target size including the 256 byte tokens and the 4 special
    tokens; a small corpus may run out of merges first, so the model's vocabulary is
    ``len(tokenizer)``, not this number.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
    texts = list(default_corpus() if corpus is None else corpus) + list(extra)

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = backend.token_to_id(BOS_TOKEN)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    return tokenizer
