"""Lightweight component specs: names and "module:attr" strings, nothing imported.

A plugin's ``plugin.py`` registers specs only; the implementation module is imported
when a pipeline resolves the name, so ``mllm --help`` stays fast however many plugins
are installed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from mllm.errors import SpecImportError

# the kinds live in one table (mllm.plugins.kinds); re-exported here where specs are made
from mllm.plugins.kinds import COMPONENT_KINDS, ComponentKind

__all__ = ["COMPONENT_KINDS", "ComponentKind", "ComponentSpec", "SpecImportError", "import_string"]


def import_string(target: str, *, what: str) -> Any:
    """Import ``"package.module:attr"``; errors say which component asked for it."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SpecImportError(f"{what}: {target!r} is not of the form 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecImportError(f"{what}: cannot import module {module_name!r}: {error}") from error
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as error:
            raise SpecImportError(f"{what}: module {module_name!r} has no attribute {attr!r}") from error
    return obj


@dataclass(frozen=True)
class ComponentSpec:
    """What a plugin registers: a name and where its implementation lives.

    Args:
        name: the name pipelines use (``sft``, ``easyvqa``); unique per kind.
        impl: ``"package.module:Class"`` of the implementation, imported lazily.
        config: ``"package.module:Model"`` of its pydantic config (unknown keys are
            rejected); ``None`` when the component takes no options.
        aliases: other names that resolve to this spec.
        description: one line for ``mllm plugins``.
        kind, distribution, version: filled in by the plugin manager at registration.
    """

    name: str
    impl: str
    config: str | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    kind: ComponentKind | None = None
    distribution: str = "unknown"
    version: str = "0"
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"

    def load(self) -> Any:
        """Import and return the implementation object."""
        return import_string(self.impl, what=f"{self.kind} {self.name!r} from {self.distribution}")

    def load_config(self) -> Any:
        """Import and return the config model class (or ``None``)."""
        if self.config is None:
            return None
        return import_string(self.config, what=f"{self.kind} {self.name!r} config from {self.distribution}")
