"""What ``mllm env`` reports: library versions, plugins and the device."""

from __future__ import annotations

import platform
from importlib import metadata


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect_env() -> dict[str, str]:
    from mllm.plugins import get_registry

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
        from mllm.attention import pick_attn_implementation

        info["attention"] = pick_attn_implementation()
    except ImportError:
        info["device"] = "unknown (torch not installed)"
    return info
