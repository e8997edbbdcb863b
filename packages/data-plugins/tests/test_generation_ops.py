"""mllm-data's transform ops: realign (ReAlign) and llava-instruct (LLaVA's data generation),
with a scripted generator and with a local tiny model (the hf-local judge of mllm-eval)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mllm.data.badrows import DataReport
from mllm.data.context import ComponentContext
from mllm.data.recordio import read_records, write_records
from mllm.pipeline.config import load_pipeline, stage_inputs
from mllm.pipeline.runner import PipelineRunner
from mllm.plugins.registry import Registry
from mllm.records import Conversation, Turn
from mllm_data.llava_instruct import DETAIL_QUESTIONS, LLAVA_SYSTEM, LlavaInstruct, LlavaInstructConfig, parse_qa
from mllm_data.realign import Realign, RealignConfig

ANSWERS = [
    "Lectures explain things. The solution is simple. The answer is A.",
    "Magnets attract. Opposite poles attract. The answer is B.",
    "A long lecture. Another sentence. The answer is C.",
    "No final answer here.",
]


def conversation(i: int, answer: str) -> Conversation:
    return Conversation(id=f"q{i}", turns=(Turn("user", f"Question {i}?"), Turn("assistant", answer)),
                        metadata={"n": i}, check_files=False)


@pytest.fixture(scope="module")
def registry():
    return Registry(autoload=True)


def pipeline_ops(registry) -> dict[str, str]:
    return {name: registry.get("transform_op", name).distribution for name in ("realign", "llava-instruct")}


def ctx_for(tmp_path, judge):
    class Ctx(ComponentContext):
        def build_judge(self, ref, key, cache=None):  # a scripted generator standing in for a model
            return judge

    report = DataReport(source="op", on_bad_row="error", max_bad_fraction=1.0)
    return Ctx(tmp_path, 0, None, report, "stage 't' op 0", logging.getLogger("t")), report


def write_input(tmp_path, records):
    path = tmp_path / "input.jsonl"
    write_records(path, records)
    return path


@pytest.fixture
def write_pipeline(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / "pipeline.yaml"
        path.write_text(text)
        return path

    return write


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
    op = Realign(RealignConfig(judge={"name": "x"}))
    out = op.apply(records, ctx)
    assert [r.turns[1].content for r in out] == ["First, think. Then conclude. The answer is A.",
                                                 "First, think. Then conclude. The answer is B."]
    assert "[Question]\nQuestion 0?" in judge.prompts[0][1] and ANSWERS[0] in judge.prompts[0][1]
    assert out[0].metadata["realigned"] is True
    again = op.apply(records, ctx)  # cached per row in the stage folder
    assert again == out and len(judge.prompts) == 2
    assert len((tmp_path / "realign_cache.jsonl").read_text().splitlines()) == 2
    shorter = Realign(RealignConfig(judge={"name": "y"}, min_length_ratio=0.9)).apply(records, ctx)
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
    out = LlavaInstruct(LlavaInstructConfig(generator={"name": "x"})).apply([record], ctx)
    conv, detail, complex_ = out
    assert conv.id == "img1-conversation" and conv.images == record.images
    assert [t.content for t in conv.turns] == ["<image>\nWhat shape is shown?", "A square.", "What colour is it?", "Red."]
    assert detail.turns[0].content.removeprefix("<image>\n") in DETAIL_QUESTIONS
    assert detail.turns[1].content.startswith("The image shows")
    assert [t.content for t in complex_.turns] == ["<image>\nWhy is the square red?", "Because it was painted red."]
    systems = [s for s, _ in generator.prompts]
    assert systems == [LLAVA_SYSTEM[k] for k in ("conversation", "detail", "complex")]
    assert "A red square on white.\n\nsquare: [0.100, 0.200, 0.500, 0.600]\ncircle: [0.500" in generator.prompts[1][1]
    with pytest.raises(ValueError, match="no 'Question:'"):
        parse_qa("just some text")


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
    assert pipeline_ops(registry) == {"realign": "mllm-data", "llava-instruct": "mllm-data"}
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
    assert record.turns[0].content.removeprefix("<image>\n") in DETAIL_QUESTIONS
    assert record.turns[1].content.strip()
    assert Path(runs / "gen" / "instruct" / "llava_instruct_cache.jsonl").is_file()
