"""The core's prompt styles (``prompt_style: {name: ...}`` of an eval stage).

- ``plain``: prompts as the benchmark wrote them, answers as the model gave them (what an
  eval stage without ``prompt_style`` does).
- ``instruction``: a fixed ``text`` added to every prompt, ``after`` it (default, on a new
  line) or ``before`` it (after the ``<image>`` placeholder, so the image stays first);
  answers are scored as given.

Plugins add styles through ``mllm_register_prompt_styles`` (mllm-align: ``steerlm``,
SteerLM's attribute-conditioned prompt).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mllm.interfaces import ComponentConfig
from mllm.records import IMAGE_TOKEN


class PlainConfig(ComponentConfig):
    """``prompt_style: {name: plain}`` takes no keys."""


class Plain:
    """Prompts and answers unchanged."""

    def __init__(self, config: PlainConfig | None = None) -> None:
        self.config = config or PlainConfig()

    def apply(self, prompt: str) -> str:
        return prompt

    def clean(self, answer: str) -> str:
        return answer


class InstructionConfig(ComponentConfig):
    """Keys of ``prompt_style: {name: instruction, text: ...}``."""

    text: str = Field(min_length=1, description="the instruction added to every prompt")
    position: Literal["after", "before"] = Field("after", description="after the prompt (on a new line) or before "
                                                                      "it (after the image placeholder)")


class Instruction:
    """A fixed instruction added to every prompt (see the module docstring)."""

    def __init__(self, config: InstructionConfig) -> None:
        self.config = config

    @classmethod
    def example_config(cls, tmp_path: Any) -> dict[str, Any]:
        """For the conformance kit: a short instruction."""
        return {"text": "Answer with one word."}

    def apply(self, prompt: str) -> str:
        text = self.config.text.strip()
        if self.config.position == "after":
            return f"{prompt.rstrip()}\n{text}"
        if prompt.startswith(IMAGE_TOKEN):
            rest = prompt[len(IMAGE_TOKEN):].lstrip("\n")
            return f"{IMAGE_TOKEN}\n{text}\n{rest}"
        return f"{text}\n{prompt}"

    def clean(self, answer: str) -> str:
        return answer
