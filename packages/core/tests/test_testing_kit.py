# ruff: noqa: F811 - the kit's fixtures are imported by name and used as arguments
"""The test kit itself: its fixtures work, and its checks catch what they promise to."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from mllm.testing import (  # noqa: F401 - fixtures used by name
    TINY_LLAVA,
    ConformanceError,
    check_plugin,
    example_records,
    plugin_checks,
    plugin_registry,
    run_pipeline,
    tiny_llava,
)

GOOD = '''
from mllm import hookimpl
from mllm.plugins.specs import ComponentSpec

@hookimpl
def mllm_register_benchmarks(register):
    register(ComponentSpec(name="kitbench", impl="{module}_impl:Bench", config="{module}_impl:BenchConfig"))
'''

IMPL = '''
from typing import ClassVar
from pydantic import ConfigDict
from mllm.interfaces import ComponentConfig
from mllm.records import EvalItem

class BenchConfig(ComponentConfig):
    n: int = 2
    {extra_config}

class Bench:
    metric_keys: ClassVar[tuple] = ("accuracy", {extra_key})

    def __init__(self, config):
        self.config = config

    def items(self):
        return [EvalItem(id=str(i), prompt="2+2?", answer="4") for i in range(self.config.n)]

    def score(self, items, answers):
        return {{"accuracy": sum(answers[i.id] == i.answer for i in items) / len(items)}}
'''


def write_plugin(tmp_path, monkeypatch, name, *, plugin_head="", extra_config="", extra_key=""):
    (tmp_path / f"{name}.py").write_text(plugin_head + GOOD.format(module=name))
    (tmp_path / f"{name}_impl.py").write_text(textwrap.dedent(IMPL.format(extra_config=extra_config,
                                                                         extra_key=extra_key)))
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in (name, f"{name}_impl"):
        sys.modules.pop(module, None)
    return name


def test_a_conforming_plugin_passes(tmp_path, monkeypatch):
    name = write_plugin(tmp_path, monkeypatch, "kit_good")
    ran = check_plugin(name, distribution="kit-good")
    assert ran == ["imports-without-torch[kit_good]", "registers[kit_good]", "resolves[benchmark:kitbench]",
                   "protocol[benchmark:kitbench]", "config[benchmark:kitbench]", "score[benchmark:kitbench]"]


def test_failures_are_all_reported_with_how_to_fix(tmp_path, monkeypatch):
    name = write_plugin(tmp_path, monkeypatch, "kit_bad", plugin_head="import torch\n",
                        extra_config="model_config = ConfigDict(extra='allow')", extra_key='"recall"')
    with pytest.raises(ConformanceError) as info:
        check_plugin(name, distribution="kit-bad")
    message = str(info.value)
    assert "3 of 6 conformance checks failed" in message
    assert "imports torch" in message and "move heavy imports" in message
    assert "accepts unknown keys" in message
    assert "did not return declared metric_keys ['recall']" in message


def test_example_values_come_from_examples_then_example_config(tmp_path, monkeypatch):
    name = write_plugin(tmp_path, monkeypatch, "kit_examples")
    checks = {c.id: c for c in plugin_checks(name, distribution="kit-examples", examples={"kitbench": {"n": 1}})}
    with pytest.raises(ConformanceError, match="items\\(\\) gave 1 item"):
        checks["score[benchmark:kitbench]"]()


def test_method_check_catches_a_loss_without_gradients(tmp_path, monkeypatch):
    (tmp_path / "kit_method.py").write_text(textwrap.dedent('''
        from mllm import hookimpl
        from mllm.plugins.specs import ComponentSpec

        @hookimpl
        def mllm_register_methods(register):
            register(ComponentSpec(name="flat", impl="kit_method_impl:Flat"))
    '''))
    (tmp_path / "kit_method_impl.py").write_text(textwrap.dedent('''
        import torch

        class Flat:
            record_kind = "conversation"
            def __init__(self): pass
            def setup(self, adapter):
                self.adapter = adapter
                return adapter.model
            def prepare(self, context): pass
            def collate(self, records): return {"n": len(records)}
            def loss(self, model, batch): return torch.tensor(1.0), {}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    checks = {c.id: c for c in plugin_checks("kit_method", distribution="kit-method")}
    with pytest.raises(ConformanceError, match="does not depend on any trainable parameter"):
        checks["train-step[method:flat]"]()


def test_plugin_registry_registers_and_cleans_up(tmp_path, monkeypatch, plugin_registry):
    from mllm.plugins.registry import get_registry

    name = write_plugin(tmp_path, monkeypatch, "kit_registry")
    import importlib

    plugin_registry.register(importlib.import_module(name), distribution="kit-registry", version="1.0")
    assert get_registry() is plugin_registry
    assert plugin_registry.get("benchmark", "kit-registry:kitbench").version == "1.0"
    plugin_registry.close()
    assert "kitbench" not in plugin_registry.names("benchmark")
    from mllm import hookimpl

    class Broken:
        @hookimpl
        def mllm_register_datasets(self, register):
            raise ValueError("no data today")

    with pytest.raises(RuntimeError, match="registering .* as bad failed: ValueError: no data today"):
        plugin_registry.register(Broken(), distribution="bad")


def test_run_pipeline_trains_a_stage_on_the_tiny_model(tmp_path, run_pipeline):
    from mllm.data.recordio import write_records

    write_records(tmp_path / "train.jsonl", example_records("conversation", tmp_path / "img", count=2))
    pipeline = {"name": "kit", "model": {"name": "llava", **TINY_LLAVA}, "stages": [{
        "id": "sft", "kind": "train", "method": {"name": "sft"},
        "data": {"name": "records-jsonl", "path": str(tmp_path / "train.jsonl")},
        "train": {"max_steps": 1, "batch_size": 2, "logging_steps": 1}}]}
    run_dir = run_pipeline(json.dumps(pipeline, indent=2))
    assert run_dir == tmp_path / "runs" / "kit" and (run_dir / "sft" / "COMPLETE").is_file()


def test_tiny_llava_is_small_and_satisfies_the_protocol(tiny_llava):
    from mllm.interfaces import ModelAdapter

    assert isinstance(tiny_llava, ModelAdapter)
    assert tiny_llava.num_image_tokens == 4
    assert sum(p.numel() for p in tiny_llava.model.parameters()) < 200_000


def test_importing_the_kit_leaves_torch_out():
    import subprocess

    code = "import sys, mllm.testing; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


OLD_ADAPTER = '''
from mllm import ComponentSpec, hookimpl

@hookimpl
def mllm_register_models(register):
    register(ComponentSpec(name="old-model", impl="kit_old_model:OldAdapter"))

class OldAdapter:
    """Implements only what the first ModelAdapter Protocol listed."""

    def __init__(self):
        self.model = self.processor = self.tokenizer = None

    @classmethod
    def from_config(cls, config, seed=0):
        return cls()

    @classmethod
    def load(cls, path, *, config=None):
        return cls()

    def module_names(self):
        return {}

    def encode_images(self, pixel_values):
        return pixel_values

    def save(self, path):
        pass
'''


def test_an_adapter_with_only_the_old_protocol_fails_naming_the_missing_members(tmp_path, monkeypatch):
    (tmp_path / "kit_old_model.py").write_text(OLD_ADAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("kit_old_model", None)
    with pytest.raises(ConformanceError) as info:
        check_plugin("kit_old_model", distribution="kit-old", kinds=["model"])
    message = str(info.value)
    assert ("protocol[model:old-model]: ConformanceError: model 'old-model' (kit_old_model:OldAdapter): does not "
            "satisfy mllm.interfaces.ModelAdapter: missing embed_inputs, encode_conversation, encode_prompt, "
            "load_images") in message
    assert ("load[model:old-model]: ConformanceError: model 'old-model': the built object does not satisfy "
            "mllm.interfaces.ModelAdapter: missing bos_token_id, embed_inputs, encode_conversation, encode_prompt, "
            "eos_token_id, image_token_id, load_images, max_length, num_image_tokens, pad_token_id, template") in message
    assert "stages[model:old-model]" in message


BROKEN_PROMPTS = '''
from mllm import ComponentSpec, hookimpl
from mllm.models.llava.adapter import LlavaAdapter

@hookimpl
def mllm_register_models(register):
    register(ComponentSpec(name="llava", impl="kit_broken_model:PromptlessLlava",
                           config="mllm.models.llava.config:LlavaModelConfig"))

class PromptlessLlava(LlavaAdapter):
    """Every member is there, but encode_prompt (which DPO and the engine use) is broken."""

    def encode_prompt(self, turns):
        raise NotImplementedError("no prompts here")
'''


def test_the_stages_check_names_the_stage_an_adapter_breaks(tmp_path, monkeypatch):
    (tmp_path / "kit_broken_model.py").write_text(BROKEN_PROMPTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("kit_broken_model", None)
    checks = {c.id: c for c in plugin_checks("kit_broken_model", distribution="kit-broken",
                                             examples={"llava": TINY_LLAVA}, kinds=["model"])}
    checks["protocol[model:llava]"]()  # the members are all there
    with pytest.raises(ConformanceError, match=r"stage 'dpo' of the kit's pipeline failed: NotImplementedError: "
                                               r"no prompts here"):
        checks["stages[model:llava]"]()
