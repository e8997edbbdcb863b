"""``mllm eval``: score-only evaluation of existing answer / judge files.

``mllm eval score BENCH [--answers F] [--questions F] [--labels DIR] [--grades F]
[--reviews F] [--problems F] [--capabilities F] [--judge NAME [--judge-option K=V]] [--json]``
resolves BENCH through the plugin registry and calls the benchmark's ``score_files``
classmethod (only with the options given). Input errors are :class:`mllm.errors.MllmError`
(the benchmark's own, e.g. mllm-eval's ``ScoreInputError``, name the file and the fix);
``mllm`` prints them on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import inspect
import json

import click

from mllm.errors import MllmError

FILE_OPTIONS = ("answers", "questions", "labels", "grades", "reviews", "problems", "capabilities")


def _parse_options(pairs: tuple[str, ...]) -> dict[str, object]:
    import yaml

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MllmError(f"--judge-option {pair!r} is not KEY=VALUE (e.g. --judge-option model=gpt-4)")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or type(error).__name__
            raise MllmError(f"--judge-option {pair!r}: the value is not valid YAML ({problem}); "
                            "quote it, e.g. --judge-option 'key=\"text\"'") from None
    return options


def _required(score_files) -> list[str]:
    """Keyword parameters of ``score_files`` without a default (``mllm eval score`` must pass them)."""
    return [name for name, p in inspect.signature(score_files).parameters.items()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]


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
    from mllm.plugins.registry import get_registry

    spec = get_registry().get("benchmark", bench)
    impl = spec.load()
    score_files = getattr(impl, "score_files", None)
    if score_files is None:
        raise MllmError(f"benchmark {bench!r} ({spec.distribution}) has no score-only mode (no score_files classmethod)")
    accepted = set(inspect.signature(score_files).parameters)
    given = {k: v for k, v in files.items() if v is not None}
    unknown = [k for k in given if k not in accepted]
    if unknown:
        takes = ", ".join(f"--{k}" for k in FILE_OPTIONS if k in accepted) or "no file options"
        raise MllmError(f"benchmark {bench!r} does not take {', '.join('--' + k for k in unknown)}; it takes {takes}")
    kwargs: dict[str, object] = dict(given)
    if judge_name:
        if "judge" not in accepted:
            raise MllmError(f"benchmark {bench!r} does not call a judge when scoring from files")
        kwargs["judge"] = {"name": judge_name, **_parse_options(judge_options)}
    # an option the benchmark requires (no default) would be a TypeError inside the call: name it instead
    missing = [name for name in _required(score_files) if name not in kwargs and name in (*FILE_OPTIONS, "judge")]
    if missing:
        options = ", ".join("--judge NAME" if name == "judge" else f"--{name}" for name in missing)
        raise MllmError(f"benchmark {bench!r} needs {options} to score from files")
    metrics = score_files(**kwargs)
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
