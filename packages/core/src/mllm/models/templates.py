"""Chat templates: how a conversation becomes text, and which parts of it are learned.

Two templates, both following the LLaVA code base exactly:

``llava-1.5``
    LLaVA's ``conv_vicuna_v1`` (``SeparatorStyle.TWO``, ``sep=" "``, ``sep2="</s>"``)::

        {system} USER: <image>\\n{question} ASSISTANT: {answer}</s>USER: {question} ASSISTANT: {answer}</s>

    and the generation prompt ends with ``ASSISTANT:`` (LLaVA's ``role + ":"`` for an
    empty message).
``plain``
    LLaVA's ``conv_llava_plain`` used for stage-1 (projector) pretraining: the user turn
    is replaced by its images only (its words are dropped, as LLaVA's
    ``preprocess_plain`` does) and the answer follows directly, closed by ``sep="\\n"``::

        <image>{caption}\\n

Rendering gives a list of :class:`Segment` (text plus a ``learned`` flag). The learned
segments are the assistant answers with the separator that closes them (``</s>`` for
``llava-1.5``, ``\\n`` for ``plain``); with ``llava-1.5`` the space after ``ASSISTANT:``
belongs to the answer segment, because the generation prompt ends with ``ASSISTANT:``
and the model has to produce that space itself.

Why labels come from tokenizing segment by segment: BPE merges across the boundary
between a prompt and its answer (``ASSISTANT:`` + `` yes`` could tokenize differently
as one string than as two), so finding the answer's tokens inside the tokenization of
the whole text is guesswork; LLaVA's ``preprocess_v1`` counts tokens per round and needs
off-by-one fixes per tokenizer for exactly this reason. Tokenizing each segment on its
own and concatenating the ids makes the mask exact by construction, and the prompt used
for generation (the same segments up to the last ``ASSISTANT:``) is then a true prefix
of the training sequence, so training and inference see identical token ids.
This is exact for byte-level BPE tokenizers (the tiny models' own, GPT-2/Qwen style). A
SentencePiece tokenizer that prepends a space marker to every encoded string (Llama's,
as in llava-hf folders) puts one at each segment start too; single-turn prompts (one
segment) are unaffected, so evaluating such a model is exact, while fine-tuning it on
multi-segment conversations sees that marker before each answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mllm.records import IMAGE_TOKEN, Turn

TemplateName = Literal["llava-1.5", "plain"]

LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; ``learned`` pieces carry labels in training."""

    text: str
    learned: bool = False


@dataclass(frozen=True)
class ChatTemplate:
    """A LLaVA conversation template (``SeparatorStyle.TWO`` or ``PLAIN``).

    ``stop`` is the text that ends an assistant turn (what generation may stop at).
    """

    name: str
    style: Literal["two", "plain"]
    system: str = ""
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str = "</s>"

    @property
    def stop(self) -> str:
        return self.sep2 if self.style == "two" else self.sep

    # -- rendering --------------------------------------------------------------------

    def segments(self, turns: Sequence[Turn | dict], *, add_generation_prompt: bool | None = None) -> list[Segment]:
        """Render alternating user/assistant turns into segments.

        A list ending with a user turn is a prompt: it ends with the assistant's cue
        (``ASSISTANT:`` for ``llava-1.5``, nothing for ``plain``). A list ending with an
        assistant turn is a full conversation whose answers are learned.
        ``add_generation_prompt`` may state which is expected (an error otherwise).
        """
        pairs = _as_pairs(turns)
        if not pairs:
            raise ValueError("a conversation needs at least one user turn")
        prompt = pairs[-1][1] is None
        if add_generation_prompt is not None and add_generation_prompt != prompt:
            last = "user" if prompt else "assistant"
            raise ValueError(f"the turns end with a {last} turn, so add_generation_prompt={add_generation_prompt} does not fit")
        if self.style == "plain":
            return self._plain(pairs)
        return self._two(pairs)

    def _two(self, pairs: list[tuple[str, str | None]]) -> list[Segment]:
        user, assistant = self.roles
        out: list[Segment] = []
        head = self.system + self.sep
        for question, answer in pairs:
            # LLaVA: role + ": " + message + sep for the user, then role + ":" for an empty
            # assistant message (the cue), or role + ": " + message + sep2.
            out.append(Segment(f"{head}{user}: {question}{self.sep}{assistant}:"))
            head = ""
            if answer is not None:
                out.append(Segment(f" {answer}{self.sep2}", learned=True))
        return out

    def _plain(self, pairs: list[tuple[str, str | None]]) -> list[Segment]:
        out: list[Segment] = []
        for question, answer in pairs:
            out.append(Segment(IMAGE_TOKEN * question.count(IMAGE_TOKEN)))
            if answer is not None:
                out.append(Segment(f"{answer}{self.sep}", learned=True))
        return out

    @property
    def jinja(self) -> str:
        """The Jinja ``chat_template`` rendering what :meth:`segments` renders, ``<s>`` in front.

        Saved model folders carry it (tokenizer and processor), so plain transformers'
        ``apply_chat_template`` gives the text mllm trains on. A message's content is a
        string (``<image>`` written in it, as mllm's records) or a list of
        ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts (an image part
        renders as ``<image>\\n`` for ``two``). ``two`` ends every user turn with the
        assistant's cue, as :meth:`segments` does.
        """
        image = "<image>\\n" if self.style == "two" else "<image>"
        text_of = (
            "{%- set ns = namespace(text='') -%}"
            "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
            "{%- else -%}{%- for part in message['content'] -%}"
            f"{{%- if part['type'] == 'image' -%}}{{%- set ns.text = ns.text + '{image}' -%}}"
            "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
            "{%- endfor -%}{%- endif -%}"
        )

        def quoted(value: str) -> str:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"

        if self.style == "plain":
            body = ("{%- if message['role'] == 'user' -%}{{ '<image>' * (ns.text.split('<image>') | length - 1) }}"
                    f"{{%- elif message['role'] == 'assistant' -%}}{{{{ ns.text + {quoted(self.sep)} }}}}"
                    "{%- endif -%}")
        else:
            user, assistant = self.roles
            body = ("{%- if message['role'] == 'user' -%}"
                    f"{{%- if loop.first -%}}{{{{ {quoted(self.system + self.sep)} }}}}{{%- endif -%}}"
                    f"{{{{ {quoted(user + ': ')} + ns.text + {quoted(self.sep + assistant + ':')} }}}}"
                    f"{{%- elif message['role'] == 'assistant' -%}}{{{{ ' ' + ns.text + {quoted(self.sep2)} }}}}"
                    "{%- endif -%}")
        return "{{- bos_token -}}{%- for message in messages -%}" + text_of + body + "{%- endfor -%}"

    def render(self, turns: Sequence[Turn | dict]) -> str:
        """The whole text of a conversation or prompt (segments joined)."""
        return "".join(segment.text for segment in self.segments(turns))

    def prompt(self, turns: Sequence[Turn | dict]) -> str:
        """The generation prompt of turns ending with a user turn."""
        return "".join(segment.text for segment in self.segments(turns, add_generation_prompt=True))


def _as_pairs(turns: Sequence[Turn | dict]) -> list[tuple[str, str | None]]:
    roles_contents = []
    for turn in turns:
        if isinstance(turn, dict):
            role = turn.get("role") or {"human": "user", "gpt": "assistant"}.get(turn.get("from", ""), turn.get("from"))
            content = turn.get("content", turn.get("value"))
        else:
            role, content = turn.role, turn.content
        roles_contents.append((role, content))
    pairs: list[tuple[str, str | None]] = []
    for index, (role, content) in enumerate(roles_contents):
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"turn {index} has role {role!r} but {expected!r} was expected; turns alternate user/assistant")
        if not isinstance(content, str):
            raise ValueError(f"turn {index}: content must be text")
        if expected == "user":
            pairs.append((content, None))
        else:
            pairs[-1] = (pairs[-1][0], content)
    return pairs


TEMPLATES: dict[str, ChatTemplate] = {
    "llava-1.5": ChatTemplate(name="llava-1.5", style="two", system=LLAVA_SYSTEM, roles=("USER", "ASSISTANT"),
                              sep=" ", sep2="</s>"),
    "plain": ChatTemplate(name="plain", style="plain", system="", roles=("", ""), sep="\n", sep2=""),
}


def get_template(name: str) -> ChatTemplate:
    """The template called ``name`` (``llava-1.5`` or ``plain``)."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; choose one of {sorted(TEMPLATES)}") from None
