"""Bad input gets one line, exit status 2, never a traceback (docs/reliability.md, round
two, item 6): malformed or tagged overrides, a full disk and a read-only run folder
(simulated by raising the ``OSError`` at the write call: CI runs as root, where neither
can be produced for real)."""

from __future__ import annotations

import errno
import sys
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


# -- item 1: train settings validate catches before a model is built -------------------------------------------

METHOD_PLUGIN = '''
from typing import ClassVar

from mllm import hookimpl
from mllm.plugins.specs import ComponentSpec


class ConversationMethod:
    record_kind: ClassVar[str] = "conversation"


@hookimpl
def mllm_register_methods(register):
    register(ComponentSpec(name="conversation-method", impl=f"{__name__}:ConversationMethod"))
'''

TRAIN_PIPELINE = """
name: demo
model: {{name: llava, init: tiny}}
stages:
  - id: sft
    kind: train
    method: {{name: conversation-method}}
    data: {{name: records-jsonl, path: {records}}}
    train: {train}
"""


@pytest.fixture
def method_registry(tmp_path, monkeypatch):
    """The core's components plus a method training on conversations (none is built: the
    pre-flight refuses first)."""
    import importlib
    import json

    from mllm.plugins import registry as plugins

    (tmp_path / "reliability_method_plug.py").write_text(METHOD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = plugins.Registry(autoload=False)
    assert registry.register_plugin(importlib.import_module("reliability_method_plug"), distribution="method-plug")
    plugins.set_registry(registry)
    (tmp_path / "records.jsonl").write_text(json.dumps({
        "kind": "conversation", "id": "r1", "images": [],
        "turns": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    yield registry
    plugins.set_registry(None)


@pytest.mark.parametrize("train, key, words", [
    ("{lr_scheduler: bogus}", "lr_scheduler", ["unknown scheduler 'bogus'", "cosine"]),
    ("{lr_scheduler: cosin}", "lr_scheduler", ["did you mean 'cosine'"]),
    ("{report_to: [wandb]}", "report_to", ["'wandb' needs the wandb package", "pip install wandb"]),
    ("{report_to: [wandbb]}", "report_to", ["unknown report_to integration 'wandbb'", "did you mean 'wandb'"]),
    ("{deepspeed: zero3}", "deepspeed", ["'zero3' needs DeepSpeed", "pip install deepspeed"]),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_train_settings_the_trainer_would_refuse_are_caught_before_a_model_is_built(
        tmp_path, method_registry, write_pipeline, monkeypatch, train, key, words, command):
    # neither package importable, whatever this machine has installed (None blocks the import)
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    path = write_pipeline(TRAIN_PIPELINE.format(records=tmp_path / "records.jsonl", train=train))
    args = [command, str(path)] + (["--runs-dir", str(tmp_path / "runs")] if command == "run" else [])
    line = one_error_line(CliRunner().invoke(main, args))
    assert f"stages.sft.train.{key}" in line and all(word in line for word in words), line
    assert not (tmp_path / "runs").exists()  # refused before the run folder, let alone the model


def test_installed_integrations_and_deepspeed_pass_validate(tmp_path, method_registry, write_pipeline, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    path = write_pipeline(TRAIN_PIPELINE.format(records=tmp_path / "records.jsonl",
                                                train="{lr_scheduler: linear, report_to: [wandb], deepspeed: zero3}"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0 and "OK" in result.output, result.output


def test_scheduler_and_integration_names_match_transformers():
    from mllm.training.settings import LR_SCHEDULERS, REPORT_TO_MODULES
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    from transformers.trainer_utils import SchedulerType

    assert set(LR_SCHEDULERS) == {member.value for member in SchedulerType}
    assert set(REPORT_TO_MODULES) == set(INTEGRATION_TO_CALLBACK)


# -- item 2: a records file line that is not UTF-8 costs one row --------------------------------------------------


def test_a_records_line_that_is_not_utf8_costs_one_row(tmp_path):
    import json

    from mllm.data.badrows import BadRowError, DataReport
    from mllm.data.recordio import read_records

    def line(record_id: str) -> bytes:
        return json.dumps({"kind": "conversation", "id": record_id, "images": [],
                           "turns": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                          ensure_ascii=False).encode("latin-1")

    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\n".join([line("one"), line("café"), line("three")]) + b"\n")
    report = DataReport(source="test", on_bad_row="skip", max_bad_fraction=0.5)
    assert [record.id for record in read_records(path, report)] == ["one", "three"]
    (entry,) = report.skipped
    assert entry.row == "line 2" and "not UTF-8 text (byte 0xe9" in entry.reason
    with pytest.raises(BadRowError, match=r"records.jsonl, row line 2: .*not UTF-8"):
        list(read_records(path))


# -- item 3: a pickle .bin weights file is refused, never retried with weights_only=False --------------------------


class Payload:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('payload ran')",))


def plant(path: Path, ran: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2), "evil": Payload(ran)}, path)
    return path


def assert_refused_with_the_fix(message: str) -> None:
    assert "refused" in message or "refusing" in message, message
    assert "weights_only=False" not in message and "`weights_only` set to `False`" not in message, message
    assert "safe_globals" not in message, message  # allowlisting the global would run it too
    assert "it needs exec" in message, message  # what the pickle would have called


def test_a_pickle_bin_in_a_model_folder_is_refused_with_convert_to_safetensors(tmp_path):
    from mllm.errors import InputFileError
    from mllm.models.llava.adapter import LlavaAdapter

    ran = tmp_path / "PAYLOAD_RAN"
    folder = tmp_path / "model"
    weights = plant(folder / "pytorch_model.bin", ran)
    (folder / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(InputFileError) as caught:
        LlavaAdapter.load(folder)
    message = str(caught.value)
    assert message.startswith(f"{weights}: refused") and "convert it to safetensors" in message
    assert_refused_with_the_fix(message)
    assert not ran.exists()

    # a LoRA adapter's adapter_model.bin too, before the base model is even looked at
    adapter = tmp_path / "lora"
    plant(adapter / "adapter_model.bin", ran)
    with pytest.raises(InputFileError, match="adapter_model.bin: refused.*convert it to safetensors"):
        LlavaAdapter._load_peft(adapter, tmp_path / "no-base", None)
    assert not ran.exists()


def test_convert_and_resume_refuse_a_pickle_without_suggesting_weights_only_false(tmp_path):
    from mllm.errors import ConvertError, UnsafeCheckpointError
    from mllm.models.llava.convert import load_weights_file
    from mllm.training.checkpoints import verify_checkpoint

    ran = tmp_path / "PAYLOAD_RAN"
    with pytest.raises(ConvertError) as caught:
        load_weights_file(plant(tmp_path / "llava" / "mm_projector.bin", ran))
    assert_refused_with_the_fix(str(caught.value))
    assert "convert it to safetensors" in str(caught.value)
    with pytest.raises(UnsafeCheckpointError) as caught:
        verify_checkpoint(plant(tmp_path / "checkpoint-2" / "optimizer.pt", ran).parent)
    assert_refused_with_the_fix(str(caught.value))
    assert not ran.exists()


# -- item 4: a decompression bomb met while a batch is built is a late bad row, listed by id ------------------------


def test_a_decompression_bomb_while_training_is_a_late_bad_row_listed_by_id(tmp_path):
    import json
    import struct
    import types
    import zlib

    from mllm.data.badrows import DataReport, ImageReadError, LateBadRows
    from mllm.models.llava.adapter import LlavaAdapter

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a header claiming 20000x20000 pixels: all PIL reads before refusing it
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    adapter = types.SimpleNamespace(processor=types.SimpleNamespace(image_processor=None), image_aspect_ratio="pad")
    with pytest.raises(ImageReadError) as caught:
        LlavaAdapter.load_images(adapter, [bomb])
    assert str(caught.value.path) == str(bomb) and "exceeds limit" in str(caught.value)

    report = DataReport(source="test", on_bad_row="skip", max_bad_fraction=1.0, total=2, kept=2)
    late = LateBadRows(report, tmp_path / "data_report.json")
    late.reject(types.SimpleNamespace(id="r7"), caught.value)
    (entry,) = json.loads((tmp_path / "data_report.json").read_text())["skipped"]
    assert entry["id"] == "r7" and entry["row"] == "id r7" and entry["file"] == str(bomb)
