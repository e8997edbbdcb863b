"""mllm-example-plugin: a third-party mllm plugin written only against mllm's public API."""

__version__ = "0.1.0"
