"""Metrics over seeds (mean, std, n) and a verdict per claim of a pipeline's ``findings:`` block.

The verdict rule (printed with every verdict, see :data:`RULE`): with ``d`` the mean of the
first arm minus the mean of the second, signed so that the claimed direction is positive,
and ``se = sqrt(s1^2/n1 + s2^2/n2)`` the Welch standard error of that difference (sample
standard deviations), a claim

* ``holds`` when ``d > 2 se``,
* ``does not hold`` when ``d < -2 se``,
* is ``within noise`` otherwise;
* is ``too few seeds`` when an arm has fewer than 2 values (no spread can be estimated),
  except an arm the seeds do not repeat (``init``, a stage with its own seed): it is one
  fixed model, its term in ``se`` is 0 (a comparison with a fixed value),
* is ``not measured`` when an arm has no value of the metric.

Pure Python (no torch): the report stage and its tests use it on plain numbers.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

HOLDS, DOES_NOT_HOLD, WITHIN_NOISE = "holds", "does not hold", "within noise"
TOO_FEW, NOT_MEASURED = "too few seeds", "not measured"
#: standard errors the difference must exceed
Z = 2.0
RULE = ("Welch two standard errors: d = mean(first arm) - mean(second arm), signed so the claimed direction is "
        "positive; se = sqrt(s1^2/n1 + s2^2/n2), an arm the seeds do not repeat (init) counting 0; holds if "
        "d > 2 se, does not hold if d < -2 se, otherwise within noise; too few seeds if a repeated arm has n < 2")


class FindingConfig(BaseModel):
    """One claim of a pipeline's ``findings:`` block: ``arms[0]`` is claimed ``direction`` than ``arms[1]`` on ``metric``."""

    model_config = ConfigDict(extra="forbid")

    claim: str = Field(description="the claim in words, e.g. 'LoRA keeps easy-VQA accuracy better than full fine-tuning'")
    metric: str = Field(description="'<benchmark>.<metric>' of the report (e.g. easyvqa.accuracy), or "
                                    "'training.<metric>' of the arms' training stages")
    arms: list[str] = Field(description="two arms: stage ids as written (without -s<seed>), a sweep arm "
                                        "'<stage>-<variant>', or init")
    direction: Literal["higher", "lower"] = Field(description="the claim: the first arm's metric is higher (or lower) "
                                                              "than the second's")
    paper: str = Field("", description="the paper's figure for the claim, shown beside mllm's (free text)")

    @field_validator("metric")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if "." not in value.strip(".") :
            raise ValueError(f"metric {value!r} must be '<benchmark>.<metric>' (e.g. easyvqa.accuracy) or "
                             "'training.<metric>'")
        return value

    @field_validator("arms")
    @classmethod
    def _two_arms(cls, value: list[str]) -> list[str]:
        if len(value) != 2 or value[0] == value[1]:
            raise ValueError(f"arms lists two different arms (the claimed better one first), got {value}")
        return value


def summarize(values: list[float]) -> dict[str, Any]:
    """``{mean, std, n, values}``; ``std`` is the sample standard deviation (``None`` for n < 2)."""
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def welch_verdict(first: list[float], second: list[float], direction: str,
                  fixed: tuple[bool, bool] = (False, False)) -> dict[str, Any]:
    """The verdict on "``first`` is ``direction`` (higher/lower) than ``second``" by :data:`RULE`;
    ``fixed`` marks an arm that is one model the seeds do not repeat."""
    a, b = summarize(first), summarize(second)
    out: dict[str, Any] = {"difference": None, "se": None, "rule": RULE}
    if not a["n"] or not b["n"]:
        return {**out, "verdict": NOT_MEASURED}
    sign = 1.0 if direction == "higher" else -1.0
    out["difference"] = a["mean"] - b["mean"]
    if all(fixed) or any(s["n"] < 2 and not f for s, f in ((a, fixed[0]), (b, fixed[1]))):
        return {**out, "verdict": TOO_FEW}
    se = math.sqrt(sum(0.0 if f or s["n"] < 2 else s["std"] ** 2 / s["n"] for s, f in ((a, fixed[0]), (b, fixed[1]))))
    signed = sign * out["difference"]
    # identical values in both arms (se 0): any difference is beyond 2 se, none is within noise
    verdict = HOLDS if signed > Z * se else DOES_NOT_HOLD if signed < -Z * se else WITHIN_NOISE
    return {**out, "se": se, "verdict": verdict}


def metric_values(report: dict[str, Any], arm_models: dict[str, list[str]], arm: str, metric: str) -> list[float]:
    """The values of ``metric`` (``bench.metric`` or ``training.metric``) of every model of ``arm``."""
    section, _, key = metric.partition(".")
    values = []
    for model_id in arm_models.get(arm, []):
        source = report["training"].get(model_id, {}) if section == "training" else \
            report["models"].get(model_id, {}).get(section, {})
        value = source.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(float(value))
    return values


def aggregate(report: dict[str, Any], arm_models: dict[str, list[str]]) -> dict[str, Any]:
    """``{"models": {arm: {bench: {metric: summary}}}, "training": {arm: {metric: summary}}}`` over each arm's models."""
    out: dict[str, Any] = {"models": {}, "training": {}}
    for arm, model_ids in arm_models.items():
        benches: dict[str, dict[str, list[float]]] = {}
        training: dict[str, list[float]] = {}
        for model_id in model_ids:
            for bench, metrics in report["models"].get(model_id, {}).items():
                for name, value in (metrics or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        benches.setdefault(bench, {}).setdefault(name, []).append(float(value))
            for name, value in report["training"].get(model_id, {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    training.setdefault(name, []).append(float(value))
        if benches:
            out["models"][arm] = {b: {m: summarize(v) for m, v in ms.items()} for b, ms in benches.items()}
        if training:
            out["training"][arm] = {m: summarize(v) for m, v in training.items()}
    return out


def judge_findings(report: dict[str, Any], arm_models: dict[str, list[str]],
                   findings: list[FindingConfig], fixed_arms: set[str] = frozenset()) -> list[dict[str, Any]]:
    """One entry per claim: the metric, each arm's mean/std/n, the difference, its se and the verdict
    (``fixed_arms``: arms the seeds do not repeat, e.g. init)."""
    out = []
    for finding in findings:
        first, second = (metric_values(report, arm_models, arm, finding.metric) for arm in finding.arms)
        verdict = welch_verdict(first, second, finding.direction,
                                (finding.arms[0] in fixed_arms, finding.arms[1] in fixed_arms))
        out.append({"claim": finding.claim, "metric": finding.metric, "direction": finding.direction,
                    "paper": finding.paper,
                    "arms": {finding.arms[0]: summarize(first), finding.arms[1]: summarize(second)}, **verdict})
    return out


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def findings_markdown(findings: list[dict[str, Any]]) -> list[str]:
    """The ``## Findings`` section of report.md: a table, then the rule."""
    if not findings:
        return []
    lines = ["## Findings", "", "| claim | metric | arm | mean | std | n | difference | se | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for finding in findings:
        (first, a), (second, b) = finding["arms"].items()
        arms = f"{first} {'>' if finding['direction'] == 'higher' else '<'} {second}"
        lines.append(f"| {finding['claim']} | {finding['metric']} | {arms} | {_number(a['mean'])} vs "
                     f"{_number(b['mean'])} | {_number(a['std'])} vs {_number(b['std'])} | {a['n']} vs {b['n']} | "
                     f"{_number(finding['difference'])} | {_number(finding['se'])} | **{finding['verdict']}** |")
    lines += ["", f"Rule: {RULE}.", ""]
    return lines


def aggregate_markdown(aggregated: dict[str, Any]) -> list[str]:
    """``## Over seeds``: per benchmark, each arm's metrics as mean ± std (n)."""
    models = aggregated.get("models") or {}
    if not models:
        return []
    lines = ["## Over seeds (mean ± std, n)", ""]
    for bench in sorted({b for per_arm in models.values() for b in per_arm}):
        names = sorted({m for per_arm in models.values() for m in per_arm.get(bench, {})})
        lines += [f"### {bench}", "", "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for arm, per_arm in models.items():
            if bench not in per_arm:
                continue
            cells = []
            for name in names:
                s = per_arm[bench].get(name)
                cells.append("" if s is None else f"{s['mean']:.4f} ± {_number(s['std'])} ({s['n']})")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _arm_text(name: str, summary: dict[str, Any]) -> str:
    spread = f" ± {summary['std']:.4f}" if summary.get("std") is not None else ""
    return f"{name} {_number(summary.get('mean'))}{spread}"


def findings_table(reports: list[Any]) -> str:
    """A markdown table (study, claim, paper, mllm's figure, verdict) of the findings of
    ``report.json`` files (``runs/<study>/<report stage>/report.json``): the README's table."""
    import json
    from pathlib import Path

    rows = ["| study | claim | paper | mllm (CPU scale, mean ± std) | n | verdict |", "|---|---|---|---|---|---|"]
    for path in map(Path, reports):
        for finding in json.loads(path.read_text()).get("findings") or []:
            (first, a), (second, b) = finding["arms"].items()
            rows.append(f"| {path.parent.parent.name} | {finding['claim']} | {finding.get('paper') or '-'} | "
                        f"{_arm_text(first, a)} vs {_arm_text(second, b)} ({finding['metric']}) | "
                        f"{a['n']} / {b['n']} | {finding['verdict']} |")
    return "\n".join(rows) + f"\n\nRule: {RULE}.\n"


if __name__ == "__main__":  # python -m mllm.reporting.findings runs/*/report/report.json
    import sys

    print(findings_table(sys.argv[1:]), end="")
