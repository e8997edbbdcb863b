"""What ``mllm serve PATH_OR_RUN_STAGE`` serves: a saved model folder, or a run's stage.

Accepted: a folder a model adapter saved (``config.json``, or a LoRA adapter's
``adapter_config.json``, which loads its recorded base and attaches the adapter without
merging), or a stage folder ``runs/<pipeline>/<stage>`` holding ``model/``. The model
kind (``llava`` unless the run's ``init/resolved_config.yaml`` names another) is
resolved through the registry, so a plugin's model adapter serves its own folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mllm.errors import MissingFileError, MllmError

MODEL_SUBDIR = "model"
DEFAULT_MODEL_KIND = "llava"


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


@dataclass(frozen=True)
class ServedModel:
    """A resolved target: the folder to load, the name clients use, the model kind."""

    folder: Path
    name: str
    kind: str = DEFAULT_MODEL_KIND

    def load(self) -> Any:
        """The model adapter (on the GPU when there is one)."""
        import torch

        from mllm.plugins.registry import get_registry

        adapter = get_registry().get("model", self.kind).load().load(self.folder)
        if torch.cuda.is_available():
            adapter.model.to(torch.device("cuda", torch.cuda.current_device()))
        return adapter


def _run_model_kind(run_dir: Path) -> str:
    """The ``model: {name}`` the run's ``init`` stage recorded, else ``llava``."""
    try:
        resolved = yaml.safe_load((run_dir / "init" / "resolved_config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return DEFAULT_MODEL_KIND
    model = resolved.get("model") if isinstance(resolved, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return str(name) if name else DEFAULT_MODEL_KIND


def resolve_target(target: str | Path, name: str | None = None) -> ServedModel:
    """The :class:`ServedModel` of ``PATH_OR_RUN_STAGE``; a one-line error saying what was expected."""
    path = Path(target).expanduser()
    if not path.exists():
        raise MissingFileError(f"{path} does not exist; give a saved model folder or a run's stage folder "
                               "(runs/<pipeline>/<stage>)")
    if not path.is_dir():
        raise MllmError(f"{path} is a file; give a saved model folder or a run's stage folder (runs/<pipeline>/<stage>)")
    if _is_model_folder(path / MODEL_SUBDIR):
        if (path / "stage.json").is_file() and not (path / "COMPLETE").is_file():
            raise MllmError(f"stage {path.name!r} ({path}) did not finish (no COMPLETE marker); finish it with "
                            "mllm run first")
        return ServedModel(path / MODEL_SUBDIR, name or f"{path.parent.name}/{path.name}", _run_model_kind(path.parent))
    if _is_model_folder(path):
        run_dir = path.parent.parent if path.name == MODEL_SUBDIR else None
        kind = _run_model_kind(run_dir) if run_dir is not None else DEFAULT_MODEL_KIND
        default = f"{run_dir.name}/{path.parent.name}" if run_dir is not None else path.name
        return ServedModel(path, name or default, kind)
    raise MissingFileError(f"{path} holds no model: expected config.json or adapter_config.json (a saved model "
                           "folder), or model/ (a stage folder of a run that trained one)")
