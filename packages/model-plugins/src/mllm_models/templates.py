"""Chat templates of the model families, as segments (exact label masks) and as Jinja (saved folders).

A template renders turns into :class:`Segment` s (text plus a ``learned`` flag), the way
the core's LLaVA templates do (:class:`mllm.ChatTemplate`): the adapter tokenizes each
segment on its own, so the assistant-only label mask is exact by construction and a
prompt is a true prefix of the training sequence. The same template is written into every
saved folder as a Jinja ``chat_template`` (tokenizer and processor), so plain
transformers' ``apply_chat_template`` renders the very same text; the tests check that
text and the token ids against the family's processor.

``llava-1.5`` and ``plain`` are the core's templates (LLaVA-NeXT's vicuna format is
LLaVA-1.5's). ``idefics3`` is Idefics3 / SmolVLM's::

    <s>User:<image>What is it?<end_of_utterance>\\nAssistant: A square.<end_of_utterance>\\n

``smolvlm`` is the same opened once by ``<|im_start|>``, and ``chatml`` is Qwen2's, which LLaVA-OneVision uses::

    <|im_start|>user\\n<image>\\nWhat is it?<|im_end|>\\n<|im_start|>assistant\\nA square.<|im_end|>\\n
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mllm import IMAGE_TOKEN, get_template

END_OF_UTTERANCE = "<end_of_utterance>"


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; ``learned`` pieces carry labels in training."""

    text: str
    learned: bool = False


def _pairs(turns: Sequence[Any]) -> list[tuple[str, str | None]]:
    """``(question, answer or None)`` of alternating user/assistant turns (``Turn`` s or dicts)."""
    pairs: list[tuple[str, str | None]] = []
    for index, turn in enumerate(turns):
        if isinstance(turn, dict):
            role = turn.get("role") or {"human": "user", "gpt": "assistant"}.get(turn.get("from", ""), turn.get("from"))
            content = turn.get("content", turn.get("value"))
        else:
            role, content = turn.role, turn.content
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"turn {index} has role {role!r} but {expected!r} was expected; turns alternate user/assistant")
        if not isinstance(content, str):
            raise ValueError(f"turn {index}: content must be text")
        if expected == "user":
            pairs.append((content, None))
        else:
            pairs[-1] = (pairs[-1][0], content)
    if not pairs:
        raise ValueError("a conversation needs at least one user turn")
    return pairs


@dataclass(frozen=True)
class Idefics3Template:
    """Idefics3 / SmolVLM's chat format (``User:`` / ``Assistant:``, ``<end_of_utterance>``).

    The learned segment of each answer is `` {answer}<end_of_utterance>``; the newline after
    it is not learned (generation stops at ``<end_of_utterance>``).
    """

    name: str = "idefics3"

    @property
    def stop(self) -> str:
        return END_OF_UTTERANCE

    def segments(self, turns: Sequence[Any], *, add_generation_prompt: bool | None = None) -> list[Segment]:
        pairs = _pairs(turns)
        prompt = pairs[-1][1] is None
        if add_generation_prompt is not None and add_generation_prompt != prompt:
            last = "user" if prompt else "assistant"
            raise ValueError(f"the turns end with a {last} turn, so add_generation_prompt={add_generation_prompt} does not fit")
        out: list[Segment] = []
        for question, answer in pairs:
            colon = ":" if question.startswith(IMAGE_TOKEN) else ": "  # as Idefics3's own template
            out.append(Segment(f"User{colon}{question}{END_OF_UTTERANCE}\nAssistant:"))
            if answer is not None:
                out.append(Segment(f" {answer}{END_OF_UTTERANCE}", learned=True))
                out.append(Segment("\n"))
        return out

    def render(self, turns: Sequence[Any]) -> str:
        return "".join(segment.text for segment in self.segments(turns))


IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class SmolVLMTemplate(Idefics3Template):
    """SmolVLM's chat format: Idefics3's, opened once by ``<|im_start|>``."""

    name: str = "smolvlm"

    def segments(self, turns: Sequence[Any], *, add_generation_prompt: bool | None = None) -> list[Segment]:
        out = super().segments(turns, add_generation_prompt=add_generation_prompt)
        return [Segment(IM_START + out[0].text, out[0].learned), *out[1:]]


@dataclass(frozen=True)
class ChatMLTemplate:
    """ChatML (Qwen2's, used by LLaVA-OneVision): ``<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n``.

    The learned segment of each answer is ``{answer}<|im_end|>``; the newline after it is not learned.
    """

    name: str = "chatml"

    @property
    def stop(self) -> str:
        return IM_END

    def segments(self, turns: Sequence[Any], *, add_generation_prompt: bool | None = None) -> list[Segment]:
        pairs = _pairs(turns)
        prompt = pairs[-1][1] is None
        if add_generation_prompt is not None and add_generation_prompt != prompt:
            last = "user" if prompt else "assistant"
            raise ValueError(f"the turns end with a {last} turn, so add_generation_prompt={add_generation_prompt} does not fit")
        out: list[Segment] = []
        for question, answer in pairs:
            out.append(Segment(f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"))
            if answer is not None:
                out.append(Segment(f"{answer}{IM_END}", learned=True))
                out.append(Segment("\n"))
        return out

    def render(self, turns: Sequence[Any]) -> str:
        return "".join(segment.text for segment in self.segments(turns))


QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@dataclass(frozen=True)
class QwenVLTemplate(ChatMLTemplate):
    """Qwen2-VL / Qwen2.5-VL's ChatML: each ``<image>`` is ``<|vision_start|><|image_pad|><|vision_end|>``
    (the adapter expands ``<|image_pad|>`` to the image's tokens, as Qwen2-VL's processor does).
    No default system prompt is added (Qwen's hub template adds one when none is given)."""

    name: str = "qwen2-vl"

    def segments(self, turns: Sequence[Any], *, add_generation_prompt: bool | None = None) -> list[Segment]:
        return [Segment(s.text.replace(IMAGE_TOKEN, QWEN_IMAGE), s.learned)
                for s in super().segments(turns, add_generation_prompt=add_generation_prompt)]


FAMILY_TEMPLATES: dict[str, Any] = {"idefics3": Idefics3Template(), "smolvlm": SmolVLMTemplate(),
                                    "chatml": ChatMLTemplate(), "qwen2-vl": QwenVLTemplate()}


def template_of(name: str) -> Any:
    """A family template (``idefics3``) or one of the core's (``llava-1.5``, ``plain``)."""
    if name in FAMILY_TEMPLATES:
        return FAMILY_TEMPLATES[name]
    return get_template(name)


# -- Jinja ------------------------------------------------------------------------------------------
# Content may be a string (mllm's records: ``<image>`` written in the text) or a list of
# {"type": "image"} / {"type": "text", "text": ...} parts (transformers' convention).

_IDEFICS3_JINJA = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- set ns = namespace(text='') -%}"
    "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set ns.text = ns.text + '<image>' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ 'User' + (':' if ns.text[:7] == '<image>' else ': ') + ns.text + '<end_of_utterance>\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Assistant: ' + ns.text + '<end_of_utterance>\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)


_CHATML_JINJA = (
    "{{- bos_token if bos_token else '' -}}"
    "{%- for message in messages -%}"
    "{%- set ns = namespace(text='') -%}"
    "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set ns.text = ns.text + '<image>\\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + ns.text + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def chat_template_jinja(name: str) -> str:
    """The Jinja ``chat_template`` rendering what template ``name``'s segments render (``<s>`` in front).

    The core's templates (``llava-1.5``, ``plain``) bring their own (:attr:`mllm.ChatTemplate.jinja`;
    ``llava-1.5`` always ends a user turn with its cue ``ASSISTANT:``); ``idefics3`` adds
    ``Assistant:`` only with ``add_generation_prompt``.
    """
    if name == "idefics3":
        return _IDEFICS3_JINJA
    if name == "smolvlm":  # Idefics3's, opened once by <|im_start|>
        return _IDEFICS3_JINJA.replace("{{- bos_token -}}", "{{- bos_token -}}{{- '<|im_start|>' -}}", 1)
    if name == "chatml":
        return _CHATML_JINJA
    if name == "qwen2-vl":  # ChatML; <image> (in text or as an image part) is Qwen's vision markers
        return (_CHATML_JINJA.replace("ns.text + '<image>\\n'", "ns.text + '" + QWEN_IMAGE + "'")
                .replace("ns.text + '<|im_end|>", "ns.text | replace('<image>', '" + QWEN_IMAGE + "') + '<|im_end|>"))
    return get_template(name).jinja
