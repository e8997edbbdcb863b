"""Meta-tests that keep the plugin system honest: every hook documented and exercised."""

from __future__ import annotations

import inspect
import types

from mllm import hookimpl
from mllm.plugins import hookspecs
from mllm.plugins.registry import Registry
from mllm.plugins.specs import COMPONENT_KINDS, ComponentSpec

HOOKS = [name for name in dir(hookspecs) if name.startswith("mllm_register_")]


def test_one_hook_per_component_kind():
    assert sorted(HOOKS) == sorted(hookspecs.HOOK_FOR_KIND.values())
    assert set(hookspecs.HOOK_FOR_KIND) == set(COMPONENT_KINDS)


def test_every_hook_is_documented_with_an_example_and_takes_register():
    for name in HOOKS:
        function = getattr(hookspecs, name)
        doc = inspect.getdoc(function) or ""
        assert "Example" in doc and "register(ComponentSpec(" in doc, name
        assert list(inspect.signature(function).parameters) == ["register"], name


def test_every_hook_registers_a_component_of_its_kind():
    plugin = types.ModuleType("all_hooks")
    for kind, hook_name in hookspecs.HOOK_FOR_KIND.items():
        def hook(register, _kind=kind):
            register(ComponentSpec(name=f"demo-{_kind}", impl="json:loads"))

        hook.__name__ = hook_name
        setattr(plugin, hook_name, hookimpl(hook))
    registry = Registry(autoload=False, builtins=False)
    assert registry.register_plugin(plugin, distribution="mllm-demo", version="2.0")
    for kind in COMPONENT_KINDS:
        spec = registry.get(kind, f"demo-{kind}")
        assert (spec.kind, spec.distribution, spec.version) == (kind, "mllm-demo", "2.0")
