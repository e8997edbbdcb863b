"""Discovery through real entry points: small distributions installed with pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTPLUG = Path(__file__).parent / "testplug"


def pip_install_target(source: Path, target: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)


def write_distribution(root: Path, name: str, module: str, plugin_source: str) -> Path:
    package = root / name
    (package / "src" / module).mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.9.0"
        [project.entry-points.mllm]
        {module} = "{module}.plugin"
        [tool.setuptools.packages.find]
        where = ["src"]
    """))
    (package / "src" / module / "__init__.py").write_text("")
    (package / "src" / module / "plugin.py").write_text(textwrap.dedent(plugin_source))
    return package


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with the test plugin, a broken plugin and a clashing plugin pip-installed into it."""
    root = tmp_path_factory.mktemp("dists")
    target = root / "site"
    pip_install_target(TESTPLUG, target)
    broken = write_distribution(root, "mllm-broken", "mllm_broken", "import a_module_that_does_not_exist\n")
    pip_install_target(broken, target)
    clash = write_distribution(root, "mllm-clash", "mllm_clash", """
        from mllm import hookimpl
        from mllm.plugins.specs import ComponentSpec

        @hookimpl
        def mllm_register_datasets(register):
            register(ComponentSpec(name="lines", impl="json:loads"))
    """)
    pip_install_target(clash, target)
    return target


def mllm(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run([sys.executable, "-m", "mllm", *args], capture_output=True, text=True, env=environment)


def test_plugins_lists_installed_components_failures_and_clashes(site):
    result = mllm(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    rows = {(c["kind"], c["name"], c["distribution"]): c for c in listing["components"]}
    assert rows[("dataset", "lines", "mllm-testplug")]["version"] == "1.2.3"
    assert rows[("dataset", "lines", "mllm-testplug")]["aliases"] == "text-lines"
    assert ("stage_kind", "touch", "mllm-testplug") in rows
    assert ("dataset", "lines", "mllm-clash") in rows
    failure = next(f for f in listing["failures"] if f["distribution"] == "mllm-broken")
    assert failure["version"] == "0.9.0"
    assert "a_module_that_does_not_exist" in failure["cause"]
    assert {"kind": "dataset", "name": "lines", "distributions": ["mllm-testplug", "mllm-clash"]} in listing["clashes"] \
        or {"kind": "dataset", "name": "lines", "distributions": ["mllm-clash", "mllm-testplug"]} in listing["clashes"]


def test_plugins_table_shows_failures_without_crashing(site):
    result = mllm(site, "plugins")
    assert result.returncode == 0, result.stderr
    assert "mllm-testplug" in result.stdout
    assert "failed to load" in result.stdout and "mllm-broken" in result.stdout


def test_autoload_off_skips_entry_points(site):
    result = mllm(site, "plugins", "--json", MLLM_DISABLE_PLUGIN_AUTOLOAD="1")
    listing = json.loads(result.stdout)
    assert {c["distribution"] for c in listing["components"]} == {"mllm-core"}
    assert listing["failures"] == []


def test_pipeline_naming_a_clashing_component_needs_dist_name(site, tmp_path):
    (tmp_path / "data.txt").write_text("q|a\n")
    pipeline = tmp_path / "p.yaml"
    body = """
        name: clash
        model: {{name: llava, init: tiny}}
        stages:
          - {{id: t, kind: touch, data: {{name: {name}, path: {path}}}}}
    """
    pipeline.write_text(textwrap.dedent(body.format(name="lines", path=tmp_path / "data.txt")))
    result = mllm(site, "validate", str(pipeline))
    assert result.returncode == 2
    assert "mllm-clash" in result.stderr and "mllm-testplug" in result.stderr
    assert "'mllm-testplug:lines'" in result.stderr
    pipeline.write_text(textwrap.dedent(body.format(name="mllm-testplug:lines", path=tmp_path / "data.txt")))
    result = mllm(site, "validate", str(pipeline))
    assert result.returncode == 0, result.stderr
