"""``mllm report RUN``: write report.html again for a run folder and print where it is."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path())
def report(run_dir: str) -> None:
    """Rebuild report.html (metrics, charts, answer browser) for the run folder RUN (runs/<pipeline>)."""
    from mllm.reporting.build import rebuild

    for path in rebuild(Path(run_dir)):
        click.echo(str(path))
