"""A row longer than the model's ``max_length`` is a bad row (issue 19, item 7): the train
stage applies the dataset's ``on_bad_row`` policy to it before step 0 and lists it in
``data_report.json``, instead of cutting it and training on what is left (for SFT the cut
drops the answer's end; for DPO the whole answer)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from mllm import Conversation, Preference, Turn
from mllm.cli.main import main
from mllm.data.recordio import write_records
from mllm.testing.tiny import TINY_LLAVA

LONG = "a circle " * 200  # far more than max_length=200 tokens
MODEL = {**TINY_LLAVA, "max_length": 200}


def _pipeline(tmp_path, method: str, records_file, on_bad_row: str, kind: str) -> str:
    model = ", ".join(f"{k}: {v}" for k, v in MODEL.items())
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""
name: overlong
model: {{name: llava, {model}}}
stages:
  - id: train
    kind: train
    method: {{name: {method}}}
    data: {{name: records-jsonl, path: {records_file}, kind: {kind}, on_bad_row: {on_bad_row}, max_bad_fraction: 0.5}}
    train: {{max_steps: 1, batch_size: 2, lr: 1.0e-3}}
""")
    return str(path)


def _conversations(tmp_path):
    records = [Conversation(id=f"c{i}", turns=(Turn("user", "what shape?"), Turn("assistant", "circle")))
               for i in range(3)]
    records.append(Conversation(id="too-long", turns=(Turn("user", "what shape?"), Turn("assistant", LONG))))
    path = tmp_path / "conversations.jsonl"
    write_records(path, records)
    return path


def _pairs(tmp_path):
    records = [Preference(id=f"p{i}", prompt=(Turn("user", "what shape?"),), chosen="circle", rejected="square")
               for i in range(3)]
    records.append(Preference(id="too-long", prompt=(Turn("user", "what shape?"),), chosen="circle", rejected=LONG))
    path = tmp_path / "pairs.jsonl"
    write_records(path, records)
    return path


@pytest.mark.parametrize("method, kind, make", [("sft", "conversation", _conversations),
                                                 ("dpo", "preference", _pairs)])
def test_an_overlong_row_stops_the_run_with_one_line_naming_it(tmp_path, method, kind, make):
    pipeline = _pipeline(tmp_path, method, make(tmp_path), "error", kind)
    result = CliRunner().invoke(main, ["run", pipeline, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert "id too-long" in line and "max_length=200" in line and "on_bad_row: skip" in line
    assert not (tmp_path / "runs" / "overlong" / "train" / "model").exists()  # stopped before training


@pytest.mark.parametrize("method, kind, make", [("sft", "conversation", _conversations),
                                                 ("dpo", "preference", _pairs)])
def test_with_skip_an_overlong_row_is_listed_in_data_report_and_left_out(tmp_path, method, kind, make):
    pipeline = _pipeline(tmp_path, method, make(tmp_path), "skip", kind)
    result = CliRunner().invoke(main, ["run", pipeline, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    stage = tmp_path / "runs" / "overlong" / "train"
    report = json.loads((stage / "data_report.json").read_text())
    (entry,) = report["skipped"]
    assert entry["id"] == "too-long" and "longer than the model's max_length=200" in entry["reason"]
    assert report["kept"] == 3
    assert (stage / "model").is_dir()
