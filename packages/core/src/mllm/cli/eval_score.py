"""``mllm eval``: score-only evaluation of existing answer / judge files.

``mllm eval score BENCH [--answers F] [--questions F] [--labels DIR] [--grades F]
[--reviews F] [--problems F] [--capabilities F] [--judge NAME [--judge-option K=V]] [--json]``
resolves BENCH through the plugin registry and calls the benchmark's ``score_files``
classmethod (only with the options given). Input errors print the message (which names
the file and the fix) and exit with status 2, without a traceback.
"""

from __future__ import annotations

import inspect
import json
import sys

import click

FILE_OPTIONS = ("answers", "questions", "labels", "grades", "reviews", "problems", "capabilities")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _parse_options(pairs: tuple[str, ...]) -> dict[str, object]:
    import yaml

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--judge-option {pair!r} is not KEY=VALUE (e.g. --judge-option model=gpt-4)")
        options[key] = yaml.safe_load(value)
    return options


@click.group(name="eval")
def eval_group() -> None:
    """Evaluate: score existing answer or judge files with a benchmark's own scorer."""


@eval_group.command(name="score")
@click.argument("bench")
@click.option("--answers", type=click.Path(), help="model answers (JSON Lines {question_id, text} unless the benchmark says)")
@click.option("--questions", type=click.Path(), help="the benchmark's question file")
@click.option("--labels", type=click.Path(), help="label folder (POPE: coco_pope_<split>.json files)")
@click.option("--grades", type=click.Path(), help="judge grades (MM-Vet grader JSON, MT-Bench judgments, SHR judgements)")
@click.option("--reviews", type=click.Path(), help="judge reviews (LLaVA-Bench JSON Lines)")
@click.option("--problems", type=click.Path(), help="ScienceQA problems.json for the category breakdown")
@click.option("--capabilities", type=click.Path(), help="MM-Vet mm-vet.json for per-capability scores")
@click.option("--judge", "judge_name", default=None, help="judge to call when scoring needs one (e.g. openai)")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE", help="judge config key (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as one JSON object")
def score(bench: str, judge_name: str | None, judge_options: tuple[str, ...], as_json: bool, **files: str | None) -> None:
    """Score BENCH from files, without a model (e.g. mllm eval score pope --answers a.jsonl ...)."""
    from mllm.plugins.registry import PluginError, get_registry
    from mllm.plugins.specs import SpecImportError

    try:
        spec = get_registry().get("benchmark", bench)
        impl = spec.load()
    except (PluginError, SpecImportError) as error:
        _fail(str(error))
    score_files = getattr(impl, "score_files", None)
    if score_files is None:
        _fail(f"benchmark {bench!r} ({spec.distribution}) has no score-only mode (no score_files classmethod)")
    accepted = set(inspect.signature(score_files).parameters)
    given = {k: v for k, v in files.items() if v is not None}
    unknown = [k for k in given if k not in accepted]
    if unknown:
        takes = ", ".join(f"--{k}" for k in FILE_OPTIONS if k in accepted) or "no file options"
        _fail(f"benchmark {bench!r} does not take {', '.join('--' + k for k in unknown)}; it takes {takes}")
    kwargs: dict[str, object] = dict(given)
    if judge_name:
        if "judge" not in accepted:
            _fail(f"benchmark {bench!r} does not call a judge when scoring from files")
        kwargs["judge"] = {"name": judge_name, **_parse_options(judge_options)}
    try:
        metrics = score_files(**kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        message = str(error) or type(error).__name__
        if isinstance(error, OSError) and getattr(error, "filename", None):
            message = f"cannot read {error.filename!r}: {error.strerror}"
        _fail(message)
    if as_json:
        click.echo(json.dumps({"benchmark": bench, "metrics": metrics}, indent=2, sort_keys=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{bench} ({spec.distribution} {spec.version})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        text = f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"
        table.add_row(key, text)
    Console(highlight=False).print(table)
