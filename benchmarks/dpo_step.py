"""Seconds per DPO optimizer step: ours with both speed-ups, ours without them, TRL's DPOTrainer.

What it leaves out (read its figures as step costs, not as the cost of training): the
reference log-probs ``fast`` precomputes once are *not* in its seconds per step (they are
printed apart, as a one-off for the 8 pairs), and the same 8 pairs repeat every step, so
that one-off is never charged per pair as a real epoch would charge it; the shared prompt
and packing (``train.shared_prompt`` / ``train.packing``) are not used; only the tiny size
is measured. benchmarks/dpo_epoch.py measures a whole epoch over distinct pairs with every
cost counted, benchmarks/size_curve.py the trend with model size.

All three train the same tiny LLaVA (``init: tiny``: 64x64 images, 65 image tokens; one
identical copy each) on the same batch of 8 real easy-VQA preference pairs (chosen =
the gold answer, rejected = a wrong one), full fine-tuning, AdamW, beta 0.1:

- ``fast``: the ``dpo`` method with ``precompute_reference`` (the reference log-probs
  computed once before training, like ``prepare`` does; that one-off cost is reported
  separately) and ``share_image_features`` (one vision-tower pass per image for chosen
  and rejected);
- ``plain``: the ``dpo`` method with both off: a frozen reference copy runs every step
  and each image goes through the vision tower twice (what TRL and the seed repos do);
- ``trl``: ``trl.DPOTrainer.compute_loss`` (its fused LM head, its reference model) on the
  same tokens in TRL's layout (``input_ids``, ``completion_mask``, the images repeated for
  chosen and rejected as its vision collator does), then backward and AdamW.

A step is: build the batch from the records (tokenize, pad, load and preprocess images),
loss, backward, gradient clipping, optimizer step. The three are interleaved step by step
in one process (the machine is shared and noisy), medians over ``--steps`` after
``--warmup``. Peak memory: each variant (and the LoRA variants, whose reference is the
base with adapters disabled, no copy) runs alone in a child process for a few steps and
reports the peak RSS of its own address space (``VmHWM``; ``ru_maxrss`` would carry the
parent's peak over across fork/exec). The last line is one JSON object: seconds per step, peak RSS,
``speedup_vs_trl`` (TRL's seconds per step / ours with both speed-ups) and
``speedup_vs_plain``.

    python benchmarks/dpo_step.py [--steps 20] [--warmup 3] [--no-memory]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

BATCH = 8
VARIANTS = ("fast", "plain", "trl")
MEMORY_VARIANTS = ("fast", "plain", "trl", "lora-fast", "lora-plain")


def records():
    import easy_vqa
    from mllm.records import Preference, Turn

    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    out = []
    for i in range(BATCH):
        wrong = {"yes": "no", "no": "yes"}.get(answers[i], "circle" if answers[i] != "circle" else "red")
        out.append(Preference(id=str(i), prompt=(Turn("user", f"<image>\n{questions[i]}"),), chosen=answers[i],
                              rejected=wrong, images=(paths[image_ids[i]],)))
    return out


def make_step(variant: str, recs, tmp: str):
    """A function doing one optimizer step of ``variant``, and the one-off prepare time."""
    import torch
    from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig
    from mllm_align.dpo import DPO, DPOConfig

    torch.manual_seed(0)
    adapter = LlavaAdapter.from_config(LlavaModelConfig(init="tiny"), seed=0)
    lora = variant.startswith("lora")
    fast = variant in ("fast", "lora-fast")
    method = DPO(DPOConfig(beta=0.1, precompute_reference=fast, share_image_features=fast, lora=lora,
                           lora_dropout=0.0))
    reference = copy.deepcopy(adapter.model) if variant == "trl" else None
    model = method.setup(adapter)
    prepare_seconds = 0.0
    if fast:
        started = time.perf_counter()
        method.prepare(type("Ctx", (), {"records": recs, "stage_dir": tmp, "fingerprint": variant, "logger": None})())
        prepare_seconds = time.perf_counter() - started
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    model.train()

    if variant == "trl":
        import datasets
        import trl
        from PIL import Image

        rows = [{"images": [Image.open(r.images[0]).convert("RGB")], "prompt": r.prompt[0].content,
                 "chosen": r.chosen, "rejected": r.rejected} for r in recs]
        args = trl.DPOConfig(output_dir=f"{tmp}/trl", per_device_train_batch_size=BATCH, report_to=[], beta=0.1,
                             loss_type=["sigmoid"], max_length=None, use_cpu=True,
                             gradient_checkpointing=False)  # TRL's default is on; ours is off
        trainer = trl.DPOTrainer(model=model, ref_model=reference, args=args,
                                 train_dataset=datasets.Dataset.from_list(rows), processing_class=adapter.processor)

        def loss_fn():
            batch = method.collate(recs)
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                      "pixel_values": torch.cat([batch["pixel_values"]] * 2),
                      "completion_mask": (batch["labels"] != -100).long()}
            return trainer.compute_loss(trainer.model, inputs)
    else:
        def loss_fn():
            return method.loss(model, method.collate(recs))[0]

    def step() -> float:
        started = time.perf_counter()
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    return step, prepare_seconds


def peak_rss_mib() -> float:
    """Peak RSS of this process's own address space: ``VmHWM`` starts afresh at exec, while
    ``ru_maxrss`` keeps the parent's peak (every child would show the parent's figure)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(variant: str, steps: int) -> None:
    """Run one variant alone; print its peak RSS (MiB) as the last line."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    recs = records()
    with tempfile.TemporaryDirectory() as tmp:
        step, _ = make_step(variant, recs, tmp)
        baseline = peak_rss_mib()
        for _ in range(steps):
            step()
    print(json.dumps({"variant": variant, "peak_rss_mib": round(peak_rss_mib(), 1),
                      "before_steps_mib": round(baseline, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory child runs")
    parser.add_argument("--memory-child", choices=MEMORY_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        child_memory(args.memory_child, 3)
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("benchmarks/dpo_step.py compares against TRL: pip install 'mllm-align[bench]' (or pip install trl)")

    recs = records()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        steps, prepare = {}, {}
        for variant in VARIANTS:
            steps[variant], prepare[variant] = make_step(variant, recs, tmp)
        for index in range(args.warmup + args.steps):
            order = VARIANTS if index % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                seconds = steps[variant]()
                if index >= args.warmup:
                    times[variant].append(seconds)
    medians = {v: statistics.median(times[v]) for v in VARIANTS}

    memory: dict[str, float] = {}
    if not args.no_memory:
        for variant in MEMORY_VARIANTS:
            result = subprocess.run([sys.executable, __file__, "--memory-child", variant], capture_output=True,
                                    text=True, check=True)
            memory[variant] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]

    print(f"DPO step, tiny LLaVA, batch {BATCH} pairs, median of {args.steps} interleaved steps")
    print(f"{'variant':<28}{'s/step':>10}{'peak RSS MiB':>14}")
    labels = {"fast": "ours (both speed-ups)", "plain": "ours (plain)", "trl": "TRL DPOTrainer"}
    for variant in VARIANTS:
        print(f"{labels[variant]:<28}{medians[variant]:>10.4f}{memory.get(variant, float('nan')):>14.0f}")
    for variant in ("lora-fast", "lora-plain"):
        if variant in memory:
            print(f"{'ours LoRA (' + variant[5:] + ')':<28}{'':>10}{memory[variant]:>14.0f}")
    print(f"one-off reference precompute (fast): {prepare['fast']:.3f} s for {BATCH} pairs")
    print("left out: that precompute is not in fast's s/step and the same pairs repeat every step; no shared "
          "prompt, no packing; one tiny size (benchmarks/dpo_epoch.py counts a whole epoch)")
    figures = {
        "fast_s_per_step": round(medians["fast"], 5),
        "plain_s_per_step": round(medians["plain"], 5),
        "trl_s_per_step": round(medians["trl"], 5),
        "fast_prepare_s": round(prepare["fast"], 4),
        "speedup_vs_trl": round(medians["trl"] / medians["fast"], 3),
        "speedup_vs_plain": round(medians["plain"] / medians["fast"], 3),
        "plain_vs_trl": round(medians["trl"] / medians["plain"], 3),
        **{f"peak_rss_mib_{k.replace('-', '_')}": v for k, v in memory.items()},
        "steps": args.steps,
        "batch_pairs": BATCH,
        "leaves_out": "reference precompute (one-off, printed apart), distinct pairs, shared prompt, packing",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
