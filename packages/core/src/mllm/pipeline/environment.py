"""What ``mllm env`` reports: library versions, plugins and the device."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect_env() -> dict[str, str]:
    from mllm.plugins.registry import get_registry

    info = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("mllm-core", "torch", "transformers", "peft", "deepspeed", "flash-attn", "accelerate"):
        info[package] = _version(package)
    registry = get_registry()
    dists = sorted({f"{s.distribution} {s.version}" for s in registry.specs()})
    info["plugins"] = ", ".join(dists)
    if registry.failures:
        info["failed plugins"] = ", ".join(f.distribution for f in registry.failures)
    try:
        import torch

        if torch.cuda.is_available():
            info["device"] = f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
        else:
            info["device"] = f"cpu ({torch.get_num_threads()} threads)"
        from mllm.models.attention import pick_attn_implementation

        info["attention"] = pick_attn_implementation()
        info["attention (bf16/fp16 models)"] = pick_attn_implementation("bfloat16")
    except ImportError:
        info["device"] = "unknown (torch not installed)"
    return info


def stage_environment(stage_config: Any, launch: Any = None) -> dict[str, Any]:
    """What a stage ran on, for its ``environment.json``: processes, precision, DeepSpeed,
    attention implementation, device and library versions."""
    import torch

    from mllm.models.attention import pick_attn_implementation

    info: dict[str, Any] = {
        "processes": launch.describe() if launch is not None else {"world_size": 1},
        "backend": ("nccl" if torch.cuda.is_available() else "gloo") if launch is not None else None,
        "device": (f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}" if torch.cuda.is_available()
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "attention": pick_attn_implementation(),
        "attention_half_precision": pick_attn_implementation("bfloat16"),
        "versions": {package: _version(package) for package in
                     ("mllm-core", "torch", "transformers", "peft", "accelerate", "deepspeed", "flash-attn")},
    }
    train = getattr(stage_config, "train", None)
    if train is not None:
        info["precision"] = getattr(train, "effective_precision", None)
        info["deepspeed"] = getattr(train, "deepspeed", None)
    return info
