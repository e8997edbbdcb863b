"""Writing report.html: from the report stage, or again for any run folder (``mllm report RUN``).

A rebuild reads only the run folder. It writes into the run's report stage folder (the
one holding ``report.json``; each, if several), covering the stages that report named;
a run without a report stage gets ``RUN/report.html`` covering every stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mllm.errors import MissingFileError
from mllm.pipeline.runfolder import atomic_write_text, is_run_folder
from mllm.reporting.html import REPORT_HTML, build_report_html
from mllm.reporting.sources import collect_metrics, ordered_stages

REPORT_JSON = "report.json"


def _resolved(stage_dir: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((stage_dir / "resolved_config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def declared_headlines(run_dir: Path, stage_ids: list[str]) -> dict[str, str]:
    """``{benchmark folder name: first of the benchmark's metric_keys}`` for the eval stages
    whose benchmarks the registry knows (a missing plugin just leaves its benchmarks out)."""
    from mllm.plugins.registry import get_registry

    registry = get_registry()
    out: dict[str, str] = {}
    for stage_id in stage_ids:
        benchmarks = _resolved(run_dir / stage_id).get("benchmarks")
        if not isinstance(benchmarks, list):
            continue
        seen: dict[str, int] = {}
        for ref in benchmarks:
            name = ref.get("name") if isinstance(ref, dict) else None
            if not isinstance(name, str):
                continue
            try:
                spec = registry.get("benchmark", name)
                keys = tuple(spec.load().metric_keys)
            except Exception:  # noqa: BLE001 - an unknown or broken plugin only loses its headline
                continue
            seen[spec.name] = seen.get(spec.name, 0) + 1
            folder = spec.name if seen[spec.name] == 1 else f"{spec.name}_{seen[spec.name]}"  # as the eval stage names it
            if keys:
                out.setdefault(folder, keys[0])
    return out


def write_report_html(run_dir: Path, stage_ids: list[str], report: dict[str, Any], target: Path, *,
                      title: str | None = None, headlines: dict[str, str] | None = None) -> Path:
    """Write ``target`` (report.html) for ``stage_ids`` of ``run_dir`` and return its path."""
    if headlines is None:
        headlines = declared_headlines(run_dir, stage_ids)
    html = build_report_html(run_dir, stage_ids, report, title=title or f"mllm report: {run_dir.name}",
                             headlines=headlines)
    atomic_write_text(target, html)
    return target


def rebuild(run_dir: Path) -> list[Path]:
    """report.html again for a run folder (see the module docstring); the paths written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not is_run_folder(run_dir):
        raise MissingFileError(f"{run_dir} is not a run folder (runs/<pipeline>/ holding stage folders); "
                               "give the folder mllm run wrote")
    stages = ordered_stages(run_dir)
    written = []
    for stage_id in stages:
        stage_dir = run_dir / stage_id
        if not (stage_dir / REPORT_JSON).is_file():
            continue
        named = _resolved(stage_dir).get("stages")
        covered = [s for s in named if (run_dir / s).is_dir()] if isinstance(named, list) else \
            stages[:stages.index(stage_id)]
        try:
            report = json.loads((stage_dir / REPORT_JSON).read_text())
        except (OSError, ValueError):
            report = collect_metrics(run_dir, covered)
        written.append(write_report_html(run_dir, covered, report, stage_dir / REPORT_HTML))
    if not written:
        written.append(write_report_html(run_dir, stages, collect_metrics(run_dir, stages), run_dir / REPORT_HTML))
    return written
