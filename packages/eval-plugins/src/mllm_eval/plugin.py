"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import hookimpl
from mllm.hookspecs import Register
from mllm.specs import ComponentSpec


@hookimpl(specname="mllm_register_benchmarks")
def register_easyvqa_benchmark(register: Register) -> None:
    register(ComponentSpec(name="easyvqa", impl="mllm_eval.easyvqa:EasyVQABenchmark",
                           config="mllm_eval.easyvqa:EasyVQABenchConfig",
                           description="easy-VQA test questions: accuracy, yes/no and open accuracy, POPE metrics"))
