"""Every component's keys, from its config model: ``mllm plugins [KIND] NAME`` and docs/keys.md.

A component's keys are the fields of the pydantic model its spec's ``config`` names (the
keys written beside ``name:`` in a pipeline), with their types, defaults and
descriptions; a field holding a block of its own (a train stage's ``train:``) is listed as
a section of its own. ``python -m mllm.plugins.keys docs/keys.md`` rewrites the generated
part of the reference of the first-party distributions' components; a test fails when it
is out of date.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from mllm.plugins.kinds import KINDS
from mllm.plugins.specs import ComponentSpec

BEGIN = "<!-- BEGIN GENERATED: component keys -->"
END = "<!-- END GENERATED: component keys -->"
#: the distributions docs/keys.md documents (plugins of other projects document their own)
FIRST_PARTY = ("mllm-core", "mllm-data", "mllm-align", "mllm-models", "mllm-eval")


@dataclass(frozen=True)
class Key:
    """One key of a component: its name in a pipeline, type, default (``required``) and meaning."""

    name: str
    type: str
    default: str
    description: str


def type_name(annotation: Any) -> str:
    """A type as a pipeline author reads it: ``int``, ``str | None``, ``'sigmoid' | 'ipo'``, ``list[str]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(arg) for arg in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def keys_of(fields: dict[str, Any]) -> list[Key]:
    """The :class:`Key` of each pydantic field (``Model.model_fields`` or a subset)."""
    out = []
    for name, field in fields.items():
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        out.append(Key(field.alias or name, type_name(field.annotation), default, field.description or ""))
    return out


def key_table(fields: dict[str, Any]) -> str:
    """A markdown table of :func:`keys_of` (``|`` in a cell escaped: it would end the cell)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in keys_of(fields):
        cells = [f"`{key.name}`", f"`{key.type}`", f"`{key.default}`", key.description]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def sections(spec: ComponentSpec) -> list[tuple[str, dict[str, Any]]]:
    """``(title, fields)`` of a component: its own keys (title ``""``), then each block key
    whose value is a model of its own (``train:``), which is not a component reference."""
    model = spec.load_config()
    if model is None:
        return []
    out: list[tuple[str, dict[str, Any]]] = [("", dict(model.model_fields))]
    components = getattr(model, "component_fields", {})
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name not in components:
            out.append((f"{field.alias or name}:", dict(annotation.model_fields)))
    return out


def kind_named(text: str) -> str | None:
    """The component kind a command-line word names (``stage-kind``, ``stage`` and ``score-rule`` too)."""
    word = text.replace("-", "_")
    names = [kind.name for kind in KINDS]
    if word in names:
        return word
    if word == "stage":
        return "stage_kind"
    if word.endswith("s") and word[:-1] in names:
        return word[:-1]
    return None


# -- docs/keys.md ---------------------------------------------------------------------------------


def render(registry: Any = None) -> str:
    """The generated part of docs/keys.md: a section per kind, a table per component."""
    from mllm.plugins.registry import Registry

    registry = registry if registry is not None else Registry(autoload=True)
    parts = [BEGIN, ""]
    for kind in KINDS:
        specs = sorted((s for s in registry.specs(kind.name) if s.distribution in FIRST_PARTY),
                       key=lambda s: (s.name, FIRST_PARTY.index(s.distribution)))
        if not specs:
            continue
        parts += [f"## {kind.name}", "", f"Named by {kind.named_by}.", ""]
        for spec in specs:
            aliases = f" (also: {', '.join(f'`{a}`' for a in spec.aliases)})" if spec.aliases else ""
            parts += [f"### `{spec.name}` ({spec.distribution}){aliases}", ""]
            if spec.description:
                parts += [spec.description, ""]
            found = sections(spec)
            if not found or not found[0][1]:
                parts += ["No keys.", ""]
            for title, fields in found:
                if title:
                    parts += [f"#### `{title}` block", ""]
                parts += [key_table(fields), ""]
    parts.append(END)
    return "\n".join(parts)


def missing_distributions() -> list[str]:
    """First-party distributions not installed here (the reference cannot be checked without them)."""
    from importlib import metadata

    missing = []
    for name in FIRST_PARTY:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def update(path: Path) -> bool:
    """Rewrite the generated part of ``path``; return True when it changed."""
    from mllm.pipeline.schema_docs import replace_generated

    return replace_generated(path, BEGIN, END, render())


if __name__ == "__main__":
    print("updated" if update(Path(sys.argv[1])) else "up to date")
