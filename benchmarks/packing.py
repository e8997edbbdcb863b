"""Packed rows vs padded batches, SFT and DPO, on a set of widely varying lengths.

The set is ``easyvqa-explained`` (``_speed.py``): easy-VQA questions on the tiny LLaVA
(65 image tokens and the llava-1.5 system prompt per sequence) answered with the answer
and 0 to 12 sentences of explanation (half of them none or one, a tail of long ones, as
ScienceQA's explanations vary), so padded batches carry much padding. Three layouts, one
whole epoch each (``train_method``, our Trainer, batches built from the records), each in
its own fresh process (time and peak memory), ``--repeats`` times (median time):

- ``padded-random``: random batches padded to their longest sequence (what TRL and LLaVA
  do without grouping);
- ``padded-grouped``: the same with ``group_by_length`` (transformers' LengthGroupedSampler);
- ``packed``: random batches, ``train.packing: true``: the batch's sequences in as few rows
  as fit (per-sequence position ids), same records per step; attention block by block
  (segmented attention, the default on sdpa);
- ``packed-mask``: the same rows with sdpa and a 4D block-diagonal mask
  (``MLLM_PACKED_ATTENTION=mask``: the full square of every row is computed).

DPO runs with ``precompute_reference`` and ``share_image_features`` on and
``shared_prompt`` off in all three (packing alone is measured; benchmarks/dpo_epoch.py
measures the shared prompt); the reference precompute is inside the timed epoch. Tokens
per second counts the set's real tokens (no padding) over the epoch's wall time; the
padding share is that of the positions the model ran during training.

``max_loss_diff``: on the first batches of the epoch, a perturbed model's SFT loss and
DPO loss, packed vs padded (same records, same reference log-probs): at most 1e-5.

The table comes first, then one JSON line with ``sft_packed_speedup`` and
``dpo_packed_speedup`` (padded-random time / packed time), ``sft_packed_vs_grouped``,
``dpo_packed_vs_grouped``, ``sft_packed_vs_mask``, ``dpo_packed_vs_mask`` (packed-mask time /
packed time), ``max_loss_diff``, and per variant ``padding_share``,
``tokens_per_s``, ``peak_mib``.

    python benchmarks/packing.py [--records 512] [--pairs 256] [--batch 8] [--size tiny] [--repeats 3]
    python benchmarks/packing.py --records 16 --pairs 8 --batch 4 --repeats 1     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _speed  # noqa: E402

LAYOUTS = ("padded-random", "padded-grouped", "packed", "packed-mask")
LOSS_BATCHES = 4


def _method(kind: str):
    if kind == "sft":
        from mllm_align.sft import SFT, SFTConfig

        return SFT(SFTConfig())
    from mllm_align.dpo import DPO, DPOConfig

    return DPO(DPOConfig(beta=0.1, precompute_reference=True, share_image_features=True))


def _records(kind: str, n: int):
    return (_speed.conversation_records if kind == "sft" else _speed.preference_records)(n, explained=True)


def _settings(layout: str, batch: int):
    import torch
    from mllm.training.trainer import TrainSettings

    return TrainSettings(epochs=1, batch_size=batch, lr=1e-5, warmup_ratio=0.0, lr_scheduler="constant",
                         logging_steps=10**6, save_steps=10**6, group_by_length=layout == "padded-grouped",
                         packing=layout.startswith("packed"), shared_prompt=False,
                         precision="bf16" if torch.cuda.is_available() else "fp32", seed=0)


def real_tokens(method, records) -> int:
    if hasattr(method, "encode") and records and hasattr(records[0], "chosen"):
        return sum(len(c["input_ids"]) + len(r["input_ids"]) for c, r in (method.encode(x) for x in records))
    return sum(len(method.encode(x)["input_ids"]) for x in records)


def run_layout(kind: str, layout: str, n: int, batch: int, size: str) -> dict:
    import os

    from mllm.training.trainer import train_method

    if layout == "packed-mask":  # this process only (each variant runs in its own)
        os.environ["MLLM_PACKED_ATTENTION"] = "mask"
    records = _records(kind, n)
    adapter = _speed.build_adapter(size)
    train = _settings(layout, batch)
    positions = {"all": 0, "real": 0}
    with tempfile.TemporaryDirectory() as tmp:
        started = _speed.now()
        method = _method(kind)
        model = method.setup(adapter)
        method.prepare(SimpleNamespace(records=records, stage_dir=Path(tmp), fingerprint=layout, logger=None,
                                       train=train))
        collate = method.collate

        def counting_collate(batch_records):
            out = collate(batch_records)
            positions["all"] += out["attention_mask"].numel()
            positions["real"] += int(out["attention_mask"].sum())
            return out

        method.collate = counting_collate
        trainer, _ = train_method(method, model, records, train, tmp, seed=0, args_overrides={"save_strategy": "no"})
        seconds = _speed.now() - started
        method.collate = collate
        tokens = real_tokens(method, records)
    return {"kind": kind, "layout": layout, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "padding_share": 1 - positions["real"] / max(positions["all"], 1), "peak_mib": _speed.peak_mib(),
            "steps": trainer.state.global_step}


def loss_difference(n: int, batch: int, size: str) -> dict:
    """Max |loss(packed) - loss(padded)| over the first batches, SFT and DPO."""
    import torch
    from mllm_align.layout import Layout

    out = {}
    for kind, count in (("sft", n), ("dpo", n)):
        adapter = _speed.build_adapter(size)
        method = _method(kind)
        model = method.setup(adapter)
        records = _records(kind, min(count, LOSS_BATCHES * batch))
        if kind == "dpo":  # reference log-probs of the start model, then a policy that differs from it
            with tempfile.TemporaryDirectory() as tmp:
                method.prepare(SimpleNamespace(records=records, stage_dir=Path(tmp), fingerprint="x", logger=None))
        torch.manual_seed(1)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.02 * torch.randn_like(param))
        model.eval()
        order = list(range(len(records)))
        random.Random(0).shuffle(order)
        worst = 0.0
        with torch.no_grad():
            for start in range(0, len(order), batch):
                chunk = [records[i] for i in order[start:start + batch]]
                losses = []
                for packing in (False, True):
                    method.layout = Layout(packing=packing)
                    data = method.collate(chunk)
                    data = {k: v.to(_device(model)) if hasattr(v, "to") else v for k, v in data.items()}
                    losses.append(float(method.loss(model, data)[0]))
                worst = max(worst, abs(losses[0] - losses[1]))
        out[kind] = worst
    return out


def _device(model):
    return next(model.parameters()).device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=512, help="SFT conversations")
    parser.add_argument("--pairs", type=int, default=256, help="DPO pairs")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", choices=tuple(_speed.SIZES), default="tiny")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median time kept)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "lossdiff":
        print(json.dumps(loss_difference(args.records, args.batch, args.size)))
        return
    if args.child:
        n = args.records if args.child == "sft" else args.pairs
        print(json.dumps(run_layout(args.child, args.layout, n, args.batch, args.size)))
        return
    common = ["--records", str(args.records), "--pairs", str(args.pairs), "--batch", str(args.batch),
              "--size", args.size]
    results: dict = {}
    runs = [(kind, layout) for kind in ("sft", "dpo") for layout in LAYOUTS]
    for round_ in range(args.repeats):
        for kind, layout in (runs if round_ % 2 == 0 else list(reversed(runs))):
            result = _speed.run_child(__file__, ["--child", kind, "--layout", layout, *common])
            results.setdefault(f"{kind}-{layout}", []).append(result)
            print(f"  {kind} {layout}: {result['seconds']:.2f} s", file=sys.stderr)
    for key, tries in results.items():  # the median run by time; the highest peak
        tries.sort(key=lambda r: r["seconds"])
        results[key] = dict(tries[len(tries) // 2], peak_mib=max(r["peak_mib"] for r in tries))
    diffs = _speed.run_child(__file__, ["--child", "lossdiff", *common])
    device = _speed.device_name()
    print(f"packing: easyvqa-explained, {args.records} conversations / {args.pairs} pairs, batch {args.batch}, "
          f"size {args.size}, {device}; one epoch per variant, each in a fresh process")
    print(f"{'variant':<22}{'epoch s':>9}{'tokens/s':>10}{'padding':>9}{'peak MiB':>10}{'speed-up':>10}")
    for key, result in results.items():
        base = results[f"{result['kind']}-padded-random"]["seconds"]
        print(f"{key:<22}{result['seconds']:>9.2f}{result['tokens_per_s']:>10.0f}{result['padding_share']:>9.1%}"
              f"{result['peak_mib']:>10.0f}{base / result['seconds']:>9.2f}x")
    print(f"max |loss packed - loss padded|: sft {diffs['sft']:.2e}, dpo {diffs['dpo']:.2e}")

    def ratio(kind: str, slow: str) -> float:
        return round(results[f"{kind}-{slow}"]["seconds"] / results[f"{kind}-packed"]["seconds"], 3)

    figures = {
        "sft_packed_speedup": ratio("sft", "padded-random"),
        "dpo_packed_speedup": ratio("dpo", "padded-random"),
        "sft_packed_vs_grouped": ratio("sft", "padded-grouped"),
        "dpo_packed_vs_grouped": ratio("dpo", "padded-grouped"),
        "sft_packed_vs_mask": ratio("sft", "packed-mask"),
        "dpo_packed_vs_mask": ratio("dpo", "packed-mask"),
        "max_loss_diff": max(diffs.values()),
        "padding_share": {k: round(r["padding_share"], 4) for k, r in results.items()},
        "tokens_per_s": {k: round(r["tokens_per_s"], 1) for k, r in results.items()},
        "peak_mib": {k: round(r["peak_mib"], 1) for k, r in results.items()},
        "seconds": {k: round(r["seconds"], 3) for k, r in results.items()},
        "records": args.records, "pairs": args.pairs, "batch": args.batch, "size": args.size, "device": device,
        "set": "easyvqa-explained",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
