"""The generate stage: greedy and sampled answers of a tiny LLaVA, score rules, records,
and reading them back as wrong-vs-gold pairs through a train stage's data: {from: ...}."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mllm.data.badrows import DataReport
from mllm.data.recordio import read_records, write_records
from mllm.data.score_rules import ExactMatch, Length, LengthConfig, Regex, RegexConfig, normalize_answer
from mllm.data.stage_output import StageOutput, StageOutputConfig
from mllm.pipeline.config import ConfigError, load_pipeline, stage_inputs
from mllm.pipeline.runner import PipelineRunner
from mllm.plugins.registry import Registry
from mllm.records import Conversation, EvalItem, Turn

TINY = ("{name: llava, init: tiny, image_size: 16, patch_size: 8, vision_hidden_size: 16, vision_layers: 1, "
        "vision_intermediate_size: 32, text_hidden_size: 32, text_layers: 1, text_intermediate_size: 64, heads: 2, "
        "vocab_size: 300}")


@pytest.fixture(scope="module")
def registry():
    return Registry(autoload=True)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("gen-data")
    records = []
    for i, colour in enumerate(["red", "blue", "green", "red", "blue", "green"]):
        image = folder / f"{i}.png"
        Image.new("RGB", (16, 16), colour).save(image)
        records.append(Conversation(id=f"q{i}", turns=(Turn("user", "<image>\nWhat colour is it?"),
                                                       Turn("assistant", colour)), images=(str(image),)))
    # a multi-turn conversation: the prompt keeps the earlier answer
    records.append(Conversation(id="multi", turns=(Turn("user", "<image>\nColour?"), Turn("assistant", "red"),
                                                   Turn("user", "Sure?"), Turn("assistant", "yes")),
                                images=(str(folder / "0.png"),)))
    path = folder / "records.jsonl"
    write_records(path, records)
    return path


def pipeline_text(data_file: Path, generate_extra: str = "", train: str = "") -> str:
    return f"""
name: gen
model: {TINY}
stages:
  - id: mistakes
    kind: generate
    data: {{name: records-jsonl, path: {data_file}}}
    score: {{rule: exact-match}}
    max_new_tokens: 4
    batch_size: 4
{generate_extra}
{train}
"""


def test_score_rules():
    exact = ExactMatch()
    assert exact.score_answer(" The Red. ", "red") == (1.0, True)
    assert exact.score_answer("blue", "red") == (0.0, False)
    regex = Regex(RegexConfig(pattern=r"answer is [A-D]"))
    assert regex.score_answer("so the answer is B.", None) == (1.0, True)
    full = Regex(RegexConfig(pattern=r"[A-D]", full_match=True))
    assert full.score_answer("B is it", None)[1] is False
    length = Length(LengthConfig(min_chars=2, max_chars=4))
    assert length.score_answer("abc", None) == (3.0, True)
    assert length.score_answer("abcdef", None) == (6.0, False)
    with pytest.raises(ValueError):
        RegexConfig(pattern="(")
    # a rule scores generated records: score and correct in metadata, the stage's metrics
    records = [Conversation(id=f"p{i}", turns=(Turn("user", "q"), Turn("assistant", answer)),
                            metadata={"gold": "red", "source_id": f"p{i}", "sample": 0}, check_files=False)
               for i, answer in enumerate(["Red.", "blue"])]
    scored, metrics = exact.score(records)
    assert [(r.metadata["score"], r.metadata["correct"]) for r in scored] == [(1.0, True), (0.0, False)]
    assert metrics == {"accuracy": 0.5, "mean_score": 0.5, "wrong": 1}


def test_config_validation(write_pipeline, registry, data_file):
    with pytest.raises(ConfigError, match="temperature"):
        load_pipeline(write_pipeline(pipeline_text(data_file, "    num_samples: 3")), registry)
    with pytest.raises(ConfigError, match=r"stages.mistakes.score.rule: unknown score_rule 'exact'; "
                                          r"did you mean 'exact-match'"):
        load_pipeline(write_pipeline(pipeline_text(data_file).replace("exact-match", "exact")), registry)
    with pytest.raises(ConfigError, match=r"stages.mistakes.score.normalise: unknown key 'normalise'; "
                                          r"did you mean 'normalize'"):
        load_pipeline(write_pipeline(pipeline_text(data_file).replace("exact-match", "exact-match, normalise: no")),
                      registry)
    scored = load_pipeline(write_pipeline(pipeline_text(data_file).replace("exact-match", "mllm-core:regex, "
                                                                          "pattern: red")), registry)
    rule = scored.stage("mistakes").components["score"]
    assert (rule.spec.name, rule.spec.distribution, rule.config.pattern) == ("regex", "mllm-core", "red")
    # data: {from: ...} in a train stage: the stage is an input; unknown keys are rejected with a hint
    train = """  - id: dpo
    kind: train
    method: {name: dpo}
    data: {from: mistakes, pairs: wrong-vs-gold}"""
    pipeline = load_pipeline(write_pipeline(pipeline_text(data_file, train=train)), registry)
    assert stage_inputs(pipeline.stage("dpo")) == ["init", "mistakes"]
    assert pipeline.stage("dpo").config.model_dump(mode="json", by_alias=True)["data"] == {
        "from": "mistakes", "pairs": "wrong-vs-gold", "on_bad_row": "error", "max_bad_fraction": 0.05}
    with pytest.raises(ConfigError, match="did you mean 'pairs'"):
        load_pipeline(write_pipeline(pipeline_text(data_file, train=train.replace("pairs:", "pair:"))), registry)
    with pytest.raises(ConfigError, match=r"stages.dpo.data.pairs: unknown pairing 'wrong-vs-gld'; "
                                          r"did you mean 'wrong-vs-gold'"):
        load_pipeline(write_pipeline(pipeline_text(data_file, train=train.replace("wrong-vs-gold", "wrong-vs-gld"))),
                      registry)
    with pytest.raises(ConfigError, match="not defined before"):
        load_pipeline(write_pipeline(pipeline_text(data_file, train=train.replace("from: mistakes", "from: later"))),
                      registry)
    # the name form still works
    named = train.replace("{from: mistakes, pairs: wrong-vs-gold}", f"{{name: records-jsonl, path: {data_file}}}")
    assert load_pipeline(write_pipeline(pipeline_text(data_file, train=named)), registry)


def test_greedy_generation_scores_writes_records_and_pairs(tmp_path, write_pipeline, registry, data_file):
    path = write_pipeline(pipeline_text(data_file))
    runner = PipelineRunner(load_pipeline(path, registry), registry, tmp_path / "runs")
    runner.run()
    stage_dir = tmp_path / "runs" / "gen" / "mistakes"
    records = list(read_records(stage_dir / "records.jsonl"))
    assert [r.id for r in records] == ["q0", "q1", "q2", "q3", "q4", "q5", "multi"]
    multi = records[-1]
    assert [t.content for t in multi.turns[:3]] == ["<image>\nColour?", "red", "Sure?"]
    assert multi.metadata["gold"] == "yes"
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["prompts"] == 7 and metrics["answers"] == 7
    assert metrics["wrong"] == sum(not r.metadata["correct"] for r in records)
    # greedy single-turn answers are the evaluation engine's answers (same cache format)
    from mllm.generation.engine import AnswerEngine
    adapter = runner.load_model("init")
    engine = AnswerEngine(adapter, batch_size=2, max_new_tokens=4)
    direct = engine.answer([EvalItem(id=r.id, prompt=r.turns[0].content, images=r.images) for r in records[:6]])
    assert {r.id: r.turns[-1].content for r in records[:6]} == direct

    # the pairs: every wrong, non-empty answer gives chosen = gold, rejected = answer
    from mllm.data.recordio import CURRENT_RUN_DIR
    token = CURRENT_RUN_DIR.set(tmp_path / "runs" / "gen")
    try:
        dataset = StageOutput(StageOutputConfig(stage="mistakes", pairs="wrong-vs-gold"), registry)
        assert dataset.record_kind == "preference"
        pairs = list(dataset.records(DataReport(source="test")))
        plain = list(StageOutput(StageOutputConfig(stage="mistakes"), registry).records(DataReport(source="test")))
    finally:
        CURRENT_RUN_DIR.reset(token)
    assert len(plain) == 7
    expected = [r for r in records if not r.metadata["correct"] and r.turns[-1].content.strip()
                and normalize_answer(r.turns[-1].content) != normalize_answer(r.metadata["gold"])]
    assert [p.id for p in pairs] == [r.id for r in expected]
    for pair, record in zip(pairs, expected):
        assert pair.chosen == record.metadata["gold"] and pair.rejected == record.turns[-1].content
        assert pair.prompt == record.turns[:-1] and pair.images == record.images

    # a second run skips the stage
    plans = PipelineRunner(load_pipeline(path, registry), registry, tmp_path / "runs").run()
    assert {p.stage_id: p.action for p in plans}["mistakes"] == "skip"


def test_sampling_is_seeded_and_returns_num_samples(tmp_path, write_pipeline, registry, data_file):
    extra = "    num_samples: 3\n    temperature: 1.5\n    top_p: 0.95\n    seed: 7"
    path = write_pipeline(pipeline_text(data_file, extra))
    PipelineRunner(load_pipeline(path, registry), registry, tmp_path / "a").run()
    PipelineRunner(load_pipeline(path, registry), registry, tmp_path / "b").run()
    first = list(read_records(tmp_path / "a" / "gen" / "mistakes" / "records.jsonl"))
    second = list(read_records(tmp_path / "b" / "gen" / "mistakes" / "records.jsonl"))
    assert len(first) == 21
    assert [r.id for r in first[:3]] == ["q0-s0", "q0-s1", "q0-s2"]
    assert [r.turns[-1].content for r in first] == [r.turns[-1].content for r in second]
    answers = {r.turns[-1].content for r in first}
    assert len(answers) > 3  # sampling at a high temperature varies the answers
