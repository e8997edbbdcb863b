"""The ``easyvqa`` text corpus: what a tiny model's tokenizer learns with
``tokenizer_corpus: easyvqa`` (pipelines/quickstart.yaml)."""

from __future__ import annotations

from mllm.models.tokenizer import corpus_texts, train_tokenizer
from mllm.plugins.registry import Registry


def test_the_corpus_is_easyvqas_distinct_questions_then_answers():
    texts = corpus_texts("easyvqa", Registry(autoload=True))
    assert len(texts) == len(set(texts)) > 100
    assert texts[0].endswith("?") and {"circle", "rectangle", "triangle", "yes", "no"} <= set(texts)
    assert corpus_texts("mllm-data:easyvqa", Registry(autoload=True)) == texts  # the same, in the same order


def test_the_tokenizer_learns_easyvqa_words_only_when_the_corpus_is_named():
    texts = corpus_texts("easyvqa", Registry(autoload=True))
    taught = train_tokenizer(1000, extra=texts)
    plain = train_tokenizer(1000)
    assert len(taught(" rectangle", add_special_tokens=False)["input_ids"]) == 1
    assert len(plain(" rectangle", add_special_tokens=False)["input_ids"]) > 1
