"""Pickle-based weight files (``*.bin``, ``*.pt``): opened with ``torch.load(weights_only=True)``
before anything else loads them, and refused with a message that says why and what to do.

A pickle can run code when it is unpickled. transformers and peft load ``.bin`` weights with
``weights_only=True`` too, but their error tells the user to retry with ``weights_only=False``,
which runs whatever the file holds; mllm refuses the file instead and says to convert it
to safetensors where it is trusted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from mllm.errors import InputFileError

#: how to get weights mllm loads: safetensors, written where the file is trusted
CONVERT_HINT = ("convert it to safetensors where you trust it (load it there and save it with "
                "save_pretrained(..., safe_serialization=True)), then use the converted folder")


def load_weights_only(path: str | Path) -> object:
    """``torch.load`` of a pickle-based file allowing only tensors, plain containers and numpy
    arrays (what the Trainer's own RNG files hold); memory-mapped where the file allows it."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip file


def refusal_reason(error: BaseException) -> str:
    """Why a weights-only load failed, in a few words: the global the pickle needs when torch
    names one, else the error. torch's advice is left out: it suggests ``weights_only=False``
    or allowlisting the global, either of which would run the file's code."""
    text = str(error)
    needed = re.search(r"GLOBAL ([\w.]+)", text)
    if needed:
        return f"it needs {needed.group(1)}, which is not a tensor type"
    first = text.strip().splitlines()[0] if text.strip() else ""
    safe = first and not any(word in first for word in ("weights_only", "safe_globals"))
    return f"{type(error).__name__}: {first}" if safe else type(error).__name__


def refuse_unsafe_weights(files: Iterable[Path]) -> None:
    """Open each pickle-based weights file weights-only; raise :class:`InputFileError` naming the
    first that needs more (a pickle that imports or calls something), before it is loaded."""
    for file in files:
        try:
            load_weights_only(file)
        except Exception as error:  # noqa: BLE001 - any failure: the file is not handed on
            raise InputFileError(f"{file}: refused: a pickle that is not plain weights ({refusal_reason(error)}); "
                                 f"loading it could run code; {CONVERT_HINT}") from None


def pickle_weights_to_load(folder: Path, stem: str) -> list[Path]:
    """The ``<stem>*.bin`` files transformers or peft would load from ``folder``: none when the
    folder has ``.safetensors`` weights of that stem (they are preferred)."""
    safetensors_stem = "model" if stem == "pytorch_model" else stem
    if any(folder.glob(f"{safetensors_stem}*.safetensors")):
        return []
    return sorted(folder.glob(f"{stem}*.bin"))
