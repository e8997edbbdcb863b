"""mllm: align and evaluate LLaVA-family multimodal models from one YAML file."""

from mllm.plugins.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
