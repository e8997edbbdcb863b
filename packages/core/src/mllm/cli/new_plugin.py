"""``mllm new-plugin NAME``: write a complete plugin distribution from the bundled template.

The output (``mllm-NAME/``) installs with pip and passes its own tests unchanged:

```
mllm-NAME/
  pyproject.toml            the `mllm` entry point and the supported mllm-core range
  README.md
  src/mllm_NAME/plugin.py   registers the components (specs only, no torch)
  src/mllm_NAME/<kind>.py   a working implementation per kind
  tests/conftest.py         pytest_plugins = ["mllm.testing"]
  tests/test_conformance.py the conformance kit, one test per check
  tests/test_<kind>.py      behaviour tests (a method trains one pipeline stage)
```

Templates live in ``mllm/plugin_template/`` (package data); ``{{placeholder}}``
markers are replaced, nothing else is interpreted.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path

import click

from mllm import __version__
from mllm.errors import MllmError

KINDS = ("dataset", "method", "benchmark", "judge")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

_PIPELINE_LINES = {
    "dataset": "    data: {name: %s, path: data/questions.jsonl}",
    "method": "    method: {name: %s}",
    "benchmark": "    benchmarks: [{name: %s, path: data/test.jsonl}]",
    "judge": "    # judges are called by benchmarks and scoring: judge: {name: %s}",
}
_LAYOUT = {
    "dataset": "| `src/{module}/dataset.py` | the `{name}` dataset: JSON Lines question/answer rows as conversations |",
    "method": "| `src/{module}/method.py` | the `{name}` method: cross-entropy on the answers |",
    "benchmark": "| `src/{module}/benchmark.py` | the `{name}` benchmark: exact-match accuracy |",
    "judge": "| `src/{module}/judge.py` | the `{name}` judge: replies by regex rules, cached |",
}


def core_requirement(version: str = __version__) -> str:
    """The mllm-core range a new plugin declares: this minor series for 0.x, this major after."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"mllm-core>={major}.{minor},<{upper}"


def _template(path: str) -> str:
    return (resources.files("mllm") / "plugin_template" / path).read_text(encoding="utf-8")


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.findall(r"\{\{(\w+)\}\}", text)
    if leftover:
        raise click.ClickException(f"template placeholder(s) without a value: {sorted(set(leftover))}")
    return text


def _pipeline_example(name: str, kinds: tuple[str, ...]) -> str:
    lines = ["# mllm run pipeline.yaml", f"name: try-{name}", "model: {name: llava, init: tiny}", "stages:"]
    if "method" in kinds or "dataset" in kinds:
        lines += ["  - id: train", "    kind: train",
                  _PIPELINE_LINES["method"] % (name if "method" in kinds else "sft"),
                  _PIPELINE_LINES["dataset"] % (name if "dataset" in kinds else "llava-json")]
    if "benchmark" in kinds:
        lines += ["  - id: eval", "    kind: eval", _PIPELINE_LINES["benchmark"] % name]
    if "judge" in kinds:
        lines += [_PIPELINE_LINES["judge"] % name]
    return "\n".join(lines)


def render_plugin(name: str, kinds: tuple[str, ...], description: str | None = None) -> dict[str, str]:
    """The files of a new plugin distribution: ``{relative path: text}``."""
    if not NAME_PATTERN.match(name):
        raise MllmError(f"NAME {name!r}: use lowercase letters, digits and single dashes, starting with a letter "
                        "(e.g. my-data)")
    module = "mllm_" + name.replace("-", "_")
    if keyword.iskeyword(module):  # pragma: no cover - the mllm_ prefix rules this out
        raise click.BadParameter(f"{module!r} is a Python keyword", param_hint="NAME")
    kinds = tuple(k for k in KINDS if k in kinds)  # canonical order, no duplicates
    class_name = "".join(part.capitalize() for part in name.split("-"))
    if class_name[0].isdigit():  # pragma: no cover - NAME starts with a letter
        class_name = "P" + class_name
    components = ", ".join(f"the {k} `{name}`" for k in kinds)
    values = {
        "name": name,
        "dist": f"mllm-{name}",
        "module": module,
        "Class": class_name,
        "description": description or f"An mllm plugin: {components.replace('`', '')}.",
        "core_requirement": core_requirement(),
        "components": components,
    }
    values["hooks"] = "".join(_fill(_template(f"hooks/{k}.tmpl"), values) for k in kinds)
    values["pipeline_example"] = _pipeline_example(name, kinds)
    values["layout_rows"] = "\n".join(_LAYOUT[k].format(module=module, name=name) for k in kinds)
    files = {
        "pyproject.toml": _fill(_template("pyproject.toml.tmpl"), values),
        "README.md": _fill(_template("README.md.tmpl"), values),
        f"src/{module}/__init__.py": _fill(_template("init.py.tmpl"), values),
        f"src/{module}/plugin.py": _fill(_template("plugin.py.tmpl"), values),
        "tests/conftest.py": _fill(_template("tests/conftest.py.tmpl"), values),
        "tests/test_conformance.py": _fill(_template("tests/test_conformance.py.tmpl"), values),
    }
    for kind in kinds:
        files[f"src/{module}/{kind}.py"] = _fill(_template(f"kinds/{kind}.tmpl"), values)
        files[f"tests/test_{kind}.py"] = _fill(_template(f"tests/test_{kind}.py.tmpl"), values)
    return files


@click.command("new-plugin")
@click.argument("name")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), default=("dataset",), show_default=True,
              help="component kind to include (repeat for several: --kind dataset --kind method)")
@click.option("--output", "output", type=click.Path(file_okay=False), default=".", show_default=True,
              help="folder in which mllm-NAME/ is created")
@click.option("--description", default=None, help="one line for pyproject.toml and the README")
@click.option("--force", is_flag=True, help="write into an existing mllm-NAME/ folder, replacing its files")
def new_plugin(name: str, kinds: tuple[str, ...], output: str, description: str | None, force: bool) -> None:
    """Create a plugin distribution mllm-NAME (module mllm_NAME) that installs and passes its tests.

    Example: mllm new-plugin my-data --kind dataset --kind benchmark
    """
    files = render_plugin(name, kinds, description)
    root = Path(output) / f"mllm-{name}"
    if root.exists() and any(root.iterdir()) and not force:
        raise MllmError(f"{root} exists and is not empty", hint="pick another --output or pass --force")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    click.echo(f"created {root} ({', '.join(k for k in KINDS if k in kinds)}):")
    for relative in sorted(files):
        click.echo(f"  {relative}")
    click.echo(f"next: pip install -e '{root}[test]' && (cd {root} && pytest) && mllm plugins")
