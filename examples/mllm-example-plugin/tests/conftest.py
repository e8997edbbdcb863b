pytest_plugins = ["mllm.testing"]
