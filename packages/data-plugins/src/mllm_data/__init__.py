"""mllm-data: mllm plugins for datasets (easy-VQA, LLaVA JSON, ScienceQA, ...)."""
