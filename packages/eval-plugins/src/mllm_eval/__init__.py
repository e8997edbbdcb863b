"""mllm-eval: mllm plugins for benchmarks and judges."""
