"""Every pipeline name is a plugin: score rules, transform ops, pairings and prompt styles are
listed by `mllm plugins` with their distributions, and a third-party plugin that adds one of
each runs them all in one pipeline (a tiny model, a few steps)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mllm.data.recordio import read_records, write_records
from mllm.plugins import registry as plugins
from mllm.records import Conversation, Turn
from mllm.testing import TINY_LLAVA, run_pipeline_in, write_image

EXPECTED = {
    ("score_rule", "exact-match"): "mllm-core", ("score_rule", "regex"): "mllm-core",
    ("score_rule", "length"): "mllm-core", ("score_rule", "attributes"): "mllm-align",
    ("transform_op", "subsample"): "mllm-core", ("transform_op", "shorten"): "mllm-core",
    ("transform_op", "realign"): "mllm-data", ("transform_op", "llava-instruct"): "mllm-data",
    ("pairing", "wrong-vs-gold"): "mllm-core", ("pairing", "best-vs-worse"): "mllm-align",
    ("prompt_style", "plain"): "mllm-core", ("prompt_style", "instruction"): "mllm-core",
    ("prompt_style", "steerlm"): "mllm-align", ("text_corpus", "easyvqa"): "mllm-data",
    ("dataset", "easyvqa-describe"): "mllm-align", ("benchmark", "easyvqa-describe"): "mllm-align",
    ("method", "steerlm"): "mllm-align",
}


def test_mllm_plugins_json_lists_every_pipeline_name_with_its_distribution():
    result = subprocess.run([sys.executable, "-m", "mllm", "plugins", "--json"], capture_output=True, text=True,
                            check=True)
    listing = json.loads(result.stdout)
    found = {(row["kind"], row["name"]): row["distribution"] for row in listing["components"]}
    assert {key: found.get(key) for key in EXPECTED} == EXPECTED
    assert not listing["clashes"] and not listing["failures"]


# -- a third-party plugin with one component of each of the four kinds ---------------------------

PLUGIN = '''
"""mllm-thirdparty: one score rule, transform op, pairing and prompt style."""
from mllm import hookimpl
from mllm.interfaces import ComponentConfig
from mllm.plugins.specs import ComponentSpec
from mllm.records import Conversation, Preference, Turn


class AskConfig(ComponentConfig):
    text: str


class Ask:
    """transform op: appends an instruction to every user turn."""

    def __init__(self, config):
        self.config = config

    def apply(self, records, context):
        out = []
        for record in records:
            turns = tuple(Turn(t.role, f"{t.content} {self.config.text}" if t.role == "user" else t.content)
                          for t in record.turns)
            out.append(Conversation(id=record.id, turns=turns, images=record.images, metadata=record.metadata,
                                    check_files=False))
        return out


class WordCountConfig(ComponentConfig):
    max_words: int = 3


class WordCount:
    """score rule: score = words in the answer; correct when at most max_words."""

    needs_gold = False

    def __init__(self, config):
        self.config = config

    def score(self, records, context):
        out = []
        for record in records:
            words = len(record.turns[-1].content.split())
            metadata = {**record.metadata, "score": float(words), "correct": words <= self.config.max_words}
            out.append(Conversation(id=record.id, turns=record.turns, images=record.images, metadata=metadata,
                                    check_files=False))
        return out, {"mean_words": sum(r.metadata["score"] for r in out) / len(out)}


class GoldFirstConfig(ComponentConfig):
    prefix: str = ""


class GoldFirst:
    """pairing: chosen = prefix + gold, rejected = the model's answer, for every answer."""

    def __init__(self, config):
        self.config = config

    def pairs(self, records, report, source):
        for record in records:
            yield Preference(id=record.id, prompt=tuple(record.turns[:-1]),
                             chosen=self.config.prefix + record.metadata["gold"],
                             rejected=record.turns[-1].content or "-", images=record.images, check_files=False)


class ShoutConfig(ComponentConfig):
    pass


class Shout:
    """prompt style: asks to shout, scores the answer upper-cased."""

    def __init__(self, config):
        self.config = config

    def apply(self, prompt):
        return prompt + " SHOUT."

    def clean(self, answer):
        return answer.upper()


def _spec(name, cls):
    return ComponentSpec(name=name, impl=f"mllm_thirdparty:{cls}", config=f"mllm_thirdparty:{cls}Config")


@hookimpl
def mllm_register_transform_ops(register):
    register(_spec("ask", "Ask"))


@hookimpl
def mllm_register_score_rules(register):
    register(_spec("word-count", "WordCount"))


@hookimpl
def mllm_register_pairings(register):
    register(_spec("gold-first", "GoldFirst"))


@hookimpl
def mllm_register_prompt_styles(register):
    register(_spec("shout", "Shout"))
'''


@pytest.fixture
def thirdparty(tmp_path, monkeypatch):
    """The installed plugins plus mllm-thirdparty (registered in-process), process-wide while the test runs."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "mllm_thirdparty.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("mllm_thirdparty", None)
    import mllm_thirdparty

    registry = plugins.Registry(autoload=True)
    assert registry.register_plugin(mllm_thirdparty, distribution="mllm-thirdparty", version="0.1")
    previous = plugins._default
    plugins.set_registry(registry)
    yield registry
    plugins.set_registry(previous)


def _model() -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in {"name": "llava", **TINY_LLAVA}.items()) + "}"


def test_a_third_party_plugin_adds_one_of_each_kind_and_a_pipeline_uses_them(tmp_path, thirdparty):
    for kind, name in (("transform_op", "ask"), ("score_rule", "word-count"), ("pairing", "gold-first"),
                       ("prompt_style", "shout")):
        assert thirdparty.get(kind, f"mllm-thirdparty:{name}").distribution == "mllm-thirdparty"
    records = [Conversation(id=f"q{i}", turns=(Turn("user", "<image>\nWhat colour is it?"), Turn("assistant", colour)),
                            images=(str(write_image(tmp_path / f"{i}.png", colour=colour)),))
               for i, colour in enumerate(["red", "blue", "green", "red"])]
    write_records(tmp_path / "questions.jsonl", records)
    pipeline = textwrap.dedent(f"""
        name: thirdparty
        model: {_model()}
        stages:
          - id: prompts
            kind: transform
            data: {{name: records-jsonl, path: {tmp_path / "questions.jsonl"}}}
            ops: [{{op: ask, text: "One word."}}]
          - id: answers
            kind: generate
            data: {{name: stage-records, stage: prompts}}
            score: {{rule: word-count, max_words: 2}}
            max_new_tokens: 3
          - id: dpo
            kind: train
            method: {{name: dpo, beta: 0.1}}
            data: {{from: answers, pairs: {{name: gold-first, prefix: "It is "}}}}
            train: {{max_steps: 2, batch_size: 2, logging_steps: 1, save_steps: 100, warmup_ratio: 0.0}}
          - id: eval
            kind: eval
            models: [init, dpo]
            benchmarks: [{{name: easyvqa, split: test, limit: 3}}]
            prompt_style: {{name: shout, models: [dpo]}}
        """)
    run_dir = run_pipeline_in(tmp_path / "runs", pipeline, registry=thirdparty)

    asked = list(read_records(run_dir / "prompts" / "records.jsonl"))
    assert [r.turns[0].content for r in asked] == ["<image>\nWhat colour is it? One word."] * 4
    answers = list(read_records(run_dir / "answers" / "records.jsonl"))
    assert all(r.metadata["score"] == len(r.turns[-1].content.split()) for r in answers)
    metrics = json.loads((run_dir / "answers" / "metrics.json").read_text())
    assert metrics["answers"] == 4 and "mean_words" in metrics
    report = json.loads((run_dir / "dpo" / "data_report.json").read_text())
    assert report["kept"] == 4  # gold-first pairs every answer
    assert (run_dir / "dpo" / "model").is_dir()
    styled = [json.loads(line) for line in (run_dir / "eval" / "dpo" / "easyvqa" / "answers.jsonl").open()]
    plain = [json.loads(line) for line in (run_dir / "eval" / "init" / "easyvqa" / "answers.jsonl").open()]
    assert all(row["prompt"].endswith(" SHOUT.") and row["answer"] == row["answer"].upper() for row in styled)
    assert not any(row["prompt"].endswith(" SHOUT.") for row in plain)


def test_unknown_names_of_the_new_kinds_suggest_close_ones(tmp_path, thirdparty):
    from mllm.pipeline.config import ConfigError, load_pipeline

    path = Path(tmp_path / "p.yaml")
    path.write_text(textwrap.dedent(f"""
        name: typo
        model: {_model()}
        stages:
          - id: e
            kind: eval
            benchmarks: [{{name: easyvqa}}]
            prompt_style: {{name: shuot}}
        """))
    with pytest.raises(ConfigError, match=r"stages.e.prompt_style.name: unknown prompt_style 'shuot'; "
                                          r"did you mean 'shout'"):
        load_pipeline(path, thirdparty)
