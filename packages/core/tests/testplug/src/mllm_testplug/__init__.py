"""A small real plugin used by mllm-core's tests: a text-lines dataset and a `touch` stage kind."""
