"""The ``mllm`` command line (click). Heavy libraries are imported inside commands.

Errors: a subcommand raises :class:`mllm.errors.MllmError` for anything the user can
fix; :class:`MllmGroup` catches it, for every subcommand, and prints ``error: <message>``
on one line, a line per problem when it holds several (exit status: the error's
``exit_code``, 2 unless it says otherwise). Any
other exception is a bug and shows its traceback. ``--debug`` (or ``MLLM_DEBUG=1``) shows
the traceback of user errors too.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from mllm import __version__
from mllm.errors import MllmError


class MllmGroup(click.Group):
    """The ``mllm`` group: the one place where a user error becomes one line on stderr."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MllmError as error:
            if ctx.params.get("debug"):
                raise
            from mllm.pipeline.secrets import redact_text  # no message echoes a key

            for line in error.lines():  # several problems (a file's unknown keys, pre-flight): a line each
                click.echo(f"{error.label}: {redact_text(line)}", err=True)
            ctx.exit(error.exit_code)


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _load(pipeline_file: str, overrides: tuple[str, ...]):
    from mllm.pipeline.config import load_pipeline
    from mllm.plugins.registry import get_registry

    registry = get_registry()
    return load_pipeline(Path(pipeline_file), registry, list(overrides)), registry


@click.group(cls=MllmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mllm")
@click.option("--debug", is_flag=True, envvar="MLLM_DEBUG",
              help="show the traceback of an error instead of one line (also: MLLM_DEBUG=1)")
def main(debug: bool) -> None:
    """Align and evaluate LLaVA-family multimodal models from one YAML file."""


@main.command()
@click.argument("pipeline_file", type=click.Path())  # read_yaml names a missing or unreadable file
@click.argument("overrides", nargs=-1)
@click.option("--runs-dir", type=click.Path(), default=None,
              help="where run folders go (default: ./runs, or $MLLM_RUNS_DIR)")
@click.option("--force", "force", multiple=True, metavar="STAGE", help="re-run this stage (and what depends on it)")
@click.option("--dry-run", is_flag=True, help="show the stage plan and what would be skipped, run nothing")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes per node for train and eval stages (torchrun; one per GPU)")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True, help="number of nodes")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="this node's rank")
@click.option("--master-addr", default=None, help="address of node 0 (several nodes)")
@click.option("--master-port", type=click.IntRange(1, 65535), default=None,
              help="port on node 0 (several nodes; default on one node: a free port)")
@click.option("--wait", is_flag=True, help="if another mllm run is using the run folder, wait for it to finish")
@click.option("--verbose", is_flag=True, help="show the libraries' own progress bars and warnings too")
def run(pipeline_file: str, overrides: tuple[str, ...], runs_dir: str | None, force: tuple[str, ...], dry_run: bool,
        nproc_per_node: int = 1, nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None,
        master_port: int | None = None, wait: bool = False, verbose: bool = False) -> None:
    """Run PIPELINE_FILE; OVERRIDES are key=value (e.g. stages.sft.train.lr=1e-4).

    With --nproc-per-node N (and --nnodes M), train and eval stages run as N x M
    torchrun processes (DDP, or DeepSpeed ZeRO with train.deepspeed); other stages run once.

    Training, generating and evaluating show progress: a bar with the ETA on a terminal,
    otherwise a line per tenth and at least every 30 s; each stage's log.txt keeps every entry.
    Before the first stage starts, everything `mllm validate` checks is checked.
    Relative paths in the pipeline are relative to the working directory."""
    from mllm.pipeline.config import INIT
    from mllm.pipeline.launch import LaunchSettings
    from mllm.pipeline.runner import PipelineRunner, default_runs_dir

    launch = LaunchSettings(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                            master_addr=master_addr, master_port=master_port)
    pipeline, registry = _load(pipeline_file, overrides)
    console = _console()
    _setup_logging(console, verbose=verbose)

    def on_event(plan, event):
        console.print(f"[bold]{plan.stage_id}[/bold] ({plan.kind}): {event}" + (f" - {plan.reason}" if event == "started" else ""),
                      soft_wrap=True)  # one line, however narrow the terminal (or pipe)

    runner = PipelineRunner(pipeline, registry, Path(runs_dir) if runs_dir else default_runs_dir(),
                            force=force, on_event=on_event, launch=launch if launch.distributed else None)
    if dry_run:
        _print_plan(console, runner)
        return
    # TrainingStopped (SIGTERM) is an MllmError too: "stopped: ...", exit status 143, not marked COMPLETE
    plans = runner.run(wait=wait)  # the run folder's lock: refuse (or wait) while another run holds it
    stages = [plan for plan in plans if plan.stage_id != INIT]  # init is built only when a stage needs it
    if stages and all(plan.action == "skip" for plan in stages):
        _print_last_results(runner)  # nothing ran: show what the finished run found
    console.print(f"done: {runner.run_dir}", soft_wrap=True)


def _setup_logging(console, verbose: bool = False) -> None:
    """mllm's log lines on the console once each (records for log.txt only are dropped),
    progress as a bar on a terminal or as lines otherwise, and the libraries' noise off
    unless ``verbose``."""
    from mllm.pipeline import progress

    handler: logging.Handler
    if console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
        progress.configure("bar", console)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        progress.configure("lines")
    handler.addFilter(progress.HideFileOnly())
    root = logging.getLogger("mllm")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    if not verbose:
        progress.quiet_libraries()


def _print_plan(console, runner) -> None:
    """The stage plan; a stage the pre-flight says would fail is marked, with why."""
    from rich.markup import escape
    from rich.table import Table

    problems = runner.preflight()
    failing = {problem.stage for problem in problems}
    if runner.pipeline.config.description:
        console.print(escape(runner.pipeline.config.description))
    for line in _expansion(runner.pipeline):
        console.print(escape(line), soft_wrap=True)
    table = Table(title=f"plan for {runner.pipeline.name} in {runner.run_dir}")
    for column in ("stage", "kind", "action", "why", "fingerprint"):
        table.add_column(column, overflow="fold")
    for plan in runner.plan():
        action = f"{plan.action} [red](would fail)[/red]" if plan.stage_id in failing else plan.action
        table.add_row(plan.stage_id, plan.kind, action, escape(plan.reason), plan.fingerprint[:12])
    console.print(table)
    from mllm.pipeline.expand import collapse_copies

    for line in collapse_copies(problems, runner.pipeline.copies):  # the model's (stage init) too
        console.print(f"[red]would fail:[/red] {escape(line)}")


def _print_last_results(runner) -> None:
    """The results table of the newest report a finished run wrote (its report stage's)."""
    from mllm.stages.report import print_table

    reports = [runner.run_dir / stage.id / "report.json" for stage in runner.pipeline.stages]
    existing = [path for path in reports if path.is_file()]
    if existing:
        print_table(json.loads(existing[-1].read_text()))


@main.command()
@click.argument("pipeline_file", type=click.Path())
@click.argument("overrides", nargs=-1)
def validate(pipeline_file: str, overrides: tuple[str, ...]) -> None:
    """Check a pipeline without loading a model: keys, names, stage order, and what `mllm run`
    checks before its first stage (files, model folders, stage sources, record kinds, judges).

    Every problem is printed, one `error:` line each. Relative paths in a pipeline are
    relative to the working directory; errors print them absolute."""
    from mllm.pipeline.validation import validate_file
    from mllm.plugins.registry import get_registry

    pipeline = validate_file(pipeline_file, get_registry(), overrides)
    click.echo(f"{pipeline_file}: OK ({len(pipeline.stages)} stages: {', '.join(s.id for s in pipeline.stages)})")
    for line in _expansion(pipeline):
        click.echo(line)


def _expansion(pipeline) -> list[str]:
    """What ``seeds:``/``sweep:`` made of the stages as written, a line per stage (none without them)."""
    from mllm.pipeline.expand import expansion_lines

    if not pipeline.copies:
        return []
    seeds = sorted({c.seed for c in pipeline.copies.values() if c.seed is not None})
    variants = list(dict.fromkeys(c.variant for c in pipeline.copies.values() if c.variant is not None))
    head = "expanded:" + (f" seeds {seeds}" if seeds else "") + (f" sweep {', '.join(variants)}" if variants else "")
    return [head] + [f"  {line}" for line in expansion_lines(pipeline.copies)]


@main.command()
@click.argument("words", nargs=-1, metavar="[KIND] [NAME]")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(words: tuple[str, ...], as_json: bool) -> None:
    """List every registered component and plugins that failed to load.

    With NAME (e.g. `mllm plugins dpo`), print that component's keys: type, default and
    meaning. KIND picks one of the components sharing a name (`mllm plugins benchmark
    scienceqa`); with KIND alone, list the components of that kind."""
    from mllm.plugins.registry import get_registry, iter_component_rows

    registry = get_registry()
    kind, name = _plugins_words(words)
    if name is not None:
        _print_keys(registry, kind, name, as_json)
        return
    rows = [row for row in iter_component_rows(registry) if kind is None or row["kind"] == kind]
    failures = [f.__dict__ for f in registry.failures]
    clashes = [{"kind": k, "name": n, "distributions": d} for k, n, d in registry.clashes()]
    if as_json:
        click.echo(json.dumps({"components": rows, "failures": failures, "clashes": clashes}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    columns = ("kind", "name", "aliases", "distribution", "version", "description")
    # names are what users type: never cut; the description wraps in what is left
    widths = {c: max([len(c)] + [len(row[c]) for row in rows]) for c in columns[:-1]}
    needed = sum(widths.values()) + 3 * len(columns) + 40
    console = _console()
    if console.width < needed:  # a narrow terminal or a pipe (80 columns): widen rather than cut names
        console = Console(width=needed, highlight=False)
    table = Table(title="mllm components")
    for column in columns[:-1]:
        table.add_column(column, no_wrap=True, min_width=widths[column])
    table.add_column("description", overflow="fold", min_width=40)
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    console.print(table)
    for clash in clashes:
        console.print(f"[yellow]clash:[/yellow] {clash['kind']} {clash['name']!r} registered by "
                      f"{', '.join(clash['distributions'])}; pipelines must write 'dist:name'")
    for failure in failures:
        console.print(f"[red]failed to load:[/red] {failure['distribution']} {failure['version']} "
                      f"({failure['entry_point']}): {failure['cause']}")


def _plugins_words(words: tuple[str, ...]) -> tuple[str | None, str | None]:
    """``(kind, name)`` of ``mllm plugins [KIND] [NAME]``."""
    from mllm.errors import ConfigError
    from mllm.plugins.keys import kind_named
    from mllm.plugins.kinds import COMPONENT_KINDS

    if len(words) > 2:
        raise ConfigError(f"mllm plugins takes at most KIND and NAME, got {' '.join(words)!r}")
    if len(words) == 2:
        kind = kind_named(words[0])
        if kind is None:
            raise ConfigError(f"mllm plugins: {words[0]!r} is not a component kind; kinds: {', '.join(COMPONENT_KINDS)}")
        return kind, words[1]
    if len(words) == 1:
        kind = kind_named(words[0])
        return (kind, None) if kind is not None else (None, words[0])
    return None, None


def _print_keys(registry, kind: str | None, name: str, as_json: bool) -> None:
    """The keys of every component called ``name`` (of ``kind``), from their config models."""
    import textwrap
    from dataclasses import asdict

    from mllm.errors import UnknownComponentError
    from mllm.plugins.keys import keys_of, sections

    bare = name.rpartition(":")[2]
    specs = [spec for spec in registry.specs(kind) if bare in (spec.name, *spec.aliases)
             and (":" not in name or spec.distribution == name.rpartition(":")[0])]
    if not specs:
        if kind is not None:
            registry.get(kind, name)  # raises with "did you mean"
        known = sorted({spec.name for spec in registry.specs()})
        raise UnknownComponentError(f"no component is called {name!r}; `mllm plugins` lists them ({len(known)} names)")
    if as_json:
        click.echo(json.dumps([{"kind": spec.kind, "name": spec.name, "distribution": spec.distribution,
                                "sections": {title or spec.name: [asdict(key) for key in keys_of(fields)]
                                             for title, fields in sections(spec)}} for spec in specs], indent=2))
        return
    width = max(60, min(_console().width, 120))
    for number, spec in enumerate(specs):
        if number:
            click.echo("")
        click.echo(f"{spec.kind} {spec.name} ({spec.distribution} {spec.version})"
                   + (f": {spec.description}" if spec.description else ""))
        found = sections(spec)
        if not found or not found[0][1]:
            click.echo("  no keys")
        for title, fields in found:
            indent = "  "
            if title:
                click.echo(f"  {title}")
                indent = "    "
            for key in keys_of(fields):
                click.echo(f"{indent}{key.name}: {key.type} = {key.default}")
                if key.description:
                    click.echo(textwrap.fill(key.description, width=width, initial_indent=indent + "    ",
                                             subsequent_indent=indent + "    "))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def env(as_json: bool) -> None:
    """Versions of python, torch, transformers, peft, deepspeed, plugins, and the device."""
    from mllm.pipeline.environment import collect_env

    info = collect_env()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (click's own): eval "$(mllm completion bash)"."""
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    script = completion_class(main, {}, "mllm", "_MLLM_COMPLETE").source()
    click.echo(script)


def _register_plugin_commands() -> None:
    """Commands that live beside their feature (export, eval) are added when present."""
    import importlib

    for module_name, attr in (("mllm.cli.export", "export"), ("mllm.cli.eval_score", "eval_group"), ("mllm.models.llava.convert", "convert"),
                              ("mllm.cli.new_plugin", "new_plugin"), ("mllm.cli.serve", "serve"),
                              ("mllm.cli.report", "report")):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        main.add_command(getattr(module, attr))


_register_plugin_commands()

if __name__ == "__main__":
    main()
