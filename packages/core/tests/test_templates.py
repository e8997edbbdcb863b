"""Chat templates (LLaVA's exact formats) and the locally trained byte-level tokenizer."""

from __future__ import annotations

import sys
import time
import types

import pytest
from mllm import hookimpl
from mllm.errors import ConfigError
from mllm.models.templates import LLAVA_SYSTEM, Segment, get_template
from mllm.records import Turn

TWO_TURNS = [
    Turn("user", "<image>\nwhat is the blue shape?"),
    Turn("assistant", "rectangle"),
    Turn("user", "is there a red shape?"),
    Turn("assistant", "no"),
]


def llava_get_prompt(system: str, messages: list[tuple[str, str | None]], sep: str = " ", sep2: str = "</s>") -> str:
    """LLaVA's ``Conversation.get_prompt`` for ``SeparatorStyle.TWO`` (llava/conversation.py), verbatim logic."""
    seps = [sep, sep2]
    ret = system + seps[0]
    for i, (role, message) in enumerate(messages):
        if message:
            ret += role + ": " + message + seps[i % 2]
        else:
            ret += role + ":"
    return ret


def test_llava_15_two_turns_matches_llava_exactly():
    template = get_template("llava-1.5")
    text = template.render(TWO_TURNS)
    expected = (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <image>\nwhat is the blue shape? "
        "ASSISTANT: rectangle</s>USER: is there a red shape? ASSISTANT: no</s>"
    )
    assert text == expected
    reference = llava_get_prompt(LLAVA_SYSTEM, [("USER", "<image>\nwhat is the blue shape?"), ("ASSISTANT", "rectangle"),
                                                ("USER", "is there a red shape?"), ("ASSISTANT", "no")])
    assert text == reference


def test_llava_15_generation_prompt_ends_with_cue_and_is_a_prefix():
    template = get_template("llava-1.5")
    prompt = template.prompt(TWO_TURNS[:3])
    assert prompt.endswith("USER: is there a red shape? ASSISTANT:")
    assert prompt == llava_get_prompt(LLAVA_SYSTEM, [("USER", "<image>\nwhat is the blue shape?"), ("ASSISTANT", "rectangle"),
                                                     ("USER", "is there a red shape?"), ("ASSISTANT", None)])
    assert template.render(TWO_TURNS).startswith(prompt)
    assert template.prompt(TWO_TURNS[:1]) == LLAVA_SYSTEM + " USER: <image>\nwhat is the blue shape? ASSISTANT:"


def test_learned_segments_are_answers_and_closing_separator():
    segments = get_template("llava-1.5").segments(TWO_TURNS)
    assert [s.text for s in segments if s.learned] == [" rectangle</s>", " no</s>"]
    assert [s.text for s in get_template("llava-1.5").segments(TWO_TURNS[:3]) if s.learned] == [" rectangle</s>"]
    assert not any(s.learned for s in get_template("llava-1.5").segments(TWO_TURNS[:1]))
    assert get_template("llava-1.5").stop == "</s>"


def test_plain_template_is_llava_stage1():
    template = get_template("plain")
    turns = [Turn("user", "<image>\nDescribe the image briefly."), Turn("assistant", "a blue rectangle")]
    assert template.segments(turns) == [Segment("<image>"), Segment("a blue rectangle\n", learned=True)]
    assert template.render(turns) == "<image>a blue rectangle\n"
    assert template.prompt(turns[:1]) == "<image>"
    assert template.stop == "\n"


def test_llava_json_dicts_are_accepted():
    turns = [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "yes"}]
    assert get_template("llava-1.5").render(turns) == get_template("llava-1.5").render(
        [Turn("user", "<image>\nhi"), Turn("assistant", "yes")])


def test_template_errors():
    with pytest.raises(ValueError, match="unknown chat template 'vicuna'"):
        get_template("vicuna")
    with pytest.raises(ValueError, match="expected"):
        get_template("llava-1.5").render([Turn("assistant", "x")])
    with pytest.raises(ValueError, match="add_generation_prompt"):
        get_template("llava-1.5").prompt(TWO_TURNS)
    with pytest.raises(ValueError, match="at least one user turn"):
        get_template("llava-1.5").render([])


# -- tokenizer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from mllm.models.tokenizer import train_tokenizer

    return train_tokenizer(1000)


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<image>"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id is None
    ids = tokenizer("USER: <image>\nwhat? ASSISTANT: yes</s>", add_special_tokens=False)["input_ids"]
    assert ids.count(3) == 1 and ids[-1] == 2
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id


def test_tokenizer_has_no_unknown_tokens_on_arbitrary_unicode(tokenizer):
    texts = ["héllo wörld", "你好，世界", "emoji 🙂🚀 and \u200b zero width", "tabs\tand\nnewlines\r\n",
             "ﬁ ligature, Ω, ∑, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "".join(chr(c) for c in range(0x20, 0x2FF))]
    vocab_size = len(tokenizer)
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert all(0 <= i < vocab_size for i in ids)
        assert tokenizer.decode(ids) == text


def test_tokenizer_is_deterministic_and_fast(tokenizer):
    from mllm.models.tokenizer import train_tokenizer

    started = time.perf_counter()
    again = train_tokenizer(1000)
    assert time.perf_counter() - started < 2.0
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    # the built-in corpus is the template text only; a text corpus's words (tokenizer_corpus:
    # a text_corpus component) become single tokens, with their leading space
    assert len(tokenizer(" zebra", add_special_tokens=False)["input_ids"]) > 1
    taught = train_tokenizer(1000, extra=["a zebra", "the zebra", "one zebra"])
    assert len(taught(" zebra", add_special_tokens=False)["input_ids"]) == 1


def test_tokenizer_corpus_is_a_registered_component(monkeypatch):
    from mllm.models.tokenizer import corpus_texts
    from mllm.plugins.registry import Registry
    from mllm.plugins.specs import ComponentSpec

    components = types.ModuleType("mllm_words_corpus")
    components.WordsCorpus = WordsCorpus
    monkeypatch.setitem(sys.modules, "mllm_words_corpus", components)
    registry = Registry(autoload=False)
    plugin = types.ModuleType("corpus_plugin")

    def mllm_register_text_corpora(register):
        register(ComponentSpec(name="words", impl="mllm_words_corpus:WordsCorpus"))

    plugin.mllm_register_text_corpora = hookimpl(mllm_register_text_corpora)
    assert registry.register_plugin(plugin, distribution="mllm-words")
    assert corpus_texts("words", registry) == ["a zebra", "the zebra"]
    assert corpus_texts(None, registry) == []
    with pytest.raises(ConfigError, match="unknown text_corpus 'wrds'; did you mean 'words'"):
        corpus_texts("wrds", registry)


class WordsCorpus:
    """A text corpus for the test above."""

    def __init__(self, config=None) -> None:
        self.config = config

    def texts(self) -> list[str]:
        return ["a zebra", "the zebra"]


def test_tokenizer_vocab_size_floor():
    from mllm.models.tokenizer import train_tokenizer

    with pytest.raises(ValueError, match="at least 260"):
        train_tokenizer(100)
