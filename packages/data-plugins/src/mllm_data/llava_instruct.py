"""``llava-instruct`` (a transform op): the LLaVA paper's data generation from captions and boxes.

```yaml
- op: llava-instruct
  generator: {name: hf-local, path: /models/vicuna}   # or {name: openai, model: ...}
  types: [conversation, detail, complex]
```

For each image record, the generator model gets LLaVA-style instructions (a system
message and few-shot examples of captions and boxes with their answers) and writes a
multi-turn ``conversation``, a ``detail`` description (asked with one of LLaVA's
detailed-description questions) and a ``complex`` reasoning question with its answer,
each a new Conversation (``<id>-conversation``, ``<id>-detail``, ``<id>-complex``) on the
same image. Captions come from ``metadata.captions`` (a string or a list; e.g. extra keys
of a ``llava-json`` row), else from the last assistant turn (LLaVA's caption data, e.g.
the LCS-558K pre-training file); boxes from ``metadata.boxes``: ``[{"category": "person",
"bbox": [x1, y1, x2, y2]}, ...]`` or ``[label, x1, y1, x2, y2]`` rows, coordinates
normalized to 0-1 (as LLaVA's prompts give them). Replies are parsed in LLaVA's format
(``Question:`` / ``===`` / ``Answer:``); a reply that does not parse is a bad row. Replies
are cached in the stage folder (``llava_instruct_cache.jsonl``).
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from mllm import (
    IMAGE_TOKEN,
    ComponentConfig,
    ComponentContext,
    ComponentRef,
    Conversation,
    KeyedJsonlCache,
    Record,
    Turn,
    conversations_only,
)
from pydantic import Field, model_validator

GenerationType = Literal["conversation", "detail", "complex"]


class LlavaInstructConfig(ComponentConfig):
    """Keys of ``{op: llava-instruct, generator: {...}}``: LLaVA's instruction-data generation."""

    generator: ComponentRef = Field(description="the model that writes: {name: openai | hf-local, <its keys>}")
    types: list[GenerationType] = Field(["conversation", "detail", "complex"],
                                        description="samples to write per image: conversation, detail, complex")
    seed: int | None = Field(None, description="seed of the detailed-description question picked per image "
                                               "(default: the pipeline seed)")

    @model_validator(mode="after")
    def _some_types(self) -> LlavaInstructConfig:
        if not self.types or len(set(self.types)) != len(self.types):
            raise ValueError("types lists each of conversation, detail, complex at most once, and at least one")
        return self


# LLaVA-style generation prompts (written for mllm after the LLaVA paper's data pipeline:
# a system message per sample type and few-shot examples of context -> answer).
_SYSTEM_COMMON = (
    "You are an AI visual assistant looking at a single image. What you see is given as {what}. "
    "Answer as if you were seeing the image yourself, and never mention the descriptions or coordinates."
)
LLAVA_SYSTEM = {
    "conversation": _SYSTEM_COMMON.format(what="a few sentences describing it") + (
        "\n\nDesign a conversation between you and a person asking about this image. Ask diverse questions about the "
        "visual content (object types, counts, actions, locations, relative positions) and give the answers. Only ask "
        "questions with definite answers: what can be seen, or what can confidently be said not to be there. Also "
        "include a few more complex questions (background knowledge, events in the image) with detailed answers."
        "\n\nWrite each turn as 'Question:' or 'Answer:' on its own line followed by the text, and separate the turns "
        "with a line holding '==='."),
    "detail": _SYSTEM_COMMON.format(what="sentences describing it and the bounding boxes of its objects "
                                         "(object: [x1, y1, x2, y2], normalized to 0-1)") + (
        "\n\nDescribe the image in detail: the objects, their attributes, counts and positions, and what is going "
        "on. Write one or two paragraphs of plain description."),
    "complex": _SYSTEM_COMMON.format(what="sentences describing it and the bounding boxes of its objects "
                                          "(object: [x1, y1, x2, y2], normalized to 0-1)") + (
        "\n\nAsk one question about the image that needs reasoning beyond describing it (why something happens, "
        "what may happen next, what it suggests) and answer it in detail, step by step. Write 'Question:' on one "
        "line followed by the question, a line holding '===', then 'Answer:' followed by the answer."),
}
LLAVA_FEW_SHOT = {
    "conversation": [(
        "A man rides a bicycle down a city street.\nA cyclist passes parked cars on a sunny day.\n"
        "A person in a red jacket riding a bike.",
        "Question:\nWhat is the man in the image doing?\n===\nAnswer:\nThe man is riding a bicycle down a city "
        "street.\n===\nQuestion:\nWhat colour is his jacket?\n===\nAnswer:\nHe is wearing a red jacket.\n===\n"
        "Question:\nWhat should a cyclist watch out for on a street like this?\n===\nAnswer:\nParked cars line the "
        "street, so the cyclist should watch for doors opening suddenly and keep a safe distance from them.",
    )],
    "detail": [(
        "A kitchen counter with a bowl of apples.\nThree red apples in a white bowl.\n\n"
        "bowl: [0.310, 0.420, 0.690, 0.800]\napple: [0.360, 0.440, 0.480, 0.580]\n"
        "apple: [0.470, 0.430, 0.590, 0.570]\napple: [0.420, 0.520, 0.550, 0.660]",
        "The image shows a kitchen counter with a white bowl in the middle. The bowl holds three red apples, two "
        "side by side at the back and one in front of them. The counter around the bowl is otherwise empty.",
    )],
    "complex": [(
        "Two children build a sandcastle on a beach.\nWaves roll in close to the sandcastle.\n\n"
        "person: [0.120, 0.300, 0.350, 0.900]\nperson: [0.600, 0.280, 0.820, 0.880]",
        "Question:\nWhat might happen to the sandcastle soon, and why?\n===\nAnswer:\nThe waves are already rolling "
        "in close to the sandcastle, so as the tide rises they will likely reach it and wash part of it away. The "
        "children may need to build a wall of sand or move further up the beach to protect it.",
    )],
}
#: LLaVA's style of detailed-description questions; one is picked per image (seeded).
DETAIL_QUESTIONS = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Share a comprehensive rundown of the presented image.",
    "Offer a thorough analysis of the image.",
    "Explain the various aspects of the image before you.",
    "Clarify the contents of the displayed image with great detail.",
    "Characterize the image using a well-detailed description.",
    "Break down the elements of the image in a detailed manner.",
    "Walk through the important details of the image.",
    "Portray the image with a rich, descriptive narrative.",
    "Narrate the contents of the image with precision.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Illustrate the image through a descriptive explanation.",
    "Examine the image closely and share its details.",
    "Write an exhaustive depiction of the given image.",
)


def image_context(record: Conversation) -> str:
    """Captions (and boxes) of a record, as the generator reads them."""
    captions = record.metadata.get("captions")
    if captions is None:
        captions = [t.content for t in record.turns if t.role == "assistant"][-1:]
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions) or not any(c.strip() for c in captions):
        raise ValueError(f"record {record.id!r}: no captions (metadata.captions, or an assistant turn) to generate from")
    lines = [c.strip() for c in captions if c.strip()]
    boxes = record.metadata.get("boxes") or []
    box_lines = []
    for box in boxes:
        if isinstance(box, dict):
            label, coords = box.get("category", box.get("label")), box.get("bbox")
        elif isinstance(box, (list, tuple)) and len(box) == 5:
            label, coords = box[0], box[1:]
        else:
            raise ValueError(f"record {record.id!r}: box {box!r} is neither {{category, bbox}} nor [label, x1, y1, x2, y2]")
        if not isinstance(label, str) or not isinstance(coords, (list, tuple)) or len(coords) != 4:
            raise ValueError(f"record {record.id!r}: box {box!r} needs a label and 4 coordinates")
        box_lines.append(f"{label}: [{', '.join(f'{float(c):.3f}' for c in coords)}]")
    return "\n".join(lines) + ("\n\n" + "\n".join(box_lines) if box_lines else "")


def llava_prompt(kind: str, context: str) -> str:
    """The few-shot prompt of one sample type for one image."""
    parts = []
    for example_context, example_answer in LLAVA_FEW_SHOT[kind]:
        parts.append(f"Image descriptions:\n{example_context}\n\nResponse:\n{example_answer}")
    parts.append(f"Image descriptions:\n{context}\n\nResponse:\n")
    return "\n\n".join(parts)


_QA = re.compile(r"^\s*(Question|Answer)\s*:\s*", re.IGNORECASE)


def parse_qa(reply: str) -> list[Turn]:
    """LLaVA's ``Question:`` / ``===`` / ``Answer:`` format as alternating user/assistant turns."""
    turns: list[Turn] = []
    for block in re.split(r"\n\s*===+\s*\n?", reply.strip()):
        match = _QA.match(block)
        if not match:
            continue
        role = "user" if match.group(1).lower() == "question" else "assistant"
        text = block[match.end():].strip()
        if not text:
            continue
        if turns and turns[-1].role == role:
            continue  # two questions in a row: keep the first
        if not turns and role == "assistant":
            continue
        turns.append(Turn(role, text))
    if turns and turns[-1].role == "user":
        turns.pop()
    if not turns:
        raise ValueError(f"the generator's reply has no 'Question:' / '===' / 'Answer:' pairs: {reply[:120]!r}")
    return turns


class LlavaInstruct:
    """The ``llava-instruct`` op (see the module docstring)."""

    def __init__(self, config: LlavaInstructConfig) -> None:
        self.config = config

    @classmethod
    def example_config(cls, tmp_path: Any) -> dict[str, Any]:
        """For the conformance kit: a generator named, never called by the config check."""
        return {"generator": {"name": "openai", "model": "gpt-4-0613"}}

    def apply(self, records: list[Record], ctx: ComponentContext) -> list[Record]:
        return llava_instruct(self.config, records, ctx)


def llava_instruct(op: LlavaInstructConfig, records: list[Record], ctx: ComponentContext) -> list[Record]:
    """New Conversations written by ``op.generator`` from each image record's captions and boxes."""
    generator = None
    cache = KeyedJsonlCache(ctx.stage_dir / "llava_instruct_cache.jsonl")
    generator_id = op.generator.model_dump()
    seed = op.seed if op.seed is not None else ctx.seed
    out: list[Record] = []
    for record in records:
        made: list[Conversation] = []
        with ctx.report.row(file=ctx.where, row=record.id, id=record.id):
            conversation = conversations_only(record, "llava-instruct")
            if len(conversation.images) != 1:
                raise ValueError(f"record {record.id!r} has {len(conversation.images)} images; "
                                 "llava-instruct writes samples about one image")
            context = image_context(conversation)
            for kind in op.types:
                prompt = llava_prompt(kind, context)
                key = KeyedJsonlCache.key(["llava-instruct", generator_id, kind, LLAVA_SYSTEM[kind], prompt])
                reply = cache.get(key)
                if reply is None:
                    if generator is None:
                        generator = ctx.build_judge(op.generator, "generator")
                    reply = generator.complete(prompt, system=LLAVA_SYSTEM[kind])
                    if reply.strip():  # an empty reply is never cached: the next run asks again
                        cache.put(key, reply)
                if kind == "detail":
                    if not reply.strip():
                        raise ValueError(f"record {record.id!r}: the generator's detail description is empty")
                    question = random.Random(f"{seed}-{record.id}").choice(DETAIL_QUESTIONS)
                    turns = [Turn("user", question), Turn("assistant", reply.strip())]
                else:
                    turns = parse_qa(reply)
                    if kind == "complex":
                        turns = turns[:2]
                turns[0] = Turn("user", f"{IMAGE_TOKEN}\n{turns[0].content}")
                made.append(Conversation(id=f"{record.id}-{kind}", turns=tuple(turns), images=conversation.images,
                                         metadata={"source_id": record.id, "type": kind}, check_files=False))
        out.extend(made if len(made) == len(op.types) else [])
    return out
