"""mllm-data: mllm plugins for datasets (easy-VQA, LLaVA JSON, ScienceQA, ...).

What other distributions may import from it is ``__all__`` (imported on first use, so
loading the plugin stays light), always as ``from mllm_data import <name>``; every other
module and name is internal. It offers:

- the easy-VQA helpers a benchmark or a dataset built on easy-VQA shares:
  ``format_prompt`` (the question as the model sees it), ``select_rows``, ``split_files``
  and ``package_data_dir`` (the installed ``easy_vqa`` package's data);
- ``EasyVQANamed`` / ``EasyVQANamedConfig``: easy-VQA's named individuals ("who is
  this?"), whose test split the ``easyvqa-named`` benchmark asks, and ``check_names``
  (the rule its ``names`` key follows);
- the datasets a benchmark reuses to build its items: ``ScienceQA`` / ``ScienceQAConfig``
  (LLaVA's ScienceQA files) and ``ImageQAFolder`` / ``ImageQAFolderConfig``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_PUBLIC = {
    "EasyVQANamed": "mllm_data.easyvqa_named",
    "EasyVQANamedConfig": "mllm_data.easyvqa_named",
    "ImageQAFolder": "mllm_data.image_qa_folder",
    "ImageQAFolderConfig": "mllm_data.image_qa_folder",
    "ScienceQA": "mllm_data.scienceqa",
    "ScienceQAConfig": "mllm_data.scienceqa",
    "check_names": "mllm_data.easyvqa_named",
    "format_prompt": "mllm_data.easyvqa",
    "package_data_dir": "mllm_data.easyvqa",
    "select_rows": "mllm_data.easyvqa",
    "split_files": "mllm_data.easyvqa",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mllm_data' has no attribute {name!r}")
