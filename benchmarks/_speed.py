"""Shared pieces of the speed benchmarks (dpo_epoch.py, packing.py, size_curve.py).

- model sizes, from today's tiny LLaVA (``init: tiny`` defaults) up to ~200M parameters;
- record sets: easy-VQA pairs and conversations with a LLaVA-like prompt/answer ratio
  (the 65 image tokens and the system prompt are most of each sequence), and
  ``easyvqa-explained``: the same questions answered with explanations of widely varying
  length (0 to 12 sentences, most short, as ScienceQA's explanations are);
- peak memory of *this* process: on a GPU ``torch.cuda.max_memory_allocated``; on a CPU
  the high-water mark of the process's own address space (``VmHWM`` in
  ``/proc/self/status``), which starts afresh at ``exec`` (``ru_maxrss`` does not: it
  carries the parent's peak over, which made every variant of the old dpo_step.py show
  the same figure). Each variant runs in its own fresh process (:func:`run_child`);
- TRL's DPOTrainer on the same model, text and images (:func:`trl_dpo_trainer`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from typing import Any

#: model sizes: LlavaModelConfig overrides (the vision tower and image size stay today's tiny:
#: 64x64 easy-VQA images, 65 image tokens)
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},  # today's: Llama 128 wide, 2 layers (~1M parameters)
    "s": dict(text_hidden_size=256, text_layers=4, text_intermediate_size=704, heads=4),
    "m": dict(text_hidden_size=512, text_layers=8, text_intermediate_size=1408, heads=8),
    "l": dict(text_hidden_size=768, text_layers=12, text_intermediate_size=2048, heads=16),  # heads divide both towers (vision 64 wide)
    "xl": dict(text_hidden_size=1024, text_layers=16, text_intermediate_size=2816, heads=16),
}
EXPLANATION = ("The picture shows one coloured shape on a plain background, so the question can be answered by "
               "looking at its colour and its outline.")


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def build_adapter(size: str = "tiny", *, seed: int = 0, max_length: int = 1024) -> Any:
    import torch
    from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig

    torch.manual_seed(seed)
    adapter = LlavaAdapter.from_config(LlavaModelConfig(init="tiny", max_length=max_length, **SIZES[size]), seed=seed)
    if torch.cuda.is_available():
        adapter.model.to("cuda")
    return adapter


def parameter_count(adapter: Any) -> int:
    return sum(p.numel() for n, p in adapter.model.named_parameters() if "lora_" not in n)


def _wrong(answer: str) -> str:
    return {"yes": "no", "no": "yes"}.get(answer, "circle" if answer != "circle" else "red")


def preference_records(n: int, *, explained: bool = False, seed: int = 0) -> list[Any]:
    """``n`` distinct easy-VQA pairs (chosen: the gold answer; rejected: a wrong one)."""
    import easy_vqa
    from mllm.records import Preference, Turn

    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    rng = random.Random(seed)
    out = []
    for i in range(n):
        chosen, rejected = answers[i], _wrong(answers[i])
        if explained:
            chosen, rejected = explain(chosen, rng), explain(rejected, rng)
        out.append(Preference(id=str(i), prompt=(Turn("user", f"<image>\n{questions[i]}"),), chosen=chosen,
                              rejected=rejected, images=(paths[image_ids[i]],)))
    return out


def conversation_records(n: int, *, explained: bool = False, seed: int = 0) -> list[Any]:
    from mllm.records import Conversation, Turn

    return [Conversation(id=r.id, turns=(*r.prompt, Turn("assistant", r.chosen)), images=r.images)
            for r in preference_records(n, explained=explained, seed=seed)]


def explain(answer: str, rng: random.Random) -> str:
    """``answer`` with 0-12 sentences of explanation: half get none or one, a tail gets many."""
    sentences = min(12, int(rng.expovariate(1 / 3.0)))
    return " ".join([answer + "."] + [EXPLANATION] * sentences)


def peak_mib() -> float:
    """Peak memory of this process (see the module docstring)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def now() -> float:
    sync()
    return time.perf_counter()


def run_child(script: str, args: list[str], *, timeout: float | None = None) -> dict[str, Any]:
    """Run ``script args`` in a fresh Python process; its last stdout line is one JSON object."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env,
                            timeout=timeout)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        sys.stderr.write(result.stderr[-4000:])
        raise RuntimeError(f"{script} {' '.join(args)} failed (exit {result.returncode})")
    return json.loads(lines[-1])


def template_texts(adapter: Any, record: Any) -> tuple[str, str, str]:
    """The prompt, chosen and rejected text of a pair as our chat template renders them
    (what TRL gets, so both train on the same text)."""
    from mllm.records import Turn

    prompt = "".join(s.text for s in adapter.template.segments(list(record.prompt), add_generation_prompt=True))
    out = []
    for answer in (record.chosen, record.rejected):
        full = "".join(s.text for s in adapter.template.segments([*record.prompt, Turn("assistant", answer)],
                                                                 add_generation_prompt=False))
        if not full.startswith(prompt):
            raise RuntimeError("the template's prompt is not a prefix of the conversation")
        out.append(full[len(prompt):])
    bos = adapter.tokenizer.bos_token or ""
    return bos + prompt, out[0], out[1]


def trl_dpo_trainer(adapter: Any, records: list[Any], *, lora: bool, batch_size: int, epochs: float = 1.0,
                    max_steps: int = -1, lr: float = 1e-5, output_dir: str, beta: float = 0.1) -> Any:
    """TRL's DPOTrainer with its best settings that take vision data: reference log-probs
    cannot be precomputed for vision datasets and padding-free is off in TRL 1.16, so a
    frozen reference copy (full fine-tuning) or the adapters disabled (LoRA)."""
    import copy

    import datasets
    import torch
    import trl
    from PIL import Image

    rows = []
    for record in records:
        prompt, chosen, rejected = template_texts(adapter, record)
        rows.append({"images": [Image.open(p).convert("RGB") for p in record.images], "prompt": prompt,
                     "chosen": chosen, "rejected": rejected})
    cuda = torch.cuda.is_available()
    args = trl.DPOConfig(output_dir=output_dir, per_device_train_batch_size=batch_size, report_to=[], beta=beta,
                         loss_type=["sigmoid"], max_length=None, use_cpu=not cuda, num_train_epochs=epochs,
                         max_steps=max_steps, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
                         logging_steps=10**6, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                         bf16=cuda, seed=0,
                         # TRL turns it on by default; ours runs without: same work on both sides
                         gradient_checkpointing=False)
    peft_config = None
    reference = None
    names = adapter.module_names()
    if lora:
        from mllm_align.common import DEFAULT_LORA_TARGETS, lora_target_regex
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                                 target_modules=lora_target_regex(names["language_model"], DEFAULT_LORA_TARGETS),
                                 modules_to_save=[names["projector"]])
    else:
        for name, param in adapter.model.named_parameters():  # LLaVA's recipe: the vision tower frozen
            param.requires_grad_(not name.startswith(names["vision_tower"]))
        reference = copy.deepcopy(adapter.model).eval()
    return trl.DPOTrainer(model=adapter.model, ref_model=reference, args=args, peft_config=peft_config,
                          train_dataset=datasets.Dataset.from_list(rows), processing_class=adapter.processor)
