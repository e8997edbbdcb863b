"""The transform stage: records I/O, the core's ops (subsample, shorten), stage-records chaining,
op resolution and config errors. mllm-data's realign / llava-instruct: packages/data-plugins/tests."""

from __future__ import annotations

import json

import pytest
from mllm.data.badrows import BadRowError, DataReport
from mllm.data.context import ComponentContext
from mllm.data.ops import Shorten, Subsample, SubsampleConfig
from mllm.data.recordio import read_records, write_records
from mllm.pipeline.config import ConfigError, load_pipeline, stage_inputs
from mllm.pipeline.runner import PipelineRunner
from mllm.plugins.registry import Registry
from mllm.records import Conversation, EvalItem, Preference, Turn

ANSWERS = [
    "Lectures explain things. The solution is simple. The answer is A.",
    "Magnets attract. Opposite poles attract. The answer is B.",
    "A long lecture. Another sentence. The answer is C.",
    "No final answer here.",
]


def conversation(i: int, answer: str, image: str | None = None) -> Conversation:
    prompt = f"<image>\nQuestion {i}?" if image else f"Question {i}?"
    return Conversation(id=f"q{i}", turns=(Turn("user", prompt), Turn("assistant", answer)),
                        images=(image,) if image else (), metadata={"n": i}, check_files=False)


@pytest.fixture(scope="module")
def registry():
    return Registry(autoload=True)


def test_records_round_trip(tmp_path):
    records = [
        conversation(0, "a", "/x/0.png"),
        Preference(id="p", prompt=(Turn("user", "q"),), chosen="good", rejected="bad", reference_logps=(-1.5, -2.0),
                   scores={"helpfulness": 3.0}, check_files=False),
        EvalItem(id="e", prompt="<image>\nq", images=("/x/1.png",), answer="A", choices=("A", "B"), check_files=False),
    ]
    assert write_records(tmp_path / "r.jsonl", records) == 3
    back = list(read_records(tmp_path / "r.jsonl"))
    assert back == records and back[0].metadata == {"n": 0} and back[1].scores == {"helpfulness": 3.0}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"kind": "conversation", "id": "z", "turns": []}) + "\n{oops\n")
    report = DataReport(source="t", on_bad_row="skip", max_bad_fraction=1.0)
    assert list(read_records(tmp_path / "bad.jsonl", report)) == []
    assert [(s.row, s.reason.split(":")[0]) for s in report.skipped] == [("line 1", "RecordError"),
                                                                         ("line 2", "ValueError")]
    with pytest.raises(BadRowError, match=r"bad.jsonl, row line 1"):
        list(read_records(tmp_path / "bad.jsonl"))


def ctx_for(tmp_path, on_bad_row="error"):
    import logging

    report = DataReport(source="op", on_bad_row=on_bad_row, max_bad_fraction=1.0)
    return ComponentContext(tmp_path, 0, None, report, "stage 't' op 0", logging.getLogger("t")), report


def test_subsample_and_shorten(tmp_path):
    records = [conversation(i, a) for i, a in enumerate(ANSWERS)]
    ctx, _ = ctx_for(tmp_path)
    two = Subsample(SubsampleConfig(n=2, seed=1)).apply(records, ctx)
    assert two == Subsample(SubsampleConfig(n=2, seed=1)).apply(records, ctx)
    assert [r.id for r in two] == sorted(r.id for r in two) and len(two) == 2
    half = Subsample(SubsampleConfig(fraction=0.5)).apply(records, ctx)
    assert len(half) == 2
    with pytest.raises(BadRowError, match=r"op 0, row q3: ValueError: .*no final answer"):
        Shorten().apply(records, ctx)
    ctx, report = ctx_for(tmp_path, on_bad_row="skip")
    short = Shorten().apply(records, ctx)
    assert [r.turns[1].content for r in short] == ["The answer is A.", "The answer is B.", "The answer is C."]
    assert short[0].turns[0] == records[0].turns[0] and short[0].metadata == {"n": 0}
    assert [s.row for s in report.skipped] == ["q3"]


def write_input(tmp_path, records):
    path = tmp_path / "input.jsonl"
    write_records(path, records)
    return path


PIPELINE = """
name: tf
model: {{name: llava, init: tiny}}
stages:
  - id: short
    kind: transform
    data: {{name: records-jsonl, path: {path}}}
    ops:
      - {{op: subsample, n: 3, seed: 0}}
      - {{op: shorten}}
    on_bad_row: skip
    max_bad_fraction: 0.5
  - id: tagged
    kind: transform
    data: {{name: stage-records, stage: short}}
    ops:
      - {{op: "mllm-core:shorten", pattern: 'The (answer is .+?)\\.', template: "So the {{answer}}."}}
"""


def test_pipeline_chains_stage_records_through_ops(tmp_path, registry, write_pipeline):
    source = write_input(tmp_path, [conversation(i, a) for i, a in enumerate(ANSWERS)])
    path = write_pipeline(PIPELINE.format(path=source))
    pipeline = load_pipeline(path, registry)
    assert stage_inputs(pipeline.stage("tagged")) == ["init", "short"]
    (op,) = pipeline.stage("tagged").components["ops"]
    assert (op.spec.name, op.spec.distribution, op.config.template) == ("shorten", "mllm-core", "So the {answer}.")
    runs = tmp_path / "runs"
    PipelineRunner(pipeline, registry, runs).run()
    short = list(read_records(runs / "tf" / "short" / "records.jsonl"))
    assert 2 <= len(short) <= 3 and all(r.turns[1].content.startswith("The answer is ") for r in short)
    metrics = json.loads((runs / "tf" / "short" / "metrics.json").read_text())
    assert metrics["records_in"] == 4 and metrics["records_out"] == len(short)
    assert set(metrics) == {"records_in", "op0_subsample", "op1_shorten", "records_out"}
    report = json.loads((runs / "tf" / "short" / "data_report.json").read_text())
    assert report["data"]["kept"] == 4 and len(report["ops"]) == 2
    tagged = list(read_records(runs / "tf" / "tagged" / "records.jsonl"))
    assert [r.id for r in tagged] == [r.id for r in short]
    for before, after in zip(short, tagged):
        assert after.turns[1].content == "So the " + before.turns[1].content.removeprefix("The ")
    # unchanged: both skipped; a changed op re-runs the transform and, chained, its reader
    again = PipelineRunner(load_pipeline(path, registry), registry, runs).run()
    assert {p.stage_id: p.action for p in again if p.stage_id != "init"} == {"short": "skip", "tagged": "skip"}
    changed = PipelineRunner(load_pipeline(path, registry, ["seed=5"]), registry, runs).plan()
    assert {p.stage_id: p.action for p in changed if p.stage_id != "init"} == {"short": "rerun", "tagged": "rerun"}


def test_stage_records_must_name_an_earlier_stage(tmp_path, registry, write_pipeline):
    path = write_pipeline("""
name: bad
model: {name: llava, init: tiny}
stages:
  - id: a
    kind: transform
    data: {name: stage-records, stage: b}
    ops: [{op: shorten}]
  - id: b
    kind: transform
    data: {name: records-jsonl, path: x.jsonl}
    ops: [{op: subsample, n: 1}]
""")
    with pytest.raises(ConfigError, match="refers to stage 'b', which is not defined before it"):
        load_pipeline(path, registry)


def test_op_config_errors_name_the_key(tmp_path, registry, write_pipeline):
    path = write_pipeline("""
name: bad
model: {name: llava, init: tiny}
stages:
  - id: a
    kind: transform
    data: {name: records-jsonl, path: x.jsonl}
    ops: [{op: subsample, n: 1, fraction: 0.5}, {op: shortn}]
""")
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path, registry)
    message = str(caught.value)
    assert "stages.a.ops[0]: " in message and "exactly one" in message
    assert "stages.a.ops[1].op: unknown transform_op 'shortn'; did you mean 'shorten'?" in message


def test_op_keys_are_checked_against_the_ops_config(tmp_path, registry, write_pipeline):
    path = write_pipeline("""
name: bad
model: {name: llava, init: tiny}
stages:
  - id: a
    kind: transform
    data: {name: records-jsonl, path: x.jsonl}
    ops: [{op: shorten, patern: "x"}]
""")
    with pytest.raises(ConfigError, match=r"stages.a.ops\[0\].patern: unknown key 'patern'; did you mean 'pattern'"):
        load_pipeline(path, registry)
