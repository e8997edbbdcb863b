"""The ``steerlm`` prompt style: SteerLM's attribute-conditioned prompt, as mllm-dpo asked it.

```yaml
- id: eval-steerlm
  kind: eval
  models: [steerlm]
  steer: {verbosity: 2}          # = prompt_style: {name: steerlm, verbosity: 2}; `steer: {}` asks for 4 on all
  benchmarks: [...]
```

Every prompt gets the steering text (:func:`mllm_align.steerlm.attributes.steer_text`) for
the desired attributes (each 0-4, default 4) appended on new lines; an echoed steering
instruction or attribute line is stripped from each answer before it is scored (SteerLM
models tend to repeat it). ``models: [...]`` (beside the attributes) limits it to some of
the stage's models.
"""

from __future__ import annotations

from mllm import ComponentConfig
from pydantic import Field

from mllm_align.steerlm.attributes import ATTRIBUTES, add_steer, strip_steer_text


class SteerLMStyleConfig(ComponentConfig):
    """Keys of ``steer: {...}`` / ``prompt_style: {name: steerlm, ...}``: the desired attributes."""

    helpfulness: int = Field(4, ge=0, le=4)
    correctness: int = Field(4, ge=0, le=4)
    coherence: int = Field(4, ge=0, le=4)
    complexity: int = Field(4, ge=0, le=4)
    verbosity: int = Field(4, ge=0, le=4)

    def attributes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ATTRIBUTES}


class SteerLMStyle:
    """The ``steerlm`` prompt style (see the module docstring)."""

    def __init__(self, config: SteerLMStyleConfig | None = None) -> None:
        self.config = config or SteerLMStyleConfig()

    def apply(self, prompt: str) -> str:
        return add_steer(prompt, self.config.attributes())

    def clean(self, answer: str) -> str:
        return strip_steer_text(answer)
