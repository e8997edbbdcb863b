"""Bad input gets one line, exit status 2, never a traceback (docs/reliability.md, round
two, item 6): malformed or tagged overrides, a full disk and a read-only run folder
(simulated by raising the ``OSError`` at the write call: CI runs as root, where neither
can be produced for real)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from click.testing import CliRunner
from mllm.cli.main import main

TOUCH_PIPELINE = """
name: demo
model: {name: llava, init: tiny}
stages:
  - id: alone
    kind: touch
    message: independent
"""


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    return line


@pytest.mark.parametrize("override, words", [
    ("seed=[1,", "not valid YAML"),
    ("seed=!!python/object/apply:os.system ['true']", "use no '!!' tags"),
    ("stages.alone.message={a: [", "not valid YAML"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_malformed_or_tagged_override_is_one_line(tmp_path, testplug_registry, write_pipeline, override, words,
                                                     command):
    path = write_pipeline(TOUCH_PIPELINE)
    args = [command, str(path), override] + (["--runs-dir", str(tmp_path / "runs")] if command == "run" else [])
    line = one_error_line(CliRunner().invoke(main, args))
    assert f"override {override.partition('=')[0]}=" in line.replace("'", "").replace('"', '') and words in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "free some space"), (errno.EROFS, "make the run folder writable"),
                                       (errno.EACCES, "make the run folder writable")])
def test_a_full_disk_or_a_read_only_run_folder_is_one_line(tmp_path, testplug_registry, write_pipeline, monkeypatch,
                                                           code, fix):
    import mllm.pipeline.runfolder as runfolder

    real = runfolder.atomic_write_text

    def failing(path: Path, text: str) -> None:
        if Path(path).name == "resolved_config.yaml":
            raise OSError(code, __import__("os").strerror(code), str(path))
        return real(path, text)

    monkeypatch.setattr(runfolder, "atomic_write_text", failing)
    path = write_pipeline(TOUCH_PIPELINE)
    line = one_error_line(CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(tmp_path / "runs")]))
    assert line.startswith("error: stage 'alone': cannot write ") and "resolved_config.yaml" in line
    assert fix in line and "run the same command again" in line

    monkeypatch.setattr(runfolder, "atomic_write_text", real)  # space freed: the same command finishes
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "demo" / "alone" / "COMPLETE").exists()


def test_a_permission_error_on_a_data_file_is_not_blamed_on_the_run_folder(tmp_path):
    from mllm.pipeline.runner import is_write_failure

    runs = tmp_path / "runs"
    assert is_write_failure(OSError(errno.EACCES, "Permission denied", str(runs / "demo" / "x")), runs)
    assert not is_write_failure(OSError(errno.EACCES, "Permission denied", str(tmp_path / "data.json")), runs)
    assert is_write_failure(OSError(errno.ENOSPC, "No space left on device"), runs)
