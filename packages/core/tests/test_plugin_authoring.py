"""Plugin authoring end to end: the template's output, the example plugin, version skew.

Each distribution is really built and installed with pip: into a fresh virtual
environment (the template, issue 8's "done when"), or with ``pip install --target``
plus ``PYTHONPATH`` (the example plugin, the skewed plugin).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from mllm.testing import TINY_LLAVA

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "mllm-example-plugin"


def run(*args: str | Path, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def pip_install_target(source: Path, target: Path) -> None:
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--target", target, source)


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that sees this environment's packages (mllm-core and its
    dependencies, editable installs included) through a ``site.addsitedir`` .pth line,
    and installs its own packages into its own site-packages. Returns its python."""
    run(sys.executable, "-m", "venv", "--without-pip", path)
    python = path / "bin" / "python"
    site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    base = sysconfig.get_paths()["purelib"]
    (site_packages / "zz_mllm_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    return python


def tiny_model() -> dict:
    return {"name": "llava", **TINY_LLAVA}


def test_new_plugin_installs_passes_its_tests_is_listed_and_trains(tmp_path):
    python = fresh_venv(tmp_path / "venv")
    run(python, "-m", "mllm", "new-plugin", "demo", "--kind", "method", "--output", tmp_path)
    plugin = tmp_path / "mllm-demo"
    assert (plugin / "src" / "mllm_demo" / "method.py").is_file()
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", plugin)
    # the installed copy is what runs: not the source folder
    where = run(python, "-c", "import mllm_demo; print(mllm_demo.__file__)", cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in where

    tests = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=plugin)
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    listing = json.loads(run(python, "-m", "mllm", "plugins", "--json", cwd=tmp_path).stdout)
    assert {"kind": "method", "name": "demo", "distribution": "mllm-demo"}.items() <= next(
        c for c in listing["components"] if c["distribution"] == "mllm-demo").items()
    assert not [f for f in listing["failures"] if f["distribution"] == "mllm-demo"]

    from mllm.data.recordio import write_records
    from mllm.testing import example_records

    write_records(tmp_path / "train.jsonl", example_records("conversation", tmp_path / "images", count=4))
    pipeline = {"name": "demo", "model": tiny_model(), "stages": [{
        "id": "train", "kind": "train", "method": {"name": "demo"},
        "data": {"name": "records-jsonl", "path": str(tmp_path / "train.jsonl")},
        "train": {"max_steps": 2, "batch_size": 2, "lr": 1.0e-3, "logging_steps": 1}}]}
    (tmp_path / "demo.yaml").write_text(json.dumps(pipeline, indent=2))
    run(python, "-m", "mllm", "run", tmp_path / "demo.yaml", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    stage = tmp_path / "runs" / "demo" / "train"
    assert (stage / "COMPLETE").is_file() and (stage / "model").is_dir()
    resolved = (stage / "resolved_config.yaml").read_text()
    assert "demo" in resolved


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("example") / "site"
    pip_install_target(EXAMPLE, target)
    return target


def test_example_plugin_is_installed_listed_and_passes_its_own_tests(example_site, tmp_path):
    env = {"PYTHONPATH": str(example_site)}
    listing = json.loads(run(sys.executable, "-m", "mllm", "plugins", "--json", env=env, cwd=tmp_path).stdout)
    rows = {(c["kind"], c["name"]): c for c in listing["components"] if c["distribution"] == "mllm-example-plugin"}
    assert set(rows) == {("dataset", "preference-jsonl"), ("method", "orpo"), ("benchmark", "yes-no")}
    assert rows[("dataset", "preference-jsonl")]["aliases"] == "pref-jsonl"
    # its tests, against the installed copy (the tests folder is copied, the source is not on the path)
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    for test in (EXAMPLE / "tests").glob("*.py"):
        (tests_dir / test.name).write_text(test.read_text())
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", tmp_path, tests_dir,
                 env=env, cwd=tmp_path)
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_example_plugin_trains_with_orpo_and_evaluates_from_a_pipeline(example_site, tmp_path):
    from PIL import Image

    for colour, rgb in (("red", (220, 30, 30)), ("blue", (40, 60, 220))):
        Image.new("RGB", (16, 16), rgb).save(tmp_path / f"{colour}.png")
    pairs = [{"id": f"p{i}", "image": f"{c}.png", "question": "What colour is it?", "chosen": c, "rejected": o}
             for i, (c, o) in enumerate((("red", "blue"), ("blue", "red")) * 2)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    questions = [{"id": f"q{i}", "image": f"{c}.png", "question": "Is it red?", "answer": a}
                 for i, (c, a) in enumerate((("red", "yes"), ("blue", "no")))]
    (tmp_path / "yesno.jsonl").write_text("".join(json.dumps(r) + "\n" for r in questions))
    (tmp_path / "orpo.yaml").write_text(textwrap.dedent(f"""\
        name: orpo
        model: {json.dumps(tiny_model())}
        stages:
          - id: orpo
            kind: train
            method: {{name: orpo, lambda_: 0.5}}
            data: {{name: pref-jsonl, path: {tmp_path / 'pairs.jsonl'}}}
            train: {{max_steps: 2, batch_size: 2, lr: 1.0e-3, logging_steps: 1}}
          - id: eval
            kind: eval
            models: [init, orpo]
            benchmarks: [{{name: yes-no, path: {tmp_path / 'yesno.jsonl'}}}]
        """))
    run(sys.executable, "-m", "mllm", "run", tmp_path / "orpo.yaml", "--runs-dir", tmp_path / "runs",
        env={"PYTHONPATH": str(example_site)}, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "orpo"
    log = [json.loads(line) for line in (run_dir / "orpo" / "train_log.jsonl").read_text().splitlines()]
    assert any("odds_ratio_loss" in entry for entry in log), log
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    for model in ("init", "orpo"):
        assert set(metrics[model]["yes-no"]) >= {"accuracy", "yes_ratio"}


def _skewed_distribution(root: Path) -> Path:
    package = root / "mllm-skewed"
    (package / "src" / "mllm_skewed").mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "mllm-skewed"
        version = "3.0.0"
        dependencies = ["mllm-core<0.1", "pyyaml"]
        [project.entry-points.mllm]
        skewed = "mllm_skewed.plugin"
        [tool.setuptools.packages.find]
        where = ["src"]
    """))
    (package / "src" / "mllm_skewed" / "__init__.py").write_text("")
    # importing it would leave a mark: the registry must not import a plugin it rejects
    (package / "src" / "mllm_skewed" / "plugin.py").write_text(textwrap.dedent("""
        import os
        open(os.environ["MLLM_SKEWED_MARK"], "w").close()
        from mllm import hookimpl
        from mllm.plugins.specs import ComponentSpec

        @hookimpl
        def mllm_register_datasets(register):
            register(ComponentSpec(name="skewed", impl="json:loads"))
    """))
    return package


def test_plugin_requiring_another_core_is_reported_and_not_loaded(tmp_path):
    from mllm import __version__

    target = tmp_path / "site"
    pip_install_target(_skewed_distribution(tmp_path), target)
    mark = tmp_path / "imported"
    env = {"PYTHONPATH": str(target), "MLLM_SKEWED_MARK": str(mark)}
    listing = json.loads(run(sys.executable, "-m", "mllm", "plugins", "--json", env=env).stdout)
    assert not any(c["distribution"] == "mllm-skewed" for c in listing["components"])
    failure = next(f for f in listing["failures"] if f["distribution"] == "mllm-skewed")
    assert failure["version"] == "3.0.0" and failure["requirement"] == "mllm-core<0.1"
    assert "mllm-core<0.1" in failure["cause"] and f"mllm-core {__version__} is installed" in failure["cause"]
    assert not mark.exists()
    table = run(sys.executable, "-m", "mllm", "plugins", env=env).stdout
    assert "mllm-skewed" in table and "mllm-core<0.1" in table and __version__ in table


def test_core_requirement_check_reads_markers_and_ranges():
    from importlib import metadata

    from mllm import __version__
    from mllm.plugins.registry import core_requirement_mismatch

    class Dist:
        def __init__(self, *requires):
            self.requires = list(requires)

    assert core_requirement_mismatch(Dist("mllm-core>=0.1,<0.2", "pyyaml")) is None
    assert core_requirement_mismatch(Dist("pyyaml")) is None
    assert core_requirement_mismatch(Dist("mllm_core<0.1")) == ("mllm-core<0.1", __version__)
    assert core_requirement_mismatch(Dist('mllm-core<0.1; extra == "old"')) is None
    assert metadata.version("mllm-core") == __version__


def test_new_plugin_renders_every_kind_and_rejects_bad_names(tmp_path):
    from click.testing import CliRunner
    from mllm.cli.main import main
    from mllm.cli.new_plugin import core_requirement, render_plugin

    assert core_requirement("0.1.0") == "mllm-core>=0.1,<0.2"
    assert core_requirement("1.4.2") == "mllm-core>=1.4,<2"
    files = render_plugin("my-data", ("benchmark", "dataset", "judge", "method"))
    assert 'my_data = "mllm_my_data.plugin"' in files["pyproject.toml"]
    plugin = files["src/mllm_my_data/plugin.py"]
    for hook in ("mllm_register_datasets", "mllm_register_methods", "mllm_register_benchmarks", "mllm_register_judges"):
        assert f"def {hook}(" in plugin
    assert "import torch" not in plugin
    for text in files.values():
        assert "{{" not in text
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")
    runner = CliRunner()
    result = runner.invoke(main, ["new-plugin", "Bad_Name", "--output", str(tmp_path)])
    assert result.exit_code != 0 and "lowercase" in result.output
    result = runner.invoke(main, ["new-plugin", "x", "--kind", "judge", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mllm-x" / "src" / "mllm_x" / "judge.py").is_file()
    result = runner.invoke(main, ["new-plugin", "x", "--output", str(tmp_path)])
    assert result.exit_code != 0 and "not empty" in result.output
