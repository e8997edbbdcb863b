"""Seconds per SFT optimizer step: our train stage's path vs a plain PyTorch loop.

Both train the same tiny LLaVA (``init: tiny``, two identical copies) on the same batch
of 8 real easy-VQA conversations, built from the records on every step by the SFT
method's ``collate`` (tokenize with the chat template, pad, load and preprocess images):

- ``ours``: ``mllm.training.trainer.train_method`` -- the ``MethodTrainer`` (a
  ``transformers.Trainer``) with the SFT method's loss, our callbacks
  (``train_log.jsonl``), logging every 10 steps, as a train stage runs it;
- ``plain``: ``batch = collate(records); loss = model(**batch).loss; loss.backward();
  clip_grad_norm_(params, 1.0); AdamW.step(); zero_grad()``.

The steps are interleaved in one process (this machine is shared and noisy, so the two
are measured side by side in time): after each Trainer step a callback runs and times
one plain step, and the Trainer's next step is timed from the end of it (data loading,
forward, backward, clipping, optimizer, scheduler, logging: everything the Trainer
does between two step ends). Medians over ``--steps`` steps after ``--warmup``.
Peak memory is the process's peak RSS (both models live in it). The last line printed
is one JSON object of the figures, with ``overhead_vs_plain`` = ours / plain
(target: at most 1.20).

    python benchmarks/sft_step.py [--steps 40] [--warmup 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

BATCH = 8


def build(seed: int = 0):
    import easy_vqa
    import torch
    from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig
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


def plain_step_fn(method, model, records):
    """One step of the plain loop, as a function returning its duration."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        batch = method.collate(records)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def measure(steps: int, warmup: int) -> tuple[list[float], list[float]]:
    from mllm.training.trainer import TrainSettings, train_method
    from transformers import TrainerCallback

    _, method, model, records = build()
    _, plain_method, plain_model, _ = build()
    plain_step = plain_step_fn(plain_method, plain_model, records)
    ours: list[float] = []
    plain: list[float] = []

    class Interleave(TrainerCallback):
        last: float | None = None

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if self.last is not None:
                ours.append(now - self.last)
            plain.append(plain_step())
            self.last = time.perf_counter()

    total = warmup + steps + 1
    settings = TrainSettings(max_steps=total, lr=1e-3, batch_size=BATCH, logging_steps=10, save_steps=10_000,
                             group_by_length=False)
    with tempfile.TemporaryDirectory() as stage_dir:
        # the same 8 records in order, once per step: every batch is identical
        train_method(method, model, records * total, settings, Path(stage_dir), callbacks=[Interleave()],
                     args_overrides={"train_sampling_strategy": "sequential", "disable_tqdm": True})
    return ours[warmup:], plain[warmup + 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    ours_d, plain_d = measure(args.steps, args.warmup)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ours, plain = statistics.median(ours_d), statistics.median(plain_d)
    ratios = [a / b for a, b in zip(ours_d, plain_d, strict=True)]
    print(f"SFT step, tiny LLaVA, batch {BATCH}, identical batches; medians over {len(ours_d)} interleaved "
          f"steps after {args.warmup} warm-up steps")
    print(f"{'path':<28} {'s/step (median)':>16} {'p10':>8} {'p90':>8}")
    for label, d in (("ours (MethodTrainer + SFT)", ours_d), ("plain PyTorch loop", plain_d)):
        d = sorted(d)
        print(f"{label:<28} {statistics.median(d):>16.4f} {d[len(d) // 10]:>8.4f} {d[(len(d) * 9) // 10]:>8.4f}")
    print(f"peak RSS of the process (both models): {peak_mib:.0f} MiB")
    print(f"overhead ours / plain: {ours / plain:.3f} (median of per-step ratios {statistics.median(ratios):.3f}; "
          "target <= 1.20)")
    print(json.dumps({
        "batch_size": BATCH,
        "steps_timed": len(ours_d),
        "ours_s_per_step": round(ours, 5),
        "plain_s_per_step": round(plain, 5),
        "peak_rss_mib": round(peak_mib, 1),
        "median_step_ratio": round(statistics.median(ratios), 4),
        "overhead_vs_plain": round(ours / plain, 4),
    }))


if __name__ == "__main__":
    main()
