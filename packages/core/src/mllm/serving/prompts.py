"""Chat messages to the turns and images the model answers, as the eval stage builds them.

Each user message becomes one user turn: its parts in order, an image part as
``<image>``, joined by newlines, so ``[image, text "Q"]`` is ``"<image>\\nQ"``: exactly
the prompt a benchmark item ``"<image>\\nQ"`` gives, hence the same answer. Consecutive
messages of one role are joined the same way. The chat template has its own system
prompt, so a ``system`` (or ``developer``) message is put in front of the first user
turn. The conversation must end with a user turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mllm.records import IMAGE_TOKEN, Turn
from mllm.serving.images import ImageStore
from mllm.serving.schema import ApiError, ImagePart, Message


@dataclass
class ChatPrompt:
    """What one request asks: user/assistant turns (ending with a user turn) and image files in order."""

    turns: tuple[Turn, ...]
    images: tuple[Path, ...]
    owned: list[Path] = field(default_factory=list)  # temporary image files to release when answered


def build_prompt(messages: list[Message], store: ImageStore, *, max_images: int) -> ChatPrompt:
    """The :class:`ChatPrompt` of ``messages``; an :class:`ApiError` (400) for what the model cannot take."""
    system: list[str] = []
    merged: list[tuple[str, list[str]]] = []
    images: list[Path] = []
    owned: list[Path] = []
    try:
        for index, message in enumerate(messages):
            texts: list[str] = []
            for part_index, part in enumerate(message.parts()):
                param = f"messages[{index}].content[{part_index}]"
                if isinstance(part, ImagePart):
                    if message.role != "user":
                        raise ApiError(400, f"{param}: only user messages may hold images", param=param)
                    if len(images) >= max_images:
                        raise ApiError(400, f"{param}: more than {max_images} images in one request (--max-images)",
                                       param=param, code="too_many_images")
                    path, temporary = store.resolve(part.image_url.url, f"{param}.image_url")
                    images.append(path)
                    if temporary:
                        owned.append(path)
                    texts.append(IMAGE_TOKEN)
                else:
                    if IMAGE_TOKEN in part.text:
                        raise ApiError(400, f"{param}: the text holds {IMAGE_TOKEN!r}; send images as image_url parts",
                                       param=param)
                    texts.append(part.text)
            if message.role in ("system", "developer"):
                system.extend(texts)
                continue
            if merged and merged[-1][0] == message.role:
                merged[-1][1].extend(texts)
            else:
                merged.append((message.role, texts))
        if not merged or merged[0][0] != "user":
            raise ApiError(400, "messages: the conversation must start with a user message (after any system message)",
                           param="messages")
        if merged[-1][0] != "user":
            raise ApiError(400, "messages: the last message must be the user's; the model answers it", param="messages")
        turns = [Turn(role, "\n".join(texts)) for role, texts in merged]  # type: ignore[arg-type]
        if system:
            turns[0] = Turn("user", "\n".join(system + [turns[0].content]))
        for turn in turns:
            if turn.role == "user" and not turn.content.strip():
                raise ApiError(400, "messages: a user message is empty", param="messages")
    except BaseException:
        store.release(owned)
        raise
    return ChatPrompt(tuple(turns), tuple(images), owned)
