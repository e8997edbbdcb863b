"""The plugin manager facade: loading, lookup by name, errors and listing.

The rest of mllm never calls pluggy hooks directly; it asks a :class:`Registry`
for a component by kind and name. Entry points in the ``mllm`` group are loaded unless
``MLLM_DISABLE_PLUGIN_AUTOLOAD=1``; the core's own components register through the same
hooks (see :mod:`mllm.plugins.builtin`). A plugin that fails to import or register is recorded
in :attr:`Registry.failures` and never stops the others from loading.
"""

from __future__ import annotations

import difflib
import os
import traceback
from dataclasses import dataclass, replace
from importlib import metadata
from types import ModuleType
from typing import Any, Iterable

import pluggy

from mllm.errors import DuplicateComponentError, PluginError, UnknownComponentError  # noqa: F401 - imported from here too
from mllm.plugins import hookspecs
from mllm.plugins.kinds import COMPONENT_KINDS, KINDS, ComponentKind
from mllm.plugins.specs import ComponentSpec

ENTRY_POINT_GROUP = "mllm"
AUTOLOAD_ENV = "MLLM_DISABLE_PLUGIN_AUTOLOAD"
CORE_DISTRIBUTION = "mllm-core"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered, and why."""

    distribution: str
    version: str
    entry_point: str
    cause: str
    detail: str = ""
    requirement: str = ""  # the plugin's mllm-core range when it excludes the installed core


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "0"


class Registry:
    """All components known to this process, by kind and name.

    Args:
        autoload: load entry points of the ``mllm`` group; ``None`` reads
            ``MLLM_DISABLE_PLUGIN_AUTOLOAD`` (``1`` turns autoload off).
        builtins: register the core's own components.
    """

    def __init__(self, *, autoload: bool | None = None, builtins: bool = True) -> None:
        if autoload is None:
            autoload = os.environ.get(AUTOLOAD_ENV, "") not in ("1", "true", "yes")
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._specs: dict[ComponentKind, list[ComponentSpec]] = {kind: [] for kind in COMPONENT_KINDS}
        self.failures: list[PluginFailure] = []
        if builtins:
            from mllm.plugins import builtin

            self.register_plugin(builtin, distribution=CORE_DISTRIBUTION, version=_distribution_version(CORE_DISTRIBUTION))
        if autoload:
            self._load_entry_points()

    # -- loading -----------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(entry_point, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else entry_point.name
            version = dist.version if dist is not None else "0"
            label = f"{entry_point.name} = {entry_point.value}"
            skew = core_requirement_mismatch(dist) if dist is not None else None
            if skew is not None:  # never import a plugin built for another core
                requirement, installed = skew
                self.failures.append(PluginFailure(
                    dist_name, version, label,
                    f"incompatible: requires {requirement} but {CORE_DISTRIBUTION} {installed} is installed; "
                    f"not loaded (install a {dist_name} release that supports {CORE_DISTRIBUTION} {installed})",
                    requirement=requirement))
                continue
            try:
                module = entry_point.load()
            except Exception as error:  # a broken plugin must not stop the others
                self.failures.append(
                    PluginFailure(dist_name, version, f"{entry_point.name} = {entry_point.value}",
                                  f"{type(error).__name__}: {error}", traceback.format_exc())
                )
                continue
            self.register_plugin(module, distribution=dist_name, version=version,
                                 entry_point=f"{entry_point.name} = {entry_point.value}")

    def register_plugin(self, plugin: ModuleType | Any, *, distribution: str, version: str = "0",
                        entry_point: str = "") -> bool:
        """Register one plugin object (a module or any object with hook implementations).

        Returns ``False`` (and records a :class:`PluginFailure`) when the plugin is invalid
        or one of its hooks raised; components it registered before failing are removed.
        """
        label = entry_point or getattr(plugin, "__name__", repr(plugin))
        try:
            self._pm.register(plugin, name=f"{distribution}:{label}")
            self._pm.check_pending()
        except Exception as error:
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            self.failures.append(PluginFailure(distribution, version, label, f"{type(error).__name__}: {error}"))
            return False
        added: list[tuple[ComponentKind, ComponentSpec]] = []
        try:
            for entry in KINDS:
                kind = entry.name
                hook = getattr(self._pm.hook, entry.hook)
                for impl in hook.get_hookimpls():
                    if impl.plugin is not plugin:
                        continue

                    def register(spec: ComponentSpec, _kind: ComponentKind = kind) -> None:
                        if not isinstance(spec, ComponentSpec):
                            raise TypeError(f"register() takes a mllm.plugins.specs.ComponentSpec, got {type(spec).__name__}")
                        full = replace(spec, kind=_kind, distribution=distribution, version=version)
                        self._check_same_distribution(full)
                        self._specs[_kind].append(full)
                        added.append((_kind, full))

                    impl.function(register=register)
        except Exception as error:
            for kind, spec in added:
                self._specs[kind].remove(spec)
            self._pm.unregister(plugin)
            self.failures.append(PluginFailure(distribution, version, label, f"{type(error).__name__}: {error}",
                                               traceback.format_exc()))
            return False
        return True

    def unregister_distribution(self, distribution: str) -> None:
        """Remove every component a distribution registered (used by tests and fixtures)."""
        for kind in COMPONENT_KINDS:
            self._specs[kind] = [s for s in self._specs[kind] if s.distribution != distribution]
        for name, plugin in list(self._pm.list_name_plugin()):
            if name.startswith(f"{distribution}:"):
                self._pm.unregister(plugin)

    def _check_same_distribution(self, spec: ComponentSpec) -> None:
        for other in self._specs[spec.kind]:
            if other.distribution == spec.distribution and _names(other) & _names(spec):
                raise DuplicateComponentError(
                    f"{spec.distribution} registers {spec.kind} {sorted(_names(other) & _names(spec))[0]!r} twice"
                )

    # -- lookup ------------------------------------------------------------------------

    def specs(self, kind: ComponentKind | None = None) -> list[ComponentSpec]:
        """All registered specs, optionally of one kind."""
        kinds = [kind] if kind else list(COMPONENT_KINDS)
        return [spec for k in kinds for spec in self._specs[k]]

    def names(self, kind: ComponentKind) -> list[str]:
        return sorted({n for spec in self._specs[kind] for n in _names(spec)})

    def clashes(self) -> list[tuple[ComponentKind, str, list[str]]]:
        """(kind, name, distributions) for every name claimed by more than one distribution."""
        found = []
        for kind in COMPONENT_KINDS:
            owners: dict[str, list[str]] = {}
            for spec in self._specs[kind]:
                for name in _names(spec):
                    owners.setdefault(name, []).append(spec.distribution)
            found.extend((kind, name, dists) for name, dists in sorted(owners.items()) if len(dists) > 1)
        return found

    def get(self, kind: ComponentKind, name: str) -> ComponentSpec:
        """The spec of ``kind`` called ``name`` (or ``dist:name``).

        Raises:
            UnknownComponentError: no such name; the message suggests close names.
            DuplicateComponentError: two distributions claim the name; the message names
                both and shows the ``dist:name`` form that picks one.
        """
        distribution, sep, bare = name.rpartition(":")
        candidates = [s for s in self._specs[kind] if bare in _names(s)]
        if sep:
            candidates = [s for s in candidates if s.distribution == distribution]
        if not candidates:
            raise UnknownComponentError(self._unknown_message(kind, name))
        if len(candidates) > 1:
            dists = ", ".join(s.distribution for s in candidates)
            picks = " or ".join(f"'{s.distribution}:{bare}'" for s in candidates)
            raise DuplicateComponentError(
                f"{kind} {bare!r} is registered by more than one distribution ({dists}); write {picks} to pick one"
            )
        return candidates[0]

    def _unknown_message(self, kind: ComponentKind, name: str) -> str:
        known = self.names(kind)
        close = difflib.get_close_matches(name.rpartition(":")[2], known, n=3, cutoff=0.5)
        message = f"unknown {kind} {name!r}"
        if close:
            message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        message += f" Known {kind}s: {', '.join(known) or '(none)'}."
        failed = [f.distribution for f in self.failures]
        if failed:
            message += f" Plugins that failed to load (see `mllm plugins`): {', '.join(failed)}."
        return message

    def load(self, kind: ComponentKind, name: str) -> Any:
        """Import and return the implementation of ``kind`` ``name``."""
        return self.get(kind, name).load()


def core_requirement_mismatch(dist: metadata.Distribution) -> tuple[str, str] | None:
    """``(requirement, installed version)`` when ``dist``'s ``Requires-Dist: mllm-core ...``
    range excludes the installed mllm-core, else ``None`` (no requirement, or satisfied)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    installed = _distribution_version(CORE_DISTRIBUTION)
    for text in dist.requires or ():
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != CORE_DISTRIBUTION:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # only under an extra or another platform
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            return f"{CORE_DISTRIBUTION}{requirement.specifier}", installed
    return None


def _names(spec: ComponentSpec) -> set[str]:
    return {spec.name, *spec.aliases}


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, created on first use."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests and fixtures use this)."""
    global _default
    _default = registry


def iter_component_rows(registry: Registry) -> Iterable[dict[str, str]]:
    """Rows for ``mllm plugins``: kind, name, aliases, distribution, version, description."""
    for spec in registry.specs():
        yield {
            "kind": spec.kind or "",
            "name": spec.name,
            "aliases": ", ".join(spec.aliases),
            "distribution": spec.distribution,
            "version": spec.version,
            "description": spec.description,
        }
