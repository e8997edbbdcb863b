"""The ``mllm`` command line (click). Heavy libraries are imported inside commands.

Errors: a subcommand raises :class:`mllm.errors.MllmError` for anything the user can
fix; :class:`MllmGroup` catches it, for every subcommand, and prints ``error: <message>``
on one line (exit status: the error's ``exit_code``, 2 unless it says otherwise). Any
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
from mllm.errors import ConfigError, MllmError


class MllmGroup(click.Group):
    """The ``mllm`` group: the one place where a user error becomes one line on stderr."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MllmError as error:
            if ctx.params.get("debug"):
                raise
            click.echo(f"{error.label}: {error}", err=True)
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
def run(pipeline_file: str, overrides: tuple[str, ...], runs_dir: str | None, force: tuple[str, ...], dry_run: bool,
        nproc_per_node: int = 1, nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None,
        master_port: int | None = None) -> None:
    """Run PIPELINE_FILE; OVERRIDES are key=value (e.g. stages.sft.train.lr=1e-4).

    With --nproc-per-node N (and --nnodes M), train and eval stages run as N x M
    torchrun processes (DDP, or DeepSpeed ZeRO with train.deepspeed); other stages run once."""
    from mllm.pipeline.launch import LaunchSettings
    from mllm.pipeline.runner import PipelineRunner, default_runs_dir

    launch = LaunchSettings(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                            master_addr=master_addr, master_port=master_port)
    pipeline, registry = _load(pipeline_file, overrides)
    console = _console()
    _setup_logging(console)

    def on_event(plan, event):
        console.print(f"[bold]{plan.stage_id}[/bold] ({plan.kind}): {event}" + (f" - {plan.reason}" if event == "started" else ""))

    runner = PipelineRunner(pipeline, registry, Path(runs_dir) if runs_dir else default_runs_dir(),
                            force=force, on_event=on_event, launch=launch if launch.distributed else None)
    if dry_run:
        _print_plan(console, runner)
        return
    # TrainingStopped (SIGTERM) is an MllmError too: "stopped: ...", exit status 143, not marked COMPLETE
    runner.run()
    console.print(f"done: {runner.run_dir}")


def _setup_logging(console) -> None:
    from rich.logging import RichHandler

    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mllm")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _print_plan(console, runner) -> None:
    from rich.table import Table

    table = Table(title=f"plan for {runner.pipeline.name} in {runner.run_dir}")
    for column in ("stage", "kind", "action", "why", "fingerprint"):
        table.add_column(column)
    for plan in runner.plan():
        table.add_row(plan.stage_id, plan.kind, plan.action, plan.reason, plan.fingerprint[:12])
    console.print(table)


@main.command()
@click.argument("pipeline_file", type=click.Path())
@click.argument("overrides", nargs=-1)
def validate(pipeline_file: str, overrides: tuple[str, ...]) -> None:
    """Check a pipeline: config keys, plugin names and data paths, without loading a model."""
    from mllm.pipeline.validation import check_data_paths

    pipeline, registry = _load(pipeline_file, overrides)
    problems = check_data_paths(pipeline)
    if problems:
        raise ConfigError("; ".join(f"{pipeline_file}: {problem}" for problem in problems),
                          hint="fix the path or create the file")
    click.echo(f"{pipeline_file}: OK ({len(pipeline.stages)} stages: {', '.join(s.id for s in pipeline.stages)})")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(as_json: bool) -> None:
    """List every registered component and plugins that failed to load."""
    from mllm.plugins.registry import get_registry, iter_component_rows

    registry = get_registry()
    rows = list(iter_component_rows(registry))
    failures = [f.__dict__ for f in registry.failures]
    clashes = [{"kind": k, "name": n, "distributions": d} for k, n, d in registry.clashes()]
    if as_json:
        click.echo(json.dumps({"components": rows, "failures": failures, "clashes": clashes}, indent=2))
        return
    from rich.table import Table

    console = _console()
    table = Table(title="mllm components")
    for column in ("kind", "name", "aliases", "distribution", "version", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(row[c] for c in ("kind", "name", "aliases", "distribution", "version", "description")))
    console.print(table)
    for clash in clashes:
        console.print(f"[yellow]clash:[/yellow] {clash['kind']} {clash['name']!r} registered by "
                      f"{', '.join(clash['distributions'])}; pipelines must write 'dist:name'")
    for failure in failures:
        console.print(f"[red]failed to load:[/red] {failure['distribution']} {failure['version']} "
                      f"({failure['entry_point']}): {failure['cause']}")


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
                              ("mllm.cli.new_plugin", "new_plugin")):
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
