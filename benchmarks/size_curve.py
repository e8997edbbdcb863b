"""A size curve: SFT and DPO seconds per step and peak memory, ours vs TRL, at 4-5 model
sizes from today's tiny LLaVA up to ~200M parameters, with a plot.

Sizes (``_speed.SIZES``; the vision tower stays the tiny one, 65 image tokens): ``tiny``
(today's, ~1M), ``s`` (~4M), ``m`` (~27M), ``l`` (~90M), ``xl`` (~200M). At each size,
each of four runs is its own fresh process (time and peak memory; ``VmHWM`` on a CPU,
``max_memory_allocated`` on a GPU), full fine-tuning (vision tower frozen), AdamW:

- ``ours-sft``: the ``sft`` method through ``train_method`` (our Trainer);
- ``trl-sft``: ``trl.SFTTrainer`` on the same text (prompt-completion rows rendered by our
  chat template) and images;
- ``ours-dpo``: the ``dpo`` method with all its speed-ups (reference precomputed before
  the steps, shared image features, shared prompt);
- ``trl-dpo``: ``trl.DPOTrainer`` with its best settings that take vision data (a
  reference copy runs every step).

Seconds per step: the median of the intervals between optimizer step ends after
``--warmup`` steps, batches of ``--batch`` distinct easy-VQA rows built by each trainer's own
collator. What a step leaves out: one-off costs (model copies, dataset processing, our
reference precompute); benchmarks/dpo_epoch.py counts those over a whole epoch.

The table comes first, then the plot (``--plot``, default ``docs/size_curve.png``;
matplotlib), then one JSON line: per size the parameter count, seconds per step and peak
MiB of each run, and ``sft_speedup``/``dpo_speedup`` (TRL / ours). Budget: about 30
minutes on an idle 16-core machine for all five sizes at the defaults; ``--sizes tiny
--steps 2 --warmup 1`` is a smoke run.

    python benchmarks/size_curve.py [--sizes tiny,s,m,l,xl] [--steps 6] [--warmup 2] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _speed  # noqa: E402

RUNS = ("ours-sft", "trl-sft", "ours-dpo", "trl-dpo")
DEFAULT_PLOT = Path(__file__).resolve().parent.parent / "docs" / "size_curve.png"


def _step_timer():
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if not self.ends:
                self.ends.append(_speed.now())  # the first step is timed from its own start

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(_speed.now())

    return StepTimes()


def run(name: str, size: str, steps: int, warmup: int, batch: int) -> dict:
    import datasets
    import torch
    from mllm.training.trainer import TrainSettings, train_method
    from PIL import Image

    total = steps + warmup
    kind = name.split("-")[1]
    records = (_speed.conversation_records if kind == "sft" else _speed.preference_records)(total * batch)
    adapter = _speed.build_adapter(size)
    params = _speed.parameter_count(adapter)
    timer = _step_timer()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        if name == "trl-dpo":
            trainer = _speed.trl_dpo_trainer(adapter, records, lora=False, batch_size=batch, max_steps=total,
                                             output_dir=tmp)
            trainer.add_callback(timer)
            trainer.train()
        elif name == "trl-sft":
            import trl

            for pname, param in adapter.model.named_parameters():
                param.requires_grad_(not pname.startswith(adapter.module_names()["vision_tower"]))
            rows = []
            for record in records:
                preference = SimpleNamespace(prompt=record.turns[:-1], chosen=record.turns[-1].content,
                                             rejected=record.turns[-1].content)
                prompt, completion, _ = _speed.template_texts(adapter, preference)
                rows.append({"images": [Image.open(p).convert("RGB") for p in record.images], "prompt": prompt,
                             "completion": completion})
            args = trl.SFTConfig(output_dir=tmp, per_device_train_batch_size=batch, report_to=[], max_length=None,
                                 use_cpu=not cuda, bf16=cuda, max_steps=total, learning_rate=1e-5,
                                 lr_scheduler_type="constant", warmup_steps=0, save_strategy="no",
                                 logging_steps=10**6, disable_tqdm=True, seed=0,
                                 gradient_checkpointing=False)  # TRL's default is on; ours is off
            trainer = trl.SFTTrainer(model=adapter.model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                     processing_class=adapter.processor, callbacks=[timer])
            trainer.train()
        else:
            if kind == "sft":
                from mllm_align.sft import SFT, SFTConfig

                method = SFT(SFTConfig())
            else:
                from mllm_align.dpo import DPO, DPOConfig

                method = DPO(DPOConfig(beta=0.1))
            model = method.setup(adapter)
            train = TrainSettings(max_steps=total, batch_size=batch, lr=1e-5, warmup_ratio=0.0,
                                  lr_scheduler="constant", logging_steps=10**6, save_steps=10**6,
                                  group_by_length=False, shared_prompt=True,
                                  precision="bf16" if cuda else "fp32", seed=0)
            method.prepare(SimpleNamespace(records=records, stage_dir=Path(tmp), fingerprint=name, logger=None,
                                           train=train))
            train_method(method, model, records, train, tmp, seed=0, callbacks=[timer],
                         args_overrides={"save_strategy": "no"})
    intervals = [b - a for a, b in zip(timer.ends, timer.ends[1:])]
    return {"run": name, "size": size, "params": params, "s_per_step": statistics.median(intervals[warmup:] or
                                                                                        intervals),
            "peak_mib": _speed.peak_mib(), "steps": len(intervals)}


def plot(figures: dict, path: Path, device: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return False
    sizes = list(figures)
    params = [figures[s]["params"] / 1e6 for s in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name in RUNS:
        style = "-" if name.startswith("ours") else "--"
        axes[0].plot(params, [figures[s]["s_per_step"][name] for s in sizes], style, marker="o", label=name)
        axes[1].plot(params, [figures[s]["peak_mib"][name] for s in sizes], style, marker="o", label=name)
    for kind in ("sft", "dpo"):
        axes[2].plot(params, [figures[s][f"{kind}_speedup"] for s in sizes], marker="o", label=f"{kind}: TRL / ours")
    axes[2].axhline(1.0, color="grey", linewidth=0.8)
    for ax, title in zip(axes, ("seconds per step", "peak MiB", "speed-up over TRL")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (M)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"SFT and DPO steps by model size ({device})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(_speed.SIZES))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.size, args.steps, args.warmup, args.batch)))
        return
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = set(sizes) - set(_speed.SIZES)
    if unknown:
        sys.exit(f"unknown size(s) {sorted(unknown)}; use some of {', '.join(_speed.SIZES)}")
    started = time.perf_counter()
    figures: dict = {}
    for size in sizes:
        results = {}
        for name in RUNS:
            results[name] = _speed.run_child(__file__, ["--child", name, "--size", size, "--steps", str(args.steps),
                                                        "--warmup", str(args.warmup), "--batch", str(args.batch)])
            print(f"  {size} {name}: {results[name]['s_per_step']:.4f} s/step", file=sys.stderr)
        figures[size] = {
            "params": results["ours-sft"]["params"],
            "s_per_step": {n: round(r["s_per_step"], 5) for n, r in results.items()},
            "peak_mib": {n: round(r["peak_mib"], 1) for n, r in results.items()},
            "sft_speedup": round(results["trl-sft"]["s_per_step"] / results["ours-sft"]["s_per_step"], 3),
            "dpo_speedup": round(results["trl-dpo"]["s_per_step"] / results["ours-dpo"]["s_per_step"], 3),
        }
    device = _speed.device_name()
    print(f"size curve: batch {args.batch}, median of {args.steps} steps after {args.warmup}, {device}, "
          f"{time.perf_counter() - started:.0f} s in all")
    print(f"{'size':<6}{'params M':>10}" + "".join(f"{n + ' s':>13}" for n in RUNS)
          + "".join(f"{n + ' MiB':>14}" for n in RUNS) + f"{'SFT x':>7}{'DPO x':>7}")
    for size, f in figures.items():
        print(f"{size:<6}{f['params'] / 1e6:>10.1f}" + "".join(f"{f['s_per_step'][n]:>13.4f}" for n in RUNS)
              + "".join(f"{f['peak_mib'][n]:>14.0f}" for n in RUNS)
              + f"{f['sft_speedup']:>7.2f}{f['dpo_speedup']:>7.2f}")
    plotted = plot(figures, args.plot, device)
    if plotted:
        print(f"plot: {args.plot}")
    print(json.dumps({"sizes": figures, "device": device, "batch": args.batch, "steps": args.steps,
                      "warmup": args.warmup, "plot": str(args.plot) if plotted else None}))


if __name__ == "__main__":
    main()
