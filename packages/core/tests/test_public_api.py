"""The plugin API: ``mllm.__all__`` is documented in docs/api.md, lazy and torch-free."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mllm
import pytest

API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"
# the helpers that run models: they may import torch when touched (docs/api.md marks them "(torch)")
TORCH_HELPERS = {"answer_logprobs", "AnswerLogprobs", "train_method", "SampleGenerator", "Prompt", "pack_sequences",
                 "pack_pairs", "packed_model_inputs", "layout_support"}


def documented_names() -> list[str]:
    return re.findall(r"^- `([A-Za-z_][A-Za-z0-9_]*)`:", API_DOC.read_text(), flags=re.MULTILINE)


def test_docs_api_lists_exactly_the_public_names():
    documented = documented_names()
    assert len(documented) == len(set(documented)), "docs/api.md lists a name twice"
    missing = sorted(set(mllm.__all__) - set(documented))
    extra = sorted(set(documented) - set(mllm.__all__))
    assert not missing, f"in mllm.__all__ but not in docs/api.md: {missing}"
    assert not extra, f"in docs/api.md but not in mllm.__all__: {extra}"


def test_the_torch_helpers_are_marked_in_the_docs():
    text = API_DOC.read_text()
    for name in TORCH_HELPERS:
        assert re.search(rf"^- `{name}`: \*\(torch\)\*", text, flags=re.MULTILINE), name


def test_every_public_name_resolves_and_unknown_names_say_where_to_look():
    for name in mllm.__all__:
        assert getattr(mllm, name) is not None, name
    assert set(mllm.__all__) <= set(dir(mllm))
    with pytest.raises(AttributeError, match="the plugin API is mllm.__all__"):
        mllm.not_a_public_name  # noqa: B018


def test_every_error_of_mllm_errors_is_public():
    from mllm import errors

    classes = [name for name in errors.__all__ if isinstance(getattr(errors, name), type)]
    assert set(classes) <= set(mllm.__all__)
    assert all(issubclass(getattr(mllm, name), mllm.MllmError) for name in classes)


def test_touching_records_protocols_configs_and_errors_leaves_torch_unimported():
    """In a fresh interpreter: everything in mllm.__all__ but the model-running helpers."""
    code = (
        "import json, sys, mllm\n"
        f"skipped = {sorted(TORCH_HELPERS)!r}\n"
        "touched = [name for name in mllm.__all__ if name not in skipped and getattr(mllm, name) is not None]\n"
        "heavy = [m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules]\n"
        "print(json.dumps({'touched': touched, 'heavy': heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"touching the public API imported {report['heavy']}"
    for name in ("Conversation", "Preference", "EvalItem", "ModelAdapter", "Method", "TrainContext", "StageContext",
                 "ComponentConfig", "DatasetConfig", "StageConfig", "MllmError", "ConfigError", "DataReport"):
        assert name in report["touched"], name


def test_the_protocols_are_runtime_checkable_and_the_tiny_llava_satisfies_every_model_part(tiny_llava):
    from mllm.models.llava.adapter import LlavaAdapter

    for protocol in (mllm.ModelAdapter, mllm.ModelHandle, mllm.PromptEncoder, mllm.ImageEncoder):
        assert isinstance(tiny_llava, protocol), protocol.__name__
    assert isinstance(LlavaAdapter, mllm.ModelAdapterClass) and isinstance(LlavaAdapter, mllm.HasSourcePath)

    class TextOnly:
        model = processor = tokenizer = template = None

    assert not isinstance(TextOnly(), mllm.ModelAdapter)


@pytest.fixture(scope="module")
def tiny_llava():
    from mllm.testing import load_tiny_llava

    return load_tiny_llava()
