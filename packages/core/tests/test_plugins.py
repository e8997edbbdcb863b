"""The plugin registry: lookup, clashes, broken plugins, autoload, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
from mllm import hookimpl
from mllm.plugins.registry import DuplicateComponentError, Registry, UnknownComponentError
from mllm.plugins.specs import ComponentSpec


def make_plugin(**hooks):
    module = types.ModuleType("inline_plugin")
    for name, function in hooks.items():
        setattr(module, name, hookimpl(function))
    return module


def dataset_plugin(name, impl="json:loads"):
    def mllm_register_datasets(register):
        register(ComponentSpec(name=name, impl=impl))

    return make_plugin(mllm_register_datasets=mllm_register_datasets)


def test_builtins_are_registered_through_hooks():
    registry = Registry(autoload=False)
    spec = registry.get("model", "llava")
    assert spec.distribution == "mllm-core"
    assert spec.impl == "mllm.models.llava.adapter:LlavaAdapter"


def test_same_name_from_two_distributions_is_an_error_naming_both_and_dist_name_picks_one():
    registry = Registry(autoload=False)
    registry.register_plugin(dataset_plugin("shapes", "json:loads"), distribution="mllm-alpha")
    registry.register_plugin(dataset_plugin("shapes", "json:dumps"), distribution="mllm-beta")
    with pytest.raises(DuplicateComponentError) as error:
        registry.get("dataset", "shapes")
    assert "mllm-alpha" in str(error.value) and "mllm-beta" in str(error.value)
    assert "'mllm-beta:shapes'" in str(error.value)
    assert registry.get("dataset", "mllm-beta:shapes").load() is json.dumps
    assert registry.clashes() == [("dataset", "shapes", ["mllm-alpha", "mllm-beta"])]


def test_names_are_unique_per_kind_only():
    registry = Registry(autoload=False)
    registry.register_plugin(dataset_plugin("llava"), distribution="mllm-alpha")
    assert registry.get("dataset", "llava").distribution == "mllm-alpha"
    assert registry.get("model", "llava").distribution == "mllm-core"


def test_unknown_name_suggests_close_names():
    registry = Registry(autoload=False)
    registry.register_plugin(dataset_plugin("easyvqa"), distribution="mllm-alpha")
    with pytest.raises(UnknownComponentError, match="did you mean 'easyvqa'"):
        registry.get("dataset", "easyvq")


def test_aliases_resolve():
    def mllm_register_datasets(register):
        register(ComponentSpec(name="scienceqa", impl="json:loads", aliases=("sqa",)))

    registry = Registry(autoload=False)
    registry.register_plugin(make_plugin(mllm_register_datasets=mllm_register_datasets), distribution="d")
    assert registry.get("dataset", "sqa").name == "scienceqa"


def test_a_plugin_whose_hook_raises_is_reported_and_leaves_nothing_behind():
    def mllm_register_datasets(register):
        register(ComponentSpec(name="half", impl="json:loads"))
        raise RuntimeError("boom in hook")

    registry = Registry(autoload=False)
    assert not registry.register_plugin(make_plugin(mllm_register_datasets=mllm_register_datasets),
                                        distribution="mllm-broken", version="0.3")
    assert [f.distribution for f in registry.failures] == ["mllm-broken"]
    assert "boom in hook" in registry.failures[0].cause
    with pytest.raises(UnknownComponentError, match="failed to load.*mllm-broken"):
        registry.get("dataset", "half")


def test_hook_with_an_argument_the_spec_lacks_is_rejected_with_its_name():
    def mllm_register_datasets(register, colour):
        pass

    registry = Registry(autoload=False)
    assert not registry.register_plugin(make_plugin(mllm_register_datasets=mllm_register_datasets), distribution="bad")
    assert "colour" in registry.failures[0].cause


def test_misspelt_hook_name_is_rejected():
    def mllm_register_dataset(register):  # missing the s
        pass

    registry = Registry(autoload=False)
    assert not registry.register_plugin(make_plugin(mllm_register_dataset=mllm_register_dataset), distribution="bad")
    assert "mllm_register_dataset" in registry.failures[0].cause


def test_registering_one_name_twice_in_one_distribution_is_a_failure():
    def mllm_register_datasets(register):
        register(ComponentSpec(name="x", impl="json:loads"))
        register(ComponentSpec(name="y", impl="json:loads", aliases=("x",)))

    registry = Registry(autoload=False)
    assert not registry.register_plugin(make_plugin(mllm_register_datasets=mllm_register_datasets), distribution="d")
    assert "twice" in registry.failures[0].cause


def test_unregister_distribution():
    registry = Registry(autoload=False)
    registry.register_plugin(dataset_plugin("temp"), distribution="mllm-temp")
    registry.unregister_distribution("mllm-temp")
    assert "temp" not in registry.names("dataset")


def _run_python(code: str, **env) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, check=True)
    return result.stdout


def test_importing_every_plugin_module_leaves_torch_out():
    code = (
        "import sys\n"
        "from importlib import metadata\n"
        "import mllm.plugins.builtin, mllm.cli.main, mllm.plugins.registry\n"
        "mods = [ep.load() for ep in metadata.entry_points(group='mllm')]\n"
        "mllm.plugins.registry.Registry()\n"
        "heavy = [m for m in ('torch', 'transformers', 'deepspeed', 'peft') if m in sys.modules]\n"
        "print(len(mods), heavy)\n"
    )
    count, heavy = _run_python(code).strip().split(" ", 1)
    assert int(count) >= 3, "mllm-data, mllm-align and mllm-eval should all be installed"
    assert heavy == "[]"


def test_autoload_off_keeps_only_core_components():
    code = "import json, mllm.plugins.registry as p; print(json.dumps(sorted({s.distribution for s in p.Registry().specs()})))"
    assert json.loads(_run_python(code, MLLM_DISABLE_PLUGIN_AUTOLOAD="1")) == ["mllm-core"]
    with_plugins = json.loads(_run_python(code))
    assert "mllm-core" in with_plugins and len(with_plugins) > 1
