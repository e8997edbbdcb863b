"""``mllm export --merge SRC DEST``: a LoRA model folder -> a merged full model folder.

SRC is a stage folder (``runs/<pipeline>/<stage>``) or its ``model/`` folder holding a
LoRA adapter (as a ``train`` stage with ``lora: true`` saves it). The adapters are
merged into the base weights (peft ``merge_and_unload``) and DEST gets a plain
``save_pretrained`` folder (safetensors) that the model adapter's ``load`` reads and
that needs no peft to use.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mllm.pipeline.runner import MODEL_SUBDIR


def resolve_model_folder(src: Path) -> Path:
    """``src`` itself when it is a model folder, else ``src/model``."""
    src = Path(src)
    if (src / MODEL_SUBDIR).is_dir() and not (src / "config.json").exists() and not (src / "adapter_config.json").exists():
        return src / MODEL_SUBDIR
    return src


def merge_lora(adapter: Any) -> Any:
    """Merge a peft-wrapped ``adapter.model`` into its base model, in place; returns the adapter."""
    model = adapter.model
    if not callable(getattr(model, "merge_and_unload", None)):
        raise ValueError("the model is not a LoRA (peft) model; there is nothing to merge")
    adapter.model = model.merge_and_unload()
    return adapter


def export_merged(src: Path, dest: Path, model_name: str = "llava") -> Path:
    """Load the LoRA model at ``src`` with the ``model_name`` adapter, merge, save to ``dest``."""
    from mllm.plugins.registry import get_registry

    folder = resolve_model_folder(src)
    if not folder.exists():
        raise FileNotFoundError(f"{src}: no such folder")
    adapter_cls = get_registry().get("model", model_name).load()
    adapter = merge_lora(adapter_cls.load(folder))
    dest = Path(dest)
    adapter.save(dest)
    return dest


@click.command("export")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--merge", is_flag=True,
              help="merge LoRA adapters into the base weights (the only export for now)")
@click.option("--model", "model_name", default="llava", show_default=True, help="the model adapter that reads SRC")
def export(src: str, dest: str, merge: bool, model_name: str) -> None:
    """Write SRC (a LoRA stage folder or its model/ folder) as a merged full model to DEST."""
    if not merge:
        click.echo("error: say --merge (merging LoRA adapters into the base weights is the only export)", err=True)
        sys.exit(2)
    dest_path = Path(dest)
    if dest_path.exists() and any(dest_path.iterdir()):
        click.echo(f"error: {dest} exists and is not empty", err=True)
        sys.exit(2)
    try:
        out = export_merged(Path(src), dest_path, model_name)
    except (ValueError, FileNotFoundError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    click.echo(f"merged model written to {out}")
