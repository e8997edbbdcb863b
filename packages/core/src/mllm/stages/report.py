"""The ``report`` stage: models side by side (report.json, report.md, report.html, a table, loss plots).

``report.json`` follows ARCHITECTURE.md::

    {"models": {"<model id>": {"<benchmark>": {"<metric>": value}}},
     "training": {"<stage id>": {"<metric>": last logged value}}}

With ``seeds:`` or ``sweep:`` (:mod:`mllm.pipeline.expand`) it adds ``"arms"`` (arm -> its
model ids) and ``"aggregate"``: each arm's metrics over its seeds as ``{mean, std, n,
values}``; with ``findings:``, ``"findings"``: per claim each arm's mean/std/n and the
verdict by the rule printed beside it (:mod:`mllm.reporting.findings`).

``report.html`` is the same run to browse (:mod:`mllm.reporting`): the metrics side by
side, a bar chart of each benchmark's headline metric per model, the training curves
(reward margins and accuracies too for preference stages) and every model's answers
beside each item's image. ``mllm report RUN`` writes it again for any run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from mllm.pipeline.config import StageConfig
from mllm.pipeline.runfolder import atomic_write_text
from mllm.reporting.build import write_report_html
from mllm.reporting.html import REPORT_HTML

TRAIN_LOG = "train_log.jsonl"


class ReportStageConfig(StageConfig):
    """Keys of a ``report`` stage."""

    stages: list[str] | None = Field(
        None, description="stages to report on; default: every stage before this one")
    plots: bool = Field(True, description="write a PNG of the training loss of each training stage")

    def inputs(self) -> list[str]:
        return list(self.stages or [])

    def fill_defaults(self, previous: list[str]) -> None:
        """Called by the loader: by default a report reads every earlier stage (and its
        fingerprint depends on all of them)."""
        if self.stages is None:
            self.stages = list(previous)


def read_train_log(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / TRAIN_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect_report(context: Any, stage_ids: list[str]) -> dict[str, Any]:
    models: dict[str, dict[str, Any]] = {}
    training: dict[str, dict[str, Any]] = {}
    for stage_id in stage_ids:
        stage = context.pipeline.stage(stage_id)
        metrics_path = context.stage_dir_of(stage_id) / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        if stage.kind_spec.name == "eval":
            for model_id, benchmarks in metrics.items():
                models.setdefault(model_id, {}).update(benchmarks)
        elif getattr(stage.config, "produces_model", False):
            training[stage_id] = metrics
    report: dict[str, Any] = {"models": models, "training": training}
    pipeline = context.pipeline
    if pipeline.copies or pipeline.config.findings:
        from mllm.reporting.findings import aggregate, judge_findings

        arms = pipeline.arm_models(list(dict.fromkeys([*models, *training])))
        report["arms"] = arms
        report["aggregate"] = aggregate(report, arms)
        if pipeline.config.findings:
            repeated = {c.arm for c in pipeline.copies.values() if c.seed is not None}
            report["findings"] = judge_findings(report, arms, pipeline.config.findings,
                                                fixed_arms={arm for arm in arms if arm not in repeated})
    return report


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def benchmark_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(benchmark, metric names, rows of [model id, formatted values...]) per benchmark."""
    tables = []
    models = report["models"]
    for benchmark in sorted({b for per_model in models.values() for b in per_model}):
        metric_names = sorted({m for per_model in models.values() for m in per_model.get(benchmark, {})})
        rows = [[model_id, *(_format(per_model[benchmark].get(m, "")) for m in metric_names)]
                for model_id, per_model in models.items() if benchmark in per_model]
        tables.append((benchmark, metric_names, rows))
    return tables


def report_markdown(report: dict[str, Any], plots: list[str], description: str | None = None) -> str:
    lines = ["# Report", ""]
    if description:  # the pipeline's own `description:`, so a report says what was run
        lines += [description.strip(), ""]
    for benchmark, metric_names, rows in benchmark_tables(report):
        lines += [f"## {benchmark}", "", "| model | " + " | ".join(metric_names) + " |",
                  "|---|" + "---|" * len(metric_names)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    from mllm.reporting.findings import aggregate_markdown, findings_markdown

    lines += findings_markdown(report.get("findings") or [])
    lines += aggregate_markdown(report.get("aggregate") or {})
    if report["training"]:
        lines += ["## Training", ""]
        for stage_id, metrics in report["training"].items():
            shown = ", ".join(f"{k}={_format(v)}" for k, v in metrics.items())
            lines.append(f"- **{stage_id}**: {shown}")
        lines.append("")
    for plot in plots:
        lines.append(f"![{plot}]({plot})")
    return "\n".join(lines) + "\n"


def _plot_metric(context: Any, stage_id: str, rows: list[dict[str, Any]], metric: str, prefix: str) -> str:
    """One PNG of ``metric`` over steps; returns its file name (relative to the stage folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([row["step"] for row in rows], [row[metric] for row in rows], marker=".")
    axis.set_xlabel("step")
    axis.set_ylabel(metric if metric != "loss" else "training loss")
    axis.set_title(f"{context.pipeline.name}: {stage_id}")
    axis.grid(alpha=0.3)
    name = f"{prefix}_{stage_id}.png"
    figure.tight_layout()
    figure.savefig(context.stage_dir / name, dpi=100)
    plt.close(figure)
    return name


def plot_losses(context: Any, stage_ids: list[str]) -> list[str]:
    """The loss of every training stage, and rewards/margins where a preference method logged it."""
    written = []
    for stage_id in stage_ids:
        log = [row for row in read_train_log(context.stage_dir_of(stage_id)) if "loss" in row and "step" in row]
        if not log:
            continue
        written.append(_plot_metric(context, stage_id, log, "loss", "loss"))
        margins = [row for row in log if isinstance(row.get("rewards/margins"), (int, float))]
        if margins:
            written.append(_plot_metric(context, stage_id, margins, "rewards/margins", "margins"))
    return written


def headline_metrics(context: Any, stage_ids: list[str]) -> dict[str, str]:
    """``{benchmark: its first metric_keys entry}`` over the eval stages read (the bar charts' metric)."""
    from mllm.stages.evaluate import benchmark_names

    out: dict[str, str] = {}
    for stage_id in stage_ids:
        stage = context.pipeline.stage(stage_id)
        benchmarks = (stage.components or {}).get("benchmarks") if stage.kind_spec.name == "eval" else None
        for name, component in zip(benchmark_names(benchmarks or []), benchmarks or []):
            keys = tuple(getattr(component.spec.load(), "metric_keys", ()) or ())
            if keys:
                out.setdefault(name, keys[0])
    return out


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log file has no width limit; rich would truncate to 80 columns
    for benchmark, metric_names, rows in benchmark_tables(report):
        table = Table(title=benchmark)
        table.add_column("model")
        for metric in metric_names:
            table.add_column(metric, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


class ReportStage:
    """Collects eval metrics and training metrics of earlier stages into one report."""

    def __init__(self, config: ReportStageConfig, components: dict) -> None:
        self.config = config

    def run(self, context: Any) -> None:
        stage_ids = list(self.config.stages or [])
        report = collect_report(context, stage_ids)
        train_ids = [s for s in stage_ids if getattr(context.pipeline.stage(s).config, "produces_model", False)]
        plots = plot_losses(context, train_ids) if self.config.plots else []
        atomic_write_text(context.stage_dir / "report.json", json.dumps(report, indent=2))
        atomic_write_text(context.stage_dir / "report.md", report_markdown(report, plots, context.pipeline.config.description))
        html = write_report_html(Path(context.stage_dir).parent, stage_ids, report,
                                 Path(context.stage_dir) / REPORT_HTML, title=f"mllm report: {context.pipeline.name}",
                                 headlines=headline_metrics(context, stage_ids))
        print_table(report)
        context.logger.info("report written to %s (browse: %s)", context.stage_dir / "report.json", html)
