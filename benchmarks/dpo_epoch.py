"""One whole DPO epoch over N distinct pairs, every cost counted: ours (all speed-ups, each
alone, the plain loop) vs TRL's DPOTrainer, full fine-tuning and LoRA.

The pairs are easy-VQA questions (chosen: the gold answer, rejected: a wrong one) on the
tiny LLaVA (``init: tiny``: 65 image tokens beside the llava-1.5 system prompt and a short
question, answers of a word or two: the image and prompt tokens are most of each sequence,
as in LLaVA-1.5's preference data). Wall time runs from the built model to the trained one:

- ours: ``DPO.setup`` (freezing / LoRA, the frozen reference copy where one is needed),
  ``prepare`` (the reference log-probs of every pair, when precomputed), then
  ``train_method`` (our Trainer) over one epoch, batches built from the records (tokenize,
  pad, load and preprocess images) as a train stage does;
- TRL: the reference copy, ``DPOTrainer(...)`` (its dataset processing included), then
  ``trainer.train()`` over one epoch, with its best settings that take vision data
  (TRL 1.16 refuses ``precompute_ref_log_probs`` for vision datasets and has padding-free
  off, so the reference forward runs every step), on the same text our chat template
  renders and the same images.

Variants (``ours-*`` speed-ups: ``precompute`` = ``precompute_reference``, ``images`` =
``share_image_features``, ``shared`` = ``train.shared_prompt``, ``packing`` = ``train.packing``):
``ours-all`` (all four), ``ours-all-but-shared`` (two sequences per pair), each speed-up
alone, ``ours-plain`` (none) and ``trl``, for full fine-tuning; ``ours-all``, ``ours-plain``
and ``trl`` for LoRA. Same optimizer (AdamW, lr 1e-5 constant), batch, beta (0.1), no
length grouping anywhere. Each variant runs in its own fresh process (timing and peak
memory: ``VmHWM`` on a CPU, ``max_memory_allocated`` on a GPU; see ``_speed.py``), one after
another; with ``--repeats R`` each runs R times (order reversed every other round) and
the median time is kept. Building the model (the same for all) is not counted.

The table comes first, then one JSON line: ``epoch_speedup_vs_trl`` (TRL's full fine-tuning
epoch / ours with all speed-ups), ``epoch_speedup_vs_trl_lora``, ``shared_prompt_speedup``
(all but the shared prompt / all), ``<speed-up>_alone_speedup`` (plain / that one alone),
``plain_vs_trl``, ``seconds`` and ``peak_mib`` per variant.

    python benchmarks/dpo_epoch.py [--pairs 256] [--batch 8] [--size tiny] [--repeats 3]
    python benchmarks/dpo_epoch.py --pairs 8 --batch 4 --repeats 1 --variants ours-all,trl   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _speed  # noqa: E402

SPEEDUPS = ("precompute", "images", "shared", "packing")
OURS = {
    "ours-all": set(SPEEDUPS),
    "ours-all-but-shared": set(SPEEDUPS) - {"shared"},
    **{f"ours-{name}": {name} for name in SPEEDUPS},
    "ours-plain": set(),
}
FULL_VARIANTS = (*OURS, "trl")
LORA_VARIANTS = ("ours-all", "ours-plain", "trl")


def run_variant(variant: str, lora: bool, pairs: int, batch: int, size: str) -> dict:
    import torch
    from mllm.training.trainer import TrainSettings, train_method
    from mllm_align.dpo import DPO, DPOConfig

    records = _speed.preference_records(pairs)
    adapter = _speed.build_adapter(size)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        started = _speed.now()
        if variant == "trl":
            trainer = _speed.trl_dpo_trainer(adapter, records, lora=lora, batch_size=batch, output_dir=tmp)
            trainer.train()
            steps = trainer.state.global_step
        else:
            on = OURS[variant]
            method = DPO(DPOConfig(beta=0.1, precompute_reference="precompute" in on,
                                   share_image_features="images" in on, lora=lora, lora_dropout=0.0))
            model = method.setup(adapter)
            train = TrainSettings(epochs=1, batch_size=batch, lr=1e-5, warmup_ratio=0.0, lr_scheduler="constant",
                                  logging_steps=10**6, save_steps=10**6, group_by_length=False,
                                  packing="packing" in on, shared_prompt="shared" in on,
                                  precision="bf16" if cuda else "fp32", seed=0)
            method.prepare(SimpleNamespace(records=records, stage_dir=Path(tmp), fingerprint=variant, logger=None,
                                           train=train))
            trainer, _ = train_method(method, model, records, train, tmp, seed=0,
                                      args_overrides={"save_strategy": "no"})
            steps = trainer.state.global_step
        seconds = _speed.now() - started
    return {"variant": variant, "lora": lora, "seconds": seconds, "peak_mib": _speed.peak_mib(), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", choices=tuple(_speed.SIZES), default="tiny")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median kept; the machine is noisy)")
    parser.add_argument("--variants", default="", help="comma-separated subset (full fine-tuning and LoRA)")
    parser.add_argument("--no-lora", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.lora, args.pairs, args.batch, args.size)))
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("benchmarks/dpo_epoch.py compares against TRL: pip install 'mllm-align[bench]' (or pip install trl)")
    wanted = set(filter(None, args.variants.split(",")))
    runs = [(v, False) for v in FULL_VARIANTS if not wanted or v in wanted]
    if not args.no_lora:
        runs += [(v, True) for v in LORA_VARIANTS if not wanted or v in wanted]
    seconds: dict[str, list[float]] = {}
    peak: dict[str, float] = {}
    steps: dict[str, int] = {}
    for round_ in range(args.repeats):
        for variant, lora in (runs if round_ % 2 == 0 else list(reversed(runs))):
            key = f"{variant}{'-lora' if lora else ''}"
            result = _speed.run_child(__file__, ["--child", variant, *(["--lora"] if lora else []),
                                                 "--pairs", str(args.pairs), "--batch", str(args.batch),
                                                 "--size", args.size])
            seconds.setdefault(key, []).append(result["seconds"])
            peak[key] = max(peak.get(key, 0.0), result["peak_mib"])
            steps[key] = result["steps"]
            print(f"  {key}: {result['seconds']:.2f} s, peak {result['peak_mib']:.0f} MiB", file=sys.stderr)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    device = _speed.device_name()
    print(f"DPO epoch: {args.pairs} pairs, batch {args.batch}, size {args.size}, {device}, "
          f"median of {args.repeats} run(s) each, every variant in a fresh process")
    print(f"{'variant':<28}{'epoch s':>10}{'steps':>7}{'peak MiB':>10}{'vs TRL':>8}")
    for key in median:
        reference = median.get("trl-lora" if key.endswith("-lora") else "trl")
        ratio = f"{reference / median[key]:.2f}x" if reference else "-"
        print(f"{key:<28}{median[key]:>10.2f}{steps[key]:>7}{peak[key]:>10.0f}{ratio:>8}")

    def ratio(slow: str, fast: str) -> float | None:
        return round(median[slow] / median[fast], 3) if slow in median and fast in median else None

    figures = {
        "epoch_speedup_vs_trl": ratio("trl", "ours-all"),
        "epoch_speedup_vs_trl_lora": ratio("trl-lora", "ours-all-lora"),
        "shared_prompt_speedup": ratio("ours-all-but-shared", "ours-all"),
        **{f"{name}_alone_speedup": ratio("ours-plain", f"ours-{name}") for name in SPEEDUPS},
        "all_vs_plain": ratio("ours-plain", "ours-all"),
        "plain_vs_trl": ratio("trl", "ours-plain"),
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "peak_mib": {k: round(v, 1) for k, v in peak.items()},
        "pairs": args.pairs, "batch": args.batch, "size": args.size, "repeats": args.repeats, "device": device,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
