"""Reference tables for docs/pipelines.md, generated from the pydantic models.

``python -m mllm.pipeline.schema_docs docs/pipelines.md`` rewrites the part of the file between
the markers below; a test fails when the doc is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

BEGIN = "<!-- BEGIN GENERATED: pipeline keys -->"
END = "<!-- END GENERATED: pipeline keys -->"


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    text = re.sub(r", FieldInfo\(.*\)\]", "]", text)  # pydantic's discriminator metadata
    text = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)  # module paths
    return text.replace("typing.", "").replace("mllm.pipeline.config.", "").replace("NoneType", "None").replace("|", "\\|")


def field_table(fields: dict[str, Any]) -> str:
    """A markdown table of pydantic fields (``Model.model_fields`` or a subset)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in fields.items():
        key = field.alias or name
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        meaning = (field.description or "").replace("|", "\\|")  # a bare | would end the table cell
        rows.append(f"| `{key}` | `{_type_name(field.annotation)}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def render() -> str:
    from mllm.pipeline.config import PipelineConfig, StageConfig
    from mllm.plugins.registry import Registry

    registry = Registry(autoload=False)
    from mllm.reporting.findings import RULE, FindingConfig

    parts = [BEGIN, "", "### Top level", "", field_table(PipelineConfig.model_fields), "",
             "### Each entry of `findings:`", "", field_table(FindingConfig.model_fields), "",
             f"The verdict rule, printed with each verdict: {RULE}.", "",
             "### Keys of every stage", "", field_table(StageConfig.model_fields), ""]
    for spec in sorted(registry.specs("stage_kind"), key=lambda s: s.name):
        model = spec.load_config()
        own = {k: v for k, v in model.model_fields.items() if k not in StageConfig.model_fields}
        if not own:
            continue
        parts += [f"### `kind: {spec.name}`", "", spec.description, "", field_table(own), ""]
        for name, field in own.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name not in model.component_fields:
                parts += [f"#### `{name}:` block of `kind: {spec.name}`", "", field_table(annotation.model_fields), ""]
    parts += _component_tables(registry)
    parts.append(END)
    return "\n".join(parts)


# the pipeline-named kinds whose configs are keys of a stage block, and the key that names them
_NAMED_IN_STAGES = (("score_rule", "score: {rule: %s}"), ("transform_op", "ops: [{op: %s}]"),
                    ("pairing", "data: {from: <stage>, pairs: %s}"), ("prompt_style", "prompt_style: {name: %s}"))


def _component_tables(registry: Any) -> list[str]:
    """The keys of the core's score rules, transform ops, pairings and prompt styles."""
    parts = ["### Score rules, transform ops, pairings and prompt styles of the core", "",
             "Plugins add more (`mllm plugins` lists them all); the keys beside the name are the component's.", ""]
    for kind, form in _NAMED_IN_STAGES:
        for spec in sorted(registry.specs(kind), key=lambda s: s.name):
            model = spec.load_config()
            parts += [f"#### `{form % spec.name}`", "", spec.description, ""]
            parts += [field_table(model.model_fields) if model is not None and model.model_fields else "No keys.", ""]
    return parts


def replace_generated(path: Path, begin: str, end: str, generated: str) -> bool:
    """Put ``generated`` (which starts with ``begin`` and ends with ``end``) in place of the
    marked section of ``path``; return True when the file changed. Every generated doc uses it."""
    text = path.read_text()
    start, stop = text.index(begin), text.index(end) + len(end)
    new = text[:start] + generated + text[stop:]
    if new != text:
        path.write_text(new)
        return True
    return False


def update(path: Path) -> bool:
    """Rewrite the generated section of ``path``; return True when it changed."""
    return replace_generated(path, BEGIN, END, render())


if __name__ == "__main__":
    changed = update(Path(sys.argv[1]))
    print("updated" if changed else "up to date")
