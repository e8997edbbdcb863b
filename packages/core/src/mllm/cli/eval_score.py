"""``mllm eval``: score-only evaluation of existing answer / judge files.

``mllm eval score BENCH [--answers F] [--questions F] [--labels DIR] [--grades F]
[--reviews F] [--problems F] [--capabilities F] [--<option> F] [--protocol NAME]
[--judge NAME [--judge-option K=V]] [--json]`` resolves BENCH through the plugin registry
and calls the benchmark's ``score_files`` classmethod (the score-only part of the
Benchmark contract, :class:`mllm.interfaces.ScoresFromFiles`) with the options given.
The file options a benchmark takes are the ones it declares in ``score_inputs`` (its
``score_files`` keywords); ``mllm eval score BENCH --help`` lists them and the scoring
protocols it follows (``protocols``, the first the default).

``mllm eval score BENCH --run runs/<name>/<eval stage>`` re-scores a finished eval stage:
the benchmark is built from the stage's ``resolved_config.yaml`` and scores each model's
``<model>/<bench>/answers.jsonl`` with its ``score`` method, as the stage did.

Input errors are :class:`mllm.errors.MllmError` (the benchmark's own, e.g. mllm-eval's
``ScoreInputError``, name the file and the fix); ``mllm`` prints them on one line and
exits with status 2, without a traceback.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import click

from mllm.errors import MllmError

FILE_OPTIONS = ("answers", "questions", "labels", "grades", "reviews", "problems", "capabilities")
#: keywords of score_files that are not file options
NOT_FILES = ("config", "judge")
ANSWERS_FILE = "answers.jsonl"  # the eval stage's per model and benchmark (mllm.stages.evaluate.ANSWERS)
REDACTED = "***REDACTED***"  # what resolved_config.yaml holds in place of a secret-like key


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


def declared_inputs(impl: Any) -> dict[str, str]:
    """The file options a benchmark class takes, with what each file is.

    Its ``score_inputs`` (``{keyword: description}``); without one, the file-like keywords
    of its ``score_files``.
    """
    declared = getattr(impl, "score_inputs", None)
    if isinstance(declared, dict):
        return {str(k): str(v) for k, v in declared.items()}
    score_files = getattr(impl, "score_files", None)
    if score_files is None:
        return {}
    return {name: "" for name, p in inspect.signature(score_files).parameters.items()
            if name not in NOT_FILES and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                    inspect.Parameter.POSITIONAL_OR_KEYWORD)}


def _extra_files(args: list[str], bench: str) -> dict[str, str]:
    """``--name PATH`` pairs click did not know (options only some benchmark declares)."""
    extra: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise MllmError(f"mllm eval score {bench}: unexpected argument {arg!r}; see mllm eval score {bench} --help")
        name, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise MllmError(f"mllm eval score {bench}: {arg} needs a value (a file path)")
            value = args[i + 1]
            i += 1
        extra[name.replace("-", "_")] = value
        i += 1
    return extra


def _benchmark_help(bench: str) -> str:
    from mllm.plugins.registry import get_registry

    spec = get_registry().get("benchmark", bench)
    impl = spec.load()
    lines = [f"Benchmark {bench} ({spec.distribution} {spec.version}): {spec.description}"]
    declared = declared_inputs(impl) if hasattr(impl, "score_files") else {}
    if declared:
        lines.append("Score-only file options it declares:")
        lines += [f"  --{name.replace('_', '-')}  {what}" for name, what in declared.items()]
    else:
        lines.append("It has no score-only mode from files (no score_files); --run re-scores an eval stage.")
    protocols = getattr(impl, "protocols", None)
    if protocols:
        lines.append(f"Protocols (--protocol): {', '.join(protocols)} (default {protocols[0]})")
    return "\n".join(lines)


def _print_metrics(title: str, metrics: dict[str, float], protocol: str | None, as_json: bool,
                   extra: dict[str, Any] | None = None) -> None:
    if as_json:
        click.echo(json.dumps({"benchmark": title, **({"protocol": protocol} if protocol else {}),
                               **(extra or {}), "metrics": metrics}, indent=2, sort_keys=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=f"protocol: {protocol}" if protocol else None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        text = f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"
        table.add_row(key, text)
    Console(highlight=False).print(table)


def rescore_run(bench: str, stage_dir: Path, protocol: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{model id: {benchmark folder: metrics}}`` of a finished eval stage, re-scored from its answers."""
    import yaml

    from mllm.plugins.registry import get_registry

    config_path = stage_dir / "resolved_config.yaml"
    if not config_path.is_file():
        raise MllmError(f"--run {str(stage_dir)!r} is not an eval stage folder (no resolved_config.yaml); "
                        "pass runs/<pipeline>/<eval stage id>")
    resolved = yaml.safe_load(config_path.read_text()) or {}
    refs = resolved.get("benchmarks")
    if not isinstance(refs, list):
        raise MllmError(f"--run {str(stage_dir)!r}: its resolved_config.yaml lists no benchmarks; is it an eval stage?")
    spec = get_registry().get("benchmark", bench)
    seen: dict[str, int] = {}
    folders: list[tuple[str, dict[str, Any]]] = []
    for ref in refs:
        name = str(ref.get("name"))
        seen[name] = seen.get(name, 0) + 1
        if name == bench:  # folder names as the eval stage gives them: name, name_2, ...
            folders.append((name if seen[name] == 1 else f"{name}_{seen[name]}", ref))
    if not folders:
        listed = ", ".join(sorted(seen)) or "none"
        raise MllmError(f"--run {str(stage_dir)!r} did not evaluate {bench!r} (its benchmarks: {listed})")
    config_cls = spec.load_config()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for folder, ref in folders:
        values = {k: v for k, v in ref.items() if k != "name" and v != REDACTED}
        if protocol is not None:
            values["protocol"] = protocol
        config = config_cls.model_validate(values) if config_cls is not None else None
        benchmark = spec.load()(config) if config is not None else spec.load()()
        items = list(benchmark.items())
        found = sorted(p.parent.parent.name for p in stage_dir.glob(f"*/{folder}/{ANSWERS_FILE}"))
        if not found:
            raise MllmError(f"--run {str(stage_dir)!r} has no <model>/{folder}/{ANSWERS_FILE}; did the stage finish?")
        for model_id in found:
            path = stage_dir / model_id / folder / ANSWERS_FILE
            answers: dict[str, str] = {}
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    answers[str(row["id"])] = str(row["answer"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise MllmError(f"{path} line {lineno} is not an eval answer row "
                                    "{id, prompt, images, answer, gold}") from None
            metrics = {k: float(v) for k, v in benchmark.score(items, answers).items()}
            results.setdefault(model_id, {})[folder] = metrics
    return results


@click.group(name="eval")
def eval_group() -> None:
    """Evaluate: score existing answer or judge files with a benchmark's own scorer."""


@eval_group.command(name="score", add_help_option=False,
                    context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("bench", required=False)
@click.option("--answers", type=click.Path(), help="model answers (JSON Lines {question_id, text}, or an eval "
                                                   "stage's answers.jsonl, unless the benchmark says)")
@click.option("--questions", type=click.Path(), help="the benchmark's question file")
@click.option("--labels", type=click.Path(), help="label folder (POPE: coco_pope_<split>.json files)")
@click.option("--grades", type=click.Path(), help="judge grades (MM-Vet grader JSON, MT-Bench judgments, SHR judgements)")
@click.option("--reviews", type=click.Path(), help="judge reviews (LLaVA-Bench JSON Lines)")
@click.option("--problems", type=click.Path(), help="ScienceQA problems.json for the category breakdown")
@click.option("--capabilities", type=click.Path(), help="MM-Vet mm-vet.json for per-capability scores")
@click.option("--run", "run_dir", type=click.Path(), default=None,
              help="re-score a finished eval stage (runs/<name>/<eval stage>) from its answers.jsonl files")
@click.option("--protocol", default=None, help="scoring protocol (e.g. llava, lmms-eval); default: the benchmark's first")
@click.option("--judge", "judge_name", default=None, help="judge to call when scoring needs one (e.g. openai)")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE", help="judge config key (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as one JSON object")
@click.option("--help", "show_help", is_flag=True, help="show this message (with BENCH: the file options it declares)")
@click.pass_context
def score(ctx: click.Context, bench: str | None, run_dir: str | None, protocol: str | None, judge_name: str | None,
          judge_options: tuple[str, ...], as_json: bool, show_help: bool, **files: str | None) -> None:
    """Score BENCH from files, without a model (e.g. mllm eval score pope --answers a.jsonl ...)."""
    from mllm.plugins.registry import get_registry

    if show_help or bench is None:
        click.echo(ctx.get_help())
        if bench is not None:
            click.echo("\n" + _benchmark_help(bench))
        elif not show_help:
            raise MllmError("mllm eval score needs BENCH, e.g. mllm eval score pope --answers a.jsonl ...; "
                            "mllm eval score BENCH --help lists its file options")
        return
    spec = get_registry().get("benchmark", bench)
    impl = spec.load()
    protocols = tuple(getattr(impl, "protocols", ()) or ())
    if protocol is not None and protocols and protocol not in protocols:
        raise MllmError(f"benchmark {bench!r} has no protocol {protocol!r}; it follows {', '.join(protocols)}")
    chosen = protocol or (protocols[0] if protocols else None)
    title = f"{bench} ({spec.distribution} {spec.version})"
    if run_dir is not None:
        given = [k for k, v in files.items() if v is not None] + list(_extra_files(ctx.args, bench))
        if given:
            raise MllmError(f"--run re-scores the stage's own answers; drop {', '.join('--' + k for k in given)}")
        results = rescore_run(bench, Path(run_dir), protocol)
        for model_id, per_bench in results.items():
            for folder, metrics in per_bench.items():
                _print_metrics(f"{model_id}: {folder} ({spec.distribution} {spec.version})", metrics, chosen,
                               as_json, {"model": model_id})
        return
    score_files = getattr(impl, "score_files", None)
    if score_files is None:
        raise MllmError(f"benchmark {bench!r} ({spec.distribution}) has no score-only mode from files (no "
                        f"score_files classmethod); re-score an eval stage with --run runs/<name>/<stage>")
    accepted = set(inspect.signature(score_files).parameters)
    declared = declared_inputs(impl)
    given = {k: v for k, v in files.items() if v is not None}
    given.update(_extra_files(ctx.args, bench))
    unknown = [k for k in given if k not in accepted or k in NOT_FILES]
    if unknown:
        takes = ", ".join(f"--{k.replace('_', '-')}" for k in declared) or "no file options"
        raise MllmError(f"benchmark {bench!r} does not take {', '.join('--' + k.replace('_', '-') for k in unknown)}; "
                        f"it takes {takes}")
    kwargs: dict[str, object] = dict(given)
    if protocol is not None:
        if "config" not in accepted:
            raise MllmError(f"benchmark {bench!r} does not take --protocol when scoring from files")
        kwargs["config"] = {"protocol": protocol}
    if judge_name:
        if "judge" not in accepted:
            raise MllmError(f"benchmark {bench!r} does not call a judge when scoring from files")
        kwargs["judge"] = {"name": judge_name, **_parse_options(judge_options)}
    # an option the benchmark requires (no default) would be a TypeError inside the call: name it instead
    missing = [name for name in _required(score_files) if name not in kwargs]
    if missing:
        options = ", ".join("--judge NAME" if name == "judge" else f"--{name.replace('_', '-')}" for name in missing)
        raise MllmError(f"benchmark {bench!r} needs {options} to score from files; "
                        f"see mllm eval score {bench} --help")
    metrics = score_files(**kwargs)
    _print_metrics(title, metrics, chosen, as_json)
