"""``mllm export --merge SRC DEST``: a LoRA model folder -> a merged full model folder.

SRC is a stage folder (``runs/<pipeline>/<stage>``) or its ``model/`` folder holding a
LoRA adapter (as a ``train`` stage with ``lora: true`` saves it). The adapters are
merged into the base weights (peft ``merge_and_unload``) and DEST gets a plain
``save_pretrained`` folder (safetensors) that the model adapter's ``load`` reads and
that needs no peft to use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from mllm.errors import InputFileError, MissingFileError, MllmError

LORA_MARKER = "adapter_config.json"  # what peft's save_pretrained writes beside a LoRA adapter


def resolve_model_folder(src: Path) -> Path:
    """``src`` itself when it is a model folder, else ``src/model``."""
    from mllm.pipeline.runner import MODEL_SUBDIR  # imported here: ``mllm --help`` need not load the runner

    src = Path(src)
    if (src / MODEL_SUBDIR).is_dir() and not (src / "config.json").exists() and not (src / LORA_MARKER).exists():
        return src / MODEL_SUBDIR
    return src


def merge_lora(adapter: Any) -> Any:
    """Merge a peft-wrapped ``adapter.model`` into its base model, in place; returns the adapter."""
    model = adapter.model
    if not callable(getattr(model, "merge_and_unload", None)):
        raise InputFileError("the model is not a LoRA (peft) model; there is nothing to merge")
    adapter.model = model.merge_and_unload()
    return adapter


def check_destination(dest: Path) -> None:
    """DEST may be written: absent or an empty folder, under a folder this user can write to."""
    if dest.exists():
        if not dest.is_dir():
            raise MllmError(f"{dest} is a file; DEST must be a folder to create")
        if any(dest.iterdir()):
            raise MllmError(f"{dest} exists and is not empty", hint="pick another DEST or remove it")
        return
    parent = next(p for p in dest.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MllmError(f"cannot create {dest}: {parent} is not a folder you can write to", hint="pick another DEST")


def export_merged(src: Path, dest: Path, model_name: str = "llava") -> Path:
    """Load the LoRA model at ``src`` with the ``model_name`` adapter, merge, save to ``dest``."""
    from mllm.plugins.registry import get_registry

    folder = resolve_model_folder(src)
    if not folder.is_dir():
        raise MissingFileError(f"{src}: no such folder; SRC is a train stage folder (runs/<pipeline>/<stage>) "
                               "or its model/ folder")
    if not (folder / LORA_MARKER).is_file():  # checked before a model is loaded
        raise InputFileError(f"{folder} is not a LoRA model folder (no {LORA_MARKER}); export --merge takes the "
                             "folder of a train stage with lora: true, or its model/ folder")
    dest = Path(dest)
    check_destination(dest)
    adapter_cls = get_registry().get("model", model_name).load()
    adapter = merge_lora(adapter_cls.load(folder))
    adapter.save(dest)
    return dest


@click.command("export")
@click.argument("src", type=click.Path())  # export_merged and check_destination name a wrong SRC or DEST
@click.argument("dest", type=click.Path())
@click.option("--merge", is_flag=True,
              help="merge LoRA adapters into the base weights (the only export for now)")
@click.option("--model", "model_name", default="llava", show_default=True, help="the model adapter that reads SRC")
def export(src: str, dest: str, merge: bool, model_name: str) -> None:
    """Write SRC (a LoRA stage folder or its model/ folder) as a merged full model to DEST."""
    if not merge:
        raise MllmError("say --merge (merging LoRA adapters into the base weights is the only export)")
    out = export_merged(Path(src), Path(dest), model_name)
    click.echo(f"merged model written to {out}")
