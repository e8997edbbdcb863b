"""mllm-eval: mllm plugins for benchmarks (POPE, ScienceQA, MM-Vet, LLaVA-Bench, MT-Bench, SHR, ...) and judges.

What other distributions may import from it is ``__all__`` (imported on first use, so
loading the plugin stays light), always as ``from mllm_eval import <name>``; every other
module and name is internal. It offers:

- ``build_judge``: a judge from ``{"name": ..., <its keys>}`` through the registry (what a
  benchmark or score rule that grades with a judge needs);
- ``JudgeError``: what a judge raises when it cannot answer;
- ``normalize_yes_no`` and ``pope_metrics``: yes/no answer parsing and POPE's metrics, for
  other yes/no hallucination benchmarks.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_PUBLIC = {
    "JudgeError": "mllm_eval.judges",
    "build_judge": "mllm_eval.judges",
    "normalize_yes_no": "mllm_eval.pope_metrics",
    "pope_metrics": "mllm_eval.pope_metrics",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mllm_eval' has no attribute {name!r}; its public names are mllm_eval.__all__")
