"""Metrics over seeds and the verdict rule of ``findings:`` (mllm.reporting.findings), on fixed numbers."""

from __future__ import annotations

import json
import math

import pytest
from mllm.reporting.findings import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    RULE,
    TOO_FEW,
    WITHIN_NOISE,
    FindingConfig,
    aggregate,
    findings_markdown,
    judge_findings,
    summarize,
    welch_verdict,
)
from pydantic import ValidationError


def test_summarize_is_mean_sample_std_and_n():
    s = summarize([0.7, 0.8, 0.9])
    assert s["n"] == 3 and math.isclose(s["mean"], 0.8) and math.isclose(s["std"], 0.1)
    assert summarize([0.5]) == {"mean": 0.5, "std": None, "n": 1, "values": [0.5]}
    assert summarize([])["n"] == 0


# se = sqrt(0.01/3 + 0.01/3) = 0.08165; 2 se = 0.1633
@pytest.mark.parametrize("first, second, direction, verdict", [
    ([0.9, 1.0, 1.1], [0.7, 0.8, 0.9], "higher", HOLDS),            # d = 0.2 > 0.163
    ([0.9, 1.0, 1.1], [0.7, 0.8, 0.9], "lower", DOES_NOT_HOLD),     # the other way round
    ([0.85, 0.95, 1.05], [0.7, 0.8, 0.9], "higher", WITHIN_NOISE),  # d = 0.15 < 0.163
    ([0.85, 0.95, 1.05], [0.7, 0.8, 0.9], "lower", WITHIN_NOISE),
    ([0.7, 0.8, 0.9], [0.9, 1.0, 1.1], "lower", HOLDS),
    ([0.5, 0.5], [0.4, 0.4], "higher", HOLDS),                      # no spread at all: any difference counts
    ([0.5, 0.5], [0.5, 0.5], "higher", WITHIN_NOISE),
    ([0.9], [0.1, 0.2], "higher", TOO_FEW),
    ([], [0.1, 0.2], "higher", NOT_MEASURED),
])
def test_welch_two_standard_errors(first, second, direction, verdict):
    result = welch_verdict(first, second, direction)
    assert result["verdict"] == verdict and result["rule"] == RULE
    if verdict in (HOLDS, DOES_NOT_HOLD, WITHIN_NOISE) and len(first) == 3:
        assert math.isclose(result["se"], math.sqrt(0.01 / 3 + 0.01 / 3))


def test_a_fixed_arm_counts_no_variance():
    # init is one model: sft (std 0.1, n 3) against a fixed 0.7; se = 0.1 / sqrt(3) = 0.0577
    result = welch_verdict([0.8, 0.9, 1.0], [0.7], "higher", fixed=(False, True))
    assert math.isclose(result["se"], 0.1 / math.sqrt(3)) and result["verdict"] == HOLDS
    assert welch_verdict([0.62, 0.8, 0.98], [0.7], "higher", fixed=(False, True))["verdict"] == WITHIN_NOISE
    assert welch_verdict([0.9], [0.7], "higher", fixed=(True, True))["verdict"] == TOO_FEW


def test_unequal_spread_uses_each_arms_own_variance():
    # Welch, not pooled: a noisy arm (std 0.3, n 3) against a steady one (std 0.01, n 3)
    result = welch_verdict([0.5, 0.8, 1.1], [0.49, 0.5, 0.51], "higher")
    assert math.isclose(result["se"], math.sqrt(0.09 / 3 + 0.0001 / 3))
    assert result["verdict"] == WITHIN_NOISE  # d = 0.3 < 2 * 0.173


REPORT = {
    "models": {"init": {"easyvqa": {"accuracy": 0.5}},
               "lora-s0": {"easyvqa": {"accuracy": 0.80, "count": 10}}, "lora-s1": {"easyvqa": {"accuracy": 0.82}},
               "lora-s2": {"easyvqa": {"accuracy": 0.84}},
               "full-s0": {"easyvqa": {"accuracy": 0.60}}, "full-s1": {"easyvqa": {"accuracy": 0.62}},
               "full-s2": {"easyvqa": {"accuracy": 0.64}}},
    "training": {"lora-s0": {"loss": 1.0}, "lora-s1": {"loss": 2.0}},
}
ARMS = {"init": ["init"], "lora": ["lora-s0", "lora-s1", "lora-s2"], "full": ["full-s0", "full-s1", "full-s2"]}


def test_aggregate_over_each_arms_seeds():
    out = aggregate(REPORT, ARMS)
    lora = out["models"]["lora"]["easyvqa"]["accuracy"]
    assert lora["n"] == 3 and math.isclose(lora["mean"], 0.82) and math.isclose(lora["std"], 0.02)
    assert out["models"]["lora"]["easyvqa"]["count"]["n"] == 1
    assert out["models"]["init"]["easyvqa"]["accuracy"]["n"] == 1
    assert out["training"]["lora"]["loss"]["mean"] == 1.5


def test_judge_findings_and_markdown():
    findings = [FindingConfig(claim="LoRA keeps more", metric="easyvqa.accuracy", arms=["lora", "full"],
                              direction="higher", paper="+3.1 points"),
                FindingConfig(claim="no data", metric="pope.f1", arms=["lora", "full"], direction="higher")]
    judged = judge_findings(REPORT, ARMS, findings)
    assert judged[0]["verdict"] == HOLDS and judged[0]["arms"]["lora"]["n"] == 3
    assert math.isclose(judged[0]["difference"], 0.2) and judged[0]["paper"] == "+3.1 points"
    assert judged[1]["verdict"] == NOT_MEASURED
    text = "\n".join(findings_markdown(judged))
    assert "| LoRA keeps more | easyvqa.accuracy | lora > full | 0.8200 vs 0.6200 |" in text
    assert "**holds**" in text and f"Rule: {RULE}." in text


@pytest.mark.parametrize("data, message", [
    ({"claim": "c", "metric": "accuracy", "arms": ["a", "b"], "direction": "higher"}, "must be '<benchmark>.<metric>'"),
    ({"claim": "c", "metric": "x.y", "arms": ["a"], "direction": "higher"}, "arms lists two different arms"),
    ({"claim": "c", "metric": "x.y", "arms": ["a", "b"], "direction": "up"}, "higher"),
])
def test_bad_findings_are_refused(data, message):
    with pytest.raises(ValidationError, match=message):
        FindingConfig.model_validate(data)


def test_findings_table_from_report_files(tmp_path):
    from mllm.reporting.findings import findings_table

    finding = FindingConfig(claim="LoRA keeps more", metric="easyvqa.accuracy", arms=["lora", "full"],
                            direction="higher", paper="+3.1 points")
    path = tmp_path / "personalization_lora" / "report" / "report.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"findings": judge_findings(REPORT, ARMS, [finding])}))
    table = findings_table([path])
    assert ("| personalization_lora | LoRA keeps more | +3.1 points | lora 0.8200 ± 0.0200 vs full 0.6200 ± 0.0200 "
            "(easyvqa.accuracy) | 3 / 3 | holds |") in table
