"""The transform stage: records I/O, ops, stage-records chaining, judges (a local tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mllm.data.badrows import BadRowError, DataReport
from mllm.data.recordio import read_records, write_records
from mllm.pipeline.config import ConfigError, load_pipeline, stage_inputs
from mllm.pipeline.runner import PipelineRunner
from mllm.plugins.registry import Registry
from mllm.records import Conversation, EvalItem, Preference, Turn
from mllm.stages import transform as T

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


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A tiny Llama causal LM with a byte-level tokenizer, saved as a Hugging Face folder (hf-local judge)."""
    import torch
    from mllm.models.tokenizer import train_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = train_tokenizer(400)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


def ctx_for(tmp_path, on_bad_row="error", judge=None):
    report = DataReport(source="op", on_bad_row=on_bad_row, max_bad_fraction=1.0)

    class Ctx(T.OpContext):
        def build_judge(self, ref, key):  # a scripted generator standing in for a model
            return judge

    import logging

    return Ctx(tmp_path, 0, None, report, "stage 't' op 0", logging.getLogger("t")), report


def test_subsample_and_shorten(tmp_path):
    records = [conversation(i, a) for i, a in enumerate(ANSWERS)]
    ctx, _ = ctx_for(tmp_path)
    two = T.op_subsample(T.SubsampleOp(op="subsample", n=2, seed=1), records, ctx)
    assert two == T.op_subsample(T.SubsampleOp(op="subsample", n=2, seed=1), records, ctx)
    assert [r.id for r in two] == sorted(r.id for r in two) and len(two) == 2
    half = T.op_subsample(T.SubsampleOp(op="subsample", fraction=0.5), records, ctx)
    assert len(half) == 2
    with pytest.raises(BadRowError, match=r"op 0, row q3: ValueError: .*no final answer"):
        T.op_shorten(T.ShortenOp(op="shorten"), records, ctx)
    ctx, report = ctx_for(tmp_path, on_bad_row="skip")
    short = T.op_shorten(T.ShortenOp(op="shorten"), records, ctx)
    assert [r.turns[1].content for r in short] == ["The answer is A.", "The answer is B.", "The answer is C."]
    assert short[0].turns[0] == records[0].turns[0] and short[0].metadata == {"n": 0}
    assert [s.row for s in report.skipped] == ["q3"]


class Scripted:
    """A generator that answers from a function and counts its calls."""

    def __init__(self, reply):
        self.reply = reply
        self.prompts = []

    def complete(self, prompt, *, system=None):
        self.prompts.append((system, prompt))
        return self.reply(prompt)


def test_realign_keeps_final_answer_and_caches(tmp_path):
    records = [conversation(i, a) for i, a in enumerate(ANSWERS[:2])]
    judge = Scripted(lambda prompt: "First, think. Then conclude.")
    ctx, _ = ctx_for(tmp_path, judge=judge)
    op = T.RealignOp(op="realign", judge={"name": "x"})
    out = T.op_realign(op, records, ctx)
    assert [r.turns[1].content for r in out] == ["First, think. Then conclude. The answer is A.",
                                                 "First, think. Then conclude. The answer is B."]
    assert "[Question]\nQuestion 0?" in judge.prompts[0][1] and ANSWERS[0] in judge.prompts[0][1]
    assert out[0].metadata["realigned"] is True
    again = T.op_realign(op, records, ctx)  # cached per row in the stage folder
    assert again == out and len(judge.prompts) == 2
    assert len((tmp_path / "realign_cache.jsonl").read_text().splitlines()) == 2
    shorter = T.op_realign(T.RealignOp(op="realign", judge={"name": "y"}, min_length_ratio=0.9), records, ctx)
    assert shorter[0].turns[1].content == ANSWERS[0]  # ReAlign's length filter kept the original


def test_llava_instruct_parses_llava_format(tmp_path):
    record = Conversation(id="img1", turns=(Turn("user", "<image>\nDescribe briefly."),
                                            Turn("assistant", "A red square on white.")),
                          images=("/x/img1.png",), metadata={"boxes": [{"category": "square", "bbox": [0.1, 0.2, 0.5, 0.6]},
                                                                      ["circle", 0.5, 0.5, 0.9, 0.9]]},
                          check_files=False)

    def reply(prompt):
        if "Question:\nWhat might happen" in prompt:  # the complex few-shot example
            return "Question:\nWhy is the square red?\n===\nAnswer:\nBecause it was painted red."
        if "Question:\nWhat is the man" in prompt:  # the conversation few-shot example
            return ("Question:\nWhat shape is shown?\n===\nAnswer:\nA square.\n===\n"
                    "Question:\nWhat colour is it?\n===\nAnswer:\nRed.")
        return "The image shows a red square on a white background."

    generator = Scripted(reply)
    ctx, _ = ctx_for(tmp_path, judge=generator)
    out = T.op_llava_instruct(T.LlavaInstructOp(op="llava-instruct", generator={"name": "x"}), [record], ctx)
    conv, detail, complex_ = out
    assert conv.id == "img1-conversation" and conv.images == record.images
    assert [t.content for t in conv.turns] == ["<image>\nWhat shape is shown?", "A square.", "What colour is it?", "Red."]
    assert detail.turns[0].content.removeprefix("<image>\n") in T.DETAIL_QUESTIONS
    assert detail.turns[1].content.startswith("The image shows")
    assert [t.content for t in complex_.turns] == ["<image>\nWhy is the square red?", "Because it was painted red."]
    systems = [s for s, _ in generator.prompts]
    assert systems == [T.LLAVA_SYSTEM[k] for k in ("conversation", "detail", "complex")]
    assert "A red square on white.\n\nsquare: [0.100, 0.200, 0.500, 0.600]\ncircle: [0.500" in generator.prompts[1][1]
    with pytest.raises(ValueError, match="no 'Question:'"):
        T.parse_qa("just some text")


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
  - id: realigned
    kind: transform
    data: {{name: stage-records, stage: short}}
    ops:
      - op: realign
        judge: {{name: hf-local, path: {lm}, max_new_tokens: 4}}
"""


def test_pipeline_chains_stage_records_and_realigns_with_a_local_model(tmp_path, registry, tiny_lm, write_pipeline):
    pytest.importorskip("mllm_eval", reason="the hf-local judge comes with mllm-eval")
    source = write_input(tmp_path, [conversation(i, a) for i, a in enumerate(ANSWERS)])
    path = write_pipeline(PIPELINE.format(path=source, lm=tiny_lm))
    pipeline = load_pipeline(path, registry)
    assert stage_inputs(pipeline.stage("realigned")) == ["init", "short"]
    runs = tmp_path / "runs"
    PipelineRunner(pipeline, registry, runs).run()
    short = list(read_records(runs / "tf" / "short" / "records.jsonl"))
    assert 2 <= len(short) <= 3 and all(r.turns[1].content.startswith("The answer is ") for r in short)
    metrics = json.loads((runs / "tf" / "short" / "metrics.json").read_text())
    assert metrics["records_in"] == 4 and metrics["records_out"] == len(short)
    report = json.loads((runs / "tf" / "short" / "data_report.json").read_text())
    assert report["data"]["kept"] == 4 and len(report["ops"]) == 2
    realigned = list(read_records(runs / "tf" / "realigned" / "records.jsonl"))
    assert [r.id for r in realigned] == [r.id for r in short]
    for before, after in zip(short, realigned):  # the tiny model's rewrite, then the kept final answer
        assert after.turns[1].content.endswith(before.turns[1].content) and after.metadata["realigned"]
    assert len((runs / "tf" / "realigned" / "realign_cache.jsonl").read_text().splitlines()) == len(short)
    # unchanged: both skipped; a changed op re-runs the transform and, chained, its reader
    again = PipelineRunner(load_pipeline(path, registry), registry, runs).run()
    assert {p.stage_id: p.action for p in again if p.stage_id != "init"} == {"short": "skip", "realigned": "skip"}
    changed = PipelineRunner(load_pipeline(path, registry, ["seed=5"]), registry, runs).plan()
    assert {p.stage_id: p.action for p in changed if p.stage_id != "init"} == {"short": "rerun", "realigned": "rerun"}


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
    assert "stages.a.ops.0" in message and "exactly one" in message
    assert "stages.a.ops.1" in message and "shortn" in message


def test_llava_instruct_with_a_local_model(tmp_path, registry, tiny_lm, write_pipeline):
    """The detail type needs no parsing, so even an untrained tiny model yields records."""
    pytest.importorskip("mllm_eval", reason="the hf-local judge comes with mllm-eval")
    caption = Conversation(id="c0", turns=(Turn("user", "<image>\nRender a short caption."),
                                           Turn("assistant", "a red square")), images=("/x/c0.png",),
                           check_files=False)
    source = write_input(tmp_path, [caption])
    path = write_pipeline(f"""
name: gen
model: {{name: llava, init: tiny}}
stages:
  - id: instruct
    kind: transform
    data: {{name: records-jsonl, path: {source}}}
    ops:
      - op: llava-instruct
        generator: {{name: hf-local, path: {tiny_lm}, max_new_tokens: 6}}
        types: [detail]
""")
    runs = tmp_path / "runs"
    PipelineRunner(load_pipeline(path, registry), registry, runs).run()
    (record,) = list(read_records(runs / "gen" / "instruct" / "records.jsonl"))
    assert record.id == "c0-detail" and record.images == ("/x/c0.png",)
    assert record.turns[0].content.removeprefix("<image>\n") in T.DETAIL_QUESTIONS
    assert record.turns[1].content.strip()
    assert Path(runs / "gen" / "instruct" / "llava_instruct_cache.jsonl").is_file()
