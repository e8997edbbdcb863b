"""The command line: ``mllm run/validate/plugins/env``, ``eval score``, ``export``, ``convert``, ``new-plugin``."""
