"""Seconds per SFT optimizer step: our train stage's path vs a plain PyTorch loop.

Both train the same tiny LLaVA (``init: tiny``) on the same batch of 8 real easy-VQA
conversations, built from the records on every step by the SFT method's ``collate``
(tokenize with the chat template, pad, load and preprocess the images):

- ``ours``: ``mllm.training.train_method`` -- the ``MethodTrainer`` (a
  ``transformers.Trainer``) with the SFT method's loss, our callbacks
  (``train_log.jsonl``, the stage log), logging every 10 steps, as a train stage runs it;
- ``plain``: ``for step: batch = collate(records); loss = model(**batch).loss;
  loss.backward(); clip_grad_norm_(params, 1.0); AdamW.step(); zero_grad()``.

Each variant runs in its own process (so peak memory is its own), alternating
``ours, plain, ours, plain`` for ``--rounds`` rounds; a round times ``--steps`` optimizer
steps after ``--warmup`` steps, and the figures are medians over all timed steps.
The last line printed is one JSON object of the figures, including
``overhead_vs_plain`` = ours / plain (target: at most 1.20).

    python benchmarks/sft_step.py [--steps 30] [--warmup 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 8


def build(seed: int = 0):
    import easy_vqa
    import torch

    from mllm.models.llava import LlavaAdapter, LlavaModelConfig
    from mllm.records import Conversation, Turn
    from mllm_align.sft import SFT, SFTConfig

    torch.manual_seed(seed)
    adapter = LlavaAdapter.from_config(LlavaModelConfig(init="tiny"), seed=seed)
    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    records = [Conversation(id=str(i), turns=(Turn("user", f"<image>\n{questions[i]}"), Turn("assistant", answers[i])),
                            images=(paths[image_ids[i]],)) for i in range(BATCH)]
    method = SFT(SFTConfig())
    model = method.setup(adapter)
    return adapter, method, model, records


def run_ours(steps: int, warmup: int) -> list[float]:
    from transformers import TrainerCallback

    from mllm.training import TrainSettings, train_method

    _, method, model, records = build()
    marks: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    total = warmup + steps + 1
    settings = TrainSettings(max_steps=total, lr=1e-3, batch_size=BATCH, logging_steps=10, save_steps=10_000,
                             group_by_length=False)
    with tempfile.TemporaryDirectory() as stage_dir:
        # the same 8 records in order, once per step: every batch is identical
        train_method(method, model, records * total, settings, Path(stage_dir), callbacks=[StepTimer()],
                     args_overrides={"train_sampling_strategy": "sequential", "disable_tqdm": True})
    durations = [b - a for a, b in zip(marks, marks[1:])]
    return durations[warmup:]


def run_plain(steps: int, warmup: int) -> list[float]:
    import torch

    _, method, model, records = build()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    model.train()
    durations = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        batch = method.collate(records)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - start)
    return durations[warmup:]


def child(variant: str, steps: int, warmup: int) -> None:
    run = run_ours if variant == "ours" else run_plain
    durations = run(steps, warmup)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "durations": durations, "peak_rss_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["ours", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.warmup)
        return

    results: dict[str, dict] = {v: {"durations": [], "peak_rss_mib": 0.0} for v in ("ours", "plain")}
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    for round_index in range(args.rounds):
        for variant in ("ours", "plain"):
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--steps", str(args.steps),
                                  "--warmup", str(args.warmup)], check=True, capture_output=True, text=True, env=env)
            data = json.loads(out.stdout.strip().splitlines()[-1])
            results[variant]["durations"].extend(data["durations"])
            results[variant]["peak_rss_mib"] = max(results[variant]["peak_rss_mib"], data["peak_rss_mib"])
            print(f"round {round_index + 1}/{args.rounds} {variant}: median "
                  f"{statistics.median(data['durations']) * 1000:.1f} ms/step", file=sys.stderr)

    ours = statistics.median(results["ours"]["durations"])
    plain = statistics.median(results["plain"]["durations"])
    rows = [("ours (MethodTrainer + SFT)", results["ours"]), ("plain PyTorch loop", results["plain"])]
    print(f"SFT step, tiny LLaVA, batch {BATCH}, identical batches; medians over "
          f"{args.rounds}x{args.steps} steps after {args.warmup} warm-up steps per round")
    print(f"{'path':<28} {'s/step (median)':>16} {'p10':>8} {'p90':>8} {'peak RSS MiB':>13}")
    for label, result in rows:
        d = sorted(result["durations"])
        p10, p90 = d[len(d) // 10], d[(len(d) * 9) // 10]
        print(f"{label:<28} {statistics.median(d):>16.4f} {p10:>8.4f} {p90:>8.4f} {result['peak_rss_mib']:>13.0f}")
    print(f"overhead ours / plain: {ours / plain:.3f} (target <= 1.20)")
    print(json.dumps({
        "batch_size": BATCH,
        "steps_timed": len(results["ours"]["durations"]),
        "ours_s_per_step": round(ours, 5),
        "plain_s_per_step": round(plain, 5),
        "ours_peak_rss_mib": round(results["ours"]["peak_rss_mib"], 1),
        "plain_peak_rss_mib": round(results["plain"]["peak_rss_mib"], 1),
        "overhead_vs_plain": round(ours / plain, 4),
    }))


if __name__ == "__main__":
    main()
