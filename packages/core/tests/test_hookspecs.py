"""Meta-tests that keep the plugin system honest: every hook documented and exercised."""

from __future__ import annotations

import inspect
import types
from typing import get_args

from mllm import hookimpl, interfaces
from mllm.plugins import hookspecs
from mllm.plugins.kinds import KINDS, ComponentKind
from mllm.plugins.registry import Registry
from mllm.plugins.specs import COMPONENT_KINDS, ComponentSpec

HOOKS = [name for name in dir(hookspecs) if name.startswith("mllm_register_")]


def test_one_hook_per_component_kind():
    assert sorted(HOOKS) == sorted(kind.hook for kind in KINDS)
    assert get_args(ComponentKind) == COMPONENT_KINDS == tuple(kind.name for kind in KINDS)
    assert hookspecs.HOOK_FOR_KIND == {kind.name: kind.hook for kind in KINDS}


def test_every_kind_names_a_runtime_checkable_protocol_of_the_interfaces():
    for kind in KINDS:
        protocol = kind.load_protocol()
        assert protocol is getattr(interfaces, kind.protocol) and getattr(protocol, "_is_protocol", False), kind
        assert getattr(protocol, "_is_runtime_protocol", False), kind
        assert kind.named_by, kind


def test_every_hook_is_documented_with_an_example_and_takes_register():
    for name in HOOKS:
        function = getattr(hookspecs, name)
        doc = inspect.getdoc(function) or ""
        assert "Example" in doc and "register(ComponentSpec(" in doc, name
        assert list(inspect.signature(function).parameters) == ["register"], name


def test_every_hook_registers_a_component_of_its_kind():
    plugin = types.ModuleType("all_hooks")
    for kind, hook_name in ((k.name, k.hook) for k in KINDS):
        def hook(register, _kind=kind):
            register(ComponentSpec(name=f"demo-{_kind}", impl="json:loads"))

        hook.__name__ = hook_name
        setattr(plugin, hook_name, hookimpl(hook))
    registry = Registry(autoload=False, builtins=False)
    assert registry.register_plugin(plugin, distribution="mllm-demo", version="2.0")
    for kind in COMPONENT_KINDS:
        spec = registry.get(kind, f"demo-{kind}")
        assert (spec.kind, spec.distribution, spec.version) == (kind, "mllm-demo", "2.0")
