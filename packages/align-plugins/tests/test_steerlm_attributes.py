"""The SteerLM family of mllm-align: the steering text round-trip, judge replies (bad ones
counted, never raised), the description rules, best-candidate selection, best-vs-worse pairs,
the steerlm prompt style behind an eval stage's steer:."""

from __future__ import annotations

import pytest
from mllm.data.badrows import DataReport
from mllm.pipeline.config import ConfigError
from mllm.records import Conversation, EvalItem, Turn
from mllm_align.candidates import best_vs_worse, select_best
from mllm_align.steerlm.attributes import (
    ATTRIBUTES,
    add_steer,
    aggregate,
    parse_attributes,
    parse_steer_text,
    split_steer,
    steer_attributes,
    steer_text,
    strip_steer_text,
)
from mllm_align.steerlm.describe_benchmark import EasyVQADescribeBenchmark, score_descriptions
from mllm_align.steerlm.description import description_attributes, hallucinated_words
from mllm_align.steerlm.rule import AttributeRule, AttributeRuleConfig, AttributeScorer, rate_records
from mllm_align.steerlm.style import SteerLMStyle, SteerLMStyleConfig

GOLD = "The image shows a red circle."


def test_steer_text_round_trip():
    wanted = {"helpfulness": 4, "correctness": 3, "coherence": 2, "complexity": 1, "verbosity": 0}
    text = steer_text(wanted)
    assert text.endswith("Helpfulness: 4, Correctness: 3, Coherence: 2, Complexity: 1, Verbosity: 0")
    assert "in the following attributes in 5-point Likert scale:" in text
    assert parse_steer_text(text) == wanted
    # mllm-dpo wrote the line without spaces: parsed the same
    assert parse_steer_text("Helpfulness:4,Correctness:3,Coherence:2,Complexity:1,Verbosity:0") == wanted
    user = "<image>\nDescribe the image in one sentence."
    steered = add_steer(user, wanted)
    assert split_steer(steered) == (user, wanted)
    assert split_steer(user) == (user, None)
    assert steer_attributes() == {name: 4 for name in ATTRIBUTES}
    assert steer_attributes({"Verbosity": 1})["verbosity"] == 1
    with pytest.raises(ValueError):
        steer_attributes({"verbosity": 5})
    with pytest.raises(ValueError):
        steer_attributes({"humour": 2})


@pytest.mark.parametrize("echoed", [
    "Helpfulness: 4, Correctness: 4, Coherence: 4, Complexity: 4, Verbosity: 4\nThe image shows a red circle.",
    "The image shows a red circle.\nHelpfulness:4,Correctness:4,Coherence:4,Complexity:4,Verbosity:4",
    steer_text(steer_attributes()) + "\nThe image shows a red circle.",
    "The image shows a red circle.",
])
def test_strip_echoed_attribute_line(echoed):
    assert strip_steer_text(echoed) == "The image shows a red circle."


def test_parse_judge_replies():
    reply = "Helpfulness: 3\nCorrectness: 4\nCoherence = 2\ncomplexity: 1\nVerbosity: 0"
    scores = parse_attributes(reply)
    assert scores == {"helpfulness": 3, "correctness": 4, "coherence": 2, "complexity": 1, "verbosity": 0}
    assert aggregate(scores) == 9.0
    for bad in ["", "great answer!", "Helpfulness: 3\nCorrectness: 4", "Helpfulness: 9, Correctness: 4, "
                "Coherence: 4, Complexity: 4, Verbosity: 4"]:
        with pytest.raises(ValueError):
            parse_attributes(bad)


class ScriptedJudge:
    """A judge (the Judge protocol: ``complete``) answering from a script, failing on request."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts = []

    def complete(self, prompt, *, system=None):
        self.prompts.append(prompt)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _candidates(answers, source="p0", gold=GOLD):
    return [Conversation(id=f"{source}-s{i}", turns=(Turn("user", "<image>\nDescribe the image."),
                                                     Turn("assistant", answer)),
                         images=("x.png",), metadata={"source_id": source, "gold": gold, "sample": i},
                         check_files=False)
            for i, answer in enumerate(answers)]


def test_unparseable_and_failing_judge_replies_are_counted_not_raised():
    judge = ScriptedJudge([
        "Helpfulness: 4\nCorrectness: 4\nCoherence: 4\nComplexity: 2\nVerbosity: 2",
        "I cannot rate this.",
        RuntimeError("HTTP 500"),
        "Helpfulness: 1, Correctness: 0, Coherence: 3, Complexity: 1, Verbosity: 7",
    ])
    rule = AttributeRuleConfig(judge={"name": "scripted"})
    records, metrics = rate_records(_candidates(["a", "b", "c", "d"]), AttributeScorer(rule, judge))
    assert metrics["scored"] == 1 and metrics["unscored"] == 3
    assert metrics["unscored_unparseable"] == 2 and metrics["unscored_failed"] == 1
    assert records[0].metadata["aggregate"] == 12.0 and records[0].metadata["correct"] is True
    assert records[0].metadata["score"] == 12.0  # the generic score other components rank by
    for record in records[1:]:
        assert record.metadata["attributes"] is None and record.metadata["aggregate"] is None
        assert record.metadata["score"] is None
        assert record.metadata["unscored_reason"]
    assert "The image shows a red circle." in judge.prompts[0] and "Describe the image." in judge.prompts[0]
    # unscored candidates never win
    assert [r.id for r in select_best(records)] == ["p0-s0"]


def test_attribute_rule_config():
    with pytest.raises(ValueError, match="exactly one"):
        AttributeRuleConfig()
    with pytest.raises(ValueError, match="exactly one"):
        AttributeRuleConfig(rules="description", judge={"name": "openai"})
    assert AttributeRuleConfig(rules="description").rules == "description"


def test_the_attributes_rule_builds_its_judge_through_the_context(tmp_path):
    built = []

    class Context:
        stage_dir = tmp_path

        def build_judge(self, ref, key, cache=None):
            built.append((ref, key, cache))
            return ScriptedJudge(["Helpfulness: 2, Correctness: 4, Coherence: 4, Complexity: 1, Verbosity: 1"])

    rule = AttributeRule(AttributeRuleConfig(judge={"name": "openai", "model": "m"}))
    records, metrics = rule.score(_candidates(["The image shows a red circle."]), Context())
    assert built == [({"name": "openai", "model": "m"}, "judge", tmp_path / "judge_cache.jsonl")]
    assert records[0].metadata["score"] == 10.0 and metrics["mean_aggregate"] == 10.0


def test_description_rules():
    perfect = description_attributes(GOLD, GOLD)
    assert perfect["correctness"] == 4 and perfect["coherence"] == 4 and aggregate(perfect) == 12
    half = description_attributes("The image shows a blue circle.", GOLD)
    assert half["correctness"] == 2 and half["helpfulness"] == 1  # one keyword, plus a wrong colour
    broken = description_attributes("red red circle", GOLD)
    assert broken["correctness"] == 4 and broken["coherence"] == 1  # no capital, no stop, repeated word
    rambling = description_attributes("The image shows a red circle and it is a very nice red circle on a plain "
                                      "background that I like a lot.", GOLD)
    assert rambling["verbosity"] == 4 and rambling["helpfulness"] == 3
    assert description_attributes("", GOLD)["verbosity"] == 0
    rule = AttributeRuleConfig(rules="description")
    scores, reason = AttributeScorer(rule).rate("q", "The image shows a red circle.", None)
    assert scores is None and "gold" in reason  # no gold: unscored, not an error


def test_hallucinated_words():
    assert hallucinated_words("The image shows a red circle.", "red", "circle") == []
    assert hallucinated_words("The image shows a blue circle.", "red", "circle") == ["blue"]
    assert hallucinated_words("A Blue TRIANGLE, blue.", "red", "circle") == ["blue", "triangle"]  # case, once each
    assert hallucinated_words("A grey square, reddish, circles.", "red", "circle") == []  # not easy-VQA's words
    assert hallucinated_words("", "red", "circle") == []


def _described(colour, shape, n):
    return EvalItem(id=f"d{n}", prompt="<image>\nDescribe the image in one sentence.", images=("x.png",),
                    answer=f"The image shows a {colour} {shape}.", metadata={"colour": colour, "shape": shape},
                    check_files=False)


def test_describe_benchmark_hallucination_rate():
    items = [_described("red", "circle", 0), _described("teal", "triangle", 1), _described("gray", "rectangle", 2),
             _described("yellow", "circle", 3)]
    answers = {"d0": "The image shows a red circle.",            # right: no hallucination
               "d1": "The image shows a teal rectangle.",        # a wrong shape
               "d2": "The image shows a gray rectangle and a blue circle.",  # right, plus two wrong words: once
               "d3": "The image shows a shape."}                 # names nothing: no hallucination
    metrics = score_descriptions(items, answers)
    assert set(metrics) == set(EasyVQADescribeBenchmark.metric_keys)
    assert metrics["hallucination_rate"] == 0.5
    assert metrics["both_accuracy"] == 0.5 and metrics["shape_accuracy"] == 0.5 and metrics["colour_accuracy"] == 0.75
    assert EasyVQADescribeBenchmark.metric_keys[-1] == "hallucination_rate"  # added after the existing metrics
    assert score_descriptions(items[:1], {"d0": "A green circle."})["hallucination_rate"] == 1.0


def _scored(aggregates, source="p0", answers=None):
    out = []
    for i, value in enumerate(aggregates):
        answer = answers[i] if answers else f"answer {i}" + "!" * i
        metadata = {"source_id": source, "sample": i, "gold": GOLD,
                    "score": value, "attributes": None if value is None else {}}
        out.append(Conversation(id=f"{source}-s{i}", turns=(Turn("user", "<image>\nQ"), Turn("assistant", answer)),
                                images=("x.png",), metadata=metadata, check_files=False))
    return out


def test_select_best_ties_and_thresholds():
    records = _scored([7, 9, 9, None], answers=["a", "bbbbbb", "bb", "c"]) + _scored([3, 5], source="p1")
    assert [r.id for r in select_best(records)] == ["p0-s1", "p1-s1"]
    assert [r.id for r in select_best(records, ties="shortest")] == ["p0-s2", "p1-s1"]
    assert [r.id for r in select_best(records, ties="longest")] == ["p0-s1", "p1-s1"]
    assert [r.id for r in select_best(records, ties="all")] == ["p0-s1", "p0-s2", "p1-s1"]
    assert [r.id for r in select_best(records, min_score=6)] == ["p0-s1"]  # p1's best (5) is too low
    assert [r.id for r in select_best(records, min_score=9)] == ["p0-s1"]  # the threshold is inclusive
    assert select_best(records, min_score=10) == []
    assert select_best(_scored([None, None])) == []


def test_best_vs_worse_pairs():
    records = (_scored([10, 9, 7, 4]) + _scored([8, 7], source="p1") + _scored([12, 10, 10], source="p2")
               + _scored([None, 6, 3], source="p3"))
    report = DataReport(source="test")
    pairs = list(best_vs_worse(records, report, "records.jsonl"))
    by_source = {p.metadata["source_id"]: p for p in pairs}
    assert set(by_source) == {"p0", "p2", "p3"}  # p1: nothing 2 points below its best
    assert by_source["p0"].chosen == "answer 0" and by_source["p0"].rejected == "answer 3!!!"
    assert by_source["p0"].scores == {"chosen": 10.0, "rejected": 4.0}
    assert by_source["p2"].rejected == "answer 1!"  # the first of the tied lowest
    assert by_source["p3"].chosen == "answer 1!"  # the unscored candidate is ignored
    unscored = [Conversation(id="x", turns=(Turn("user", "Q"), Turn("assistant", "A")), metadata={"source_id": "x"},
                             check_files=False)]
    with pytest.raises(ConfigError, match="has no score; pairs: best-vs-worse needs"):
        list(best_vs_worse(unscored, report, "records.jsonl"))


def test_steer_is_the_steerlm_prompt_style():
    from mllm.stages.evaluate import EvalStageConfig

    base = {"id": "e", "kind": "eval", "benchmarks": [{"name": "easyvqa"}]}
    style = EvalStageConfig.model_validate({**base, "steer": True}).prompt_style
    assert (style.name, style.options(), style.models) == ("steerlm", {}, None)
    assert EvalStageConfig.model_validate({**base, "steer": False}).prompt_style is None
    config = EvalStageConfig.model_validate({**base, "steer": {"verbosity": 1, "models": ["steerlm"]}})
    assert config.prompt_style.options() == {"verbosity": 1}
    assert config.prompt_style.applies_to("steerlm") and not config.prompt_style.applies_to("sft")
    with pytest.raises(ValueError, match="not both"):
        EvalStageConfig.model_validate({**base, "steer": {}, "prompt_style": {"name": "plain"}})
    with pytest.raises(ValueError):
        SteerLMStyleConfig(humour=3)
    steered = SteerLMStyle(SteerLMStyleConfig(verbosity=1))
    prompt = steered.apply("<image>\nDescribe the image.")
    assert split_steer(prompt) == ("<image>\nDescribe the image.", {**steer_attributes(), "verbosity": 1})
    assert steered.clean(steer_text(steer_attributes()) + "\nThe image shows a red circle.") == GOLD


def test_steer_keys_are_checked_at_load_time(tmp_path):
    from mllm.pipeline.config import load_pipeline
    from mllm.plugins.registry import Registry

    path = tmp_path / "p.yaml"
    path.write_text("""
name: s
model: {name: llava, init: tiny}
stages:
  - id: e
    kind: eval
    steer: {verbosty: 2}
    benchmarks: [{name: easyvqa}]
""")
    with pytest.raises(ConfigError, match=r"stages.e.prompt_style.verbosty: unknown key 'verbosty'; "
                                          r"did you mean 'verbosity'"):
        load_pipeline(path, Registry(autoload=True))
