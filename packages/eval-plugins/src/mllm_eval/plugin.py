"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import ComponentSpec, Register, hookimpl


@hookimpl(specname="mllm_register_benchmarks")
def register_easyvqa_benchmark(register: Register) -> None:
    register(ComponentSpec(name="easyvqa", impl="mllm_eval.easyvqa:EasyVQABenchmark",
                           config="mllm_eval.easyvqa:EasyVQABenchConfig",
                           description="easy-VQA test questions: accuracy, yes/no and open accuracy, POPE metrics"))


@hookimpl(specname="mllm_register_benchmarks")
def register_easyvqa_named_benchmark(register: Register) -> None:
    register(ComponentSpec(name="easyvqa-named", impl="mllm_eval.easyvqa_named:EasyVQANamedBenchmark",
                           config="mllm_eval.easyvqa_named:EasyVQANamedBenchConfig",
                           description="named easy-VQA individuals on new (test) images: 'who is this?' "
                                       "exact-match accuracy (the personal-knowledge study's facts)"))


@hookimpl(specname="mllm_register_benchmarks")
def register_score_benchmarks(register: Register) -> None:
    """Benchmarks that reproduce published figures (issue 5); `mllm eval score BENCH`."""
    for name, module, cls, description in (
        ("scienceqa", "scienceqa", "ScienceQA", "ScienceQA test (LLaVA CQM-A format): accuracy, IMG accuracy, categories"),
        ("pope", "pope", "POPE", "POPE on COCO: accuracy, precision, recall, F1, yes-ratio per split"),
        ("mmvet", "mmvet", "MMVet", "MM-Vet: judge grades 0-1, total and per capability"),
        ("llava-bench", "llava_bench", "LlavaBench", "LLaVA-Bench: judge reviews, relative score per category"),
        ("mtbench", "mtbench", "MTBench", "MT-Bench (text): FastChat single-answer judge, [[rating]]"),
        ("shr", "shr", "SHR", "SHR: HA-DPO's sentence-level hallucination ratio (judge)"),
    ):
        register(ComponentSpec(name=name, impl=f"mllm_eval.{module}:{cls}", config=f"mllm_eval.{module}:{cls}Config",
                               description=description))


@hookimpl(specname="mllm_register_judges")
def register_judges(register: Register) -> None:
    register(ComponentSpec(name="openai", impl="mllm_eval.judges:OpenAIJudge", config="mllm_eval.judges:OpenAIJudgeConfig",
                           description="OpenAI-compatible chat-completions judge (key from an env var; cached)"))
    register(ComponentSpec(name="hf-local", impl="mllm_eval.judges:HFLocalJudge",
                           config="mllm_eval.judges:HFLocalJudgeConfig",
                           description="local Hugging Face causal LM judge, greedy (cached)"))


@hookimpl(specname="mllm_register_benchmarks")
def register_image_qa_benchmark(register: Register) -> None:
    register(ComponentSpec(name="image-qa", impl="mllm_eval.image_qa:ImageQA", config="mllm_eval.image_qa:ImageQAConfig",
                           description="an image-qa-folder question file (question_id, image, text, answer): "
                                       "exact-match accuracy (the personalisation study's facts)"))
