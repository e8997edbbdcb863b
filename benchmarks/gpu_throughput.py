"""GPU throughput: tokens/s and model-FLOPs utilisation (MFU) of a LoRA SFT step and a DPO step.

The model is a ~1B-parameter LLaVA built from a config (``init: tiny`` with large sizes:
a CLIP-B/14-like vision tower at 336 px = 576 image tokens, the 2-layer MLP projector and
an 18-layer, 2048-wide Llama), trained in bf16 the way ``train: {precision: bf16}`` does
(fp32 master weights, bf16 autocast), attention as ``mllm env`` reports it
(``flash_attention_2`` with flash-attn installed and bf16 weights, else ``sdpa``):

- ``sft``: the ``sft`` method with LoRA (r 64 on every attention and MLP projection of the
  language model, projector trained fully, vision tower frozen), AdamW;
- ``dpo``: the ``dpo`` method, full fine-tuning of projector + language model (vision
  tower frozen), reference log-probs precomputed (as in a real stage), chosen and
  rejected sharing one vision pass, AdamW.

A step is collate (tokenize, pad, load images) + loss + backward + optimizer step, on a
batch of ``--batch`` easy-VQA images with long answers (so the text is a few hundred
tokens beside the 576 image tokens). Medians over ``--steps`` after ``--warmup``.

The speed-up variants (docs/speed.md), each beside the baseline it changes:

- ``dpo-shared``: ``dpo`` with ``train.shared_prompt`` (one sequence per pair, the 576
  image tokens and the prompt once). It needs a block mask, so with ``flash_attention_2``
  it is off (the line says so); ``--attention sdpa`` measures it;
- ``sft-varied`` / ``sft-packed`` and ``dpo-varied`` / ``dpo-packed``: answers of varying
  length (1 to 12 filler sentences), padded vs ``train.packing`` (with flash-attention one
  row through its varlen path; with sdpa rows under a block-diagonal mask).
  ``dpo-packed`` also shares the prompt where the attention allows it.

Tokens/s counts only real (non-padding) positions, so a packed or shared layout's gain
shows as more useful tokens per second; the FLOPs count what the model did for them.

Model FLOPs per step (the usual "6N" accounting, attention's quadratic term added):
forward 2 N_lm per text-model token + 2 N_vis per image patch, backward 4 N_lm per token
for full fine-tuning and 2 N_lm (input gradients only) for LoRA; the frozen vision tower
has no backward. MFU = model FLOPs per second / the GPU's dense bf16 peak (H100/H200
989 TFLOP/s, A100 312; ``--peak-tflops`` for others). Tokens/s counts every non-padding
position of the language model (image tokens included).

Without a CUDA GPU it skips: it says why, and its last line is still one JSON object with
null figures and a ``reason``.

    python benchmarks/gpu_throughput.py [--steps 10] [--warmup 3] [--batch 8] [--peak-tflops X]
        [--variants sft,dpo,dpo-shared,...] [--attention sdpa]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
                    "L4": 121.0, "RTX 4090": 165.0}
ONE_B = dict(init="tiny", image_size=336, patch_size=14, vision_hidden_size=768, vision_layers=12,
             vision_intermediate_size=3072, text_hidden_size=2048, text_layers=18, text_intermediate_size=5632,
             heads=16, vocab_size=4000, max_length=1024, dtype="float32")
# the smoke sizes (--size tiny) check the code path on a CPU; their MFU means nothing
TINY = dict(init="tiny", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
            vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64, heads=2,
            vocab_size=300, max_length=256, dtype="float32")
FIGURES = ("sft_tokens_per_s", "sft_mfu", "sft_step_s", "dpo_tokens_per_s", "dpo_mfu", "dpo_step_s",
           "params_b", "peak_tflops")


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


VARIANTS = ("sft", "sft-varied", "sft-packed", "dpo", "dpo-shared", "dpo-varied", "dpo-packed")
SENTENCE = "The image shows a coloured shape on a plain background, and the answer follows from it."


def records(batch: int, kind: str, varied: bool = False):
    import easy_vqa
    from mllm.records import Conversation, Preference, Turn

    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    out = []
    for i in range(batch):
        filler = " ".join([SENTENCE] * ((1 + (i * 5) % 12) if varied else 6))
        prompt = Turn("user", f"<image>\n{questions[i]} Explain your answer in detail.")
        chosen = f"{filler} The answer is {answers[i]}."
        if kind == "sft":
            out.append(Conversation(id=str(i), turns=(prompt, Turn("assistant", chosen)), images=(paths[image_ids[i]],)))
        else:
            out.append(Preference(id=str(i), prompt=(prompt,), chosen=chosen, rejected=f"{filler} The answer is circle.",
                                  images=(paths[image_ids[i]],)))
    return out


def parameter_counts(adapter) -> tuple[int, int]:
    """(language model + projector + lm_head, vision tower) parameter counts, embeddings excluded."""
    names = adapter.module_names()
    model = adapter._llava
    vision = sum(p.numel() for n, p in model.named_parameters() if n.startswith(names["vision_tower"]))
    embed = adapter._llava.get_input_embeddings().weight.numel()
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    return total - vision - embed, vision


def measure(variant: str, sizes: dict, batch: int, steps: int, warmup: int, device: str) -> dict:
    import torch
    from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig
    from mllm_align.layout import choose_layout

    kind = variant.split("-")[0]
    torch.manual_seed(0)
    adapter = LlavaAdapter.from_config(LlavaModelConfig(**sizes), seed=0)
    adapter.model.to(device)
    recs = records(batch, kind, varied=variant.endswith(("-varied", "-packed")))
    if kind == "sft":
        from mllm_align.sft import SFT, SFTConfig

        method = SFT(SFTConfig(lora=True, lora_r=64, lora_alpha=128, lora_dropout=0.0))
    else:
        from mllm_align.dpo import DPO, DPOConfig

        method = DPO(DPOConfig(beta=0.1, precompute_reference=True, share_image_features=True))
    model = method.setup(adapter)
    layout = choose_layout(adapter, packing=variant.endswith("-packed"),
                           shared_prompt=variant in ("dpo-shared", "dpo-packed"))
    method.layout = layout  # before the reference precompute, which uses the same rows
    n_lm, n_vis = parameter_counts(adapter)
    if kind == "dpo":
        with tempfile.TemporaryDirectory() as tmp, torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            method.prepare(type("Context", (), {"records": recs, "stage_dir": tmp, "fingerprint": "bench",
                                                "logger": None})())
    method.layout = layout  # prepare() without train settings resets it to plain rows
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.startswith("cuda"))
    cuda = device.startswith("cuda")
    times, tokens = [], 0
    for step in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        batch_data = method.collate(recs)
        batch_data = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch_data.items()}
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            loss, _ = method.loss(model, batch_data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - started)
            tokens = int(batch_data["attention_mask"].sum())
    seconds = statistics.median(times)
    images = int(batch_data["pixel_values"].shape[0]) if "pixel_values" in batch_data else 0
    patches = (sizes["image_size"] // sizes["patch_size"]) ** 2
    text_config = adapter._llava.config.text_config
    seq = batch_data["input_ids"].shape[1]
    rows = batch_data["input_ids"].shape[0]
    # attention scores and values: 2 matmuls of [seq, seq, hidden] per layer, forward = 4 L T h
    if "doc_ids" in batch_data:  # packed rows: attention within each sequence only
        docs = batch_data["doc_ids"]
        counts = torch.stack([(docs == d).sum(dim=1) for d in range(int(docs.max()) + 1)]).float()
        square = float((counts ** 2).sum())
    else:
        square = float(seq * seq * rows)
    attn_forward = 4 * text_config.num_hidden_layers * text_config.hidden_size * square / 2
    backward_factor = 1 if kind == "sft" else 2  # LoRA: input gradients only; full: inputs and weights
    forward = 2 * n_lm * tokens + attn_forward + 2 * n_vis * patches * images
    flops = forward + backward_factor * (2 * n_lm * tokens + attn_forward)
    return {"step_s": seconds, "tokens_per_s": tokens / seconds, "flops_per_step": flops, "tokens": tokens,
            "params_b": (n_lm + n_vis + adapter._llava.get_input_embeddings().weight.numel()) / 1e9,
            "attention": getattr(adapter._llava.config, "_attn_implementation", None),
            "layout": f"packing {'on' if method.layout.packing else 'off'}, shared prompt "
                      f"{'on' if method.layout.shared_prompt else 'off'}",
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (TFLOP/s)")
    parser.add_argument("--size", choices=("1b", "tiny"), default="1b",
                        help="tiny: a smoke run of the code path (with --cpu); MFU then means nothing")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (only with --size tiny)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {', '.join(VARIANTS)}")
    parser.add_argument("--attention", choices=("sdpa", "eager", "flash_attention_2"),
                        help="force the attention implementation (sdpa lets dpo-shared take its block mask)")
    args = parser.parse_args()
    if args.attention:
        import os

        os.environ["MLLM_ATTN_IMPLEMENTATION"] = args.attention
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        sys.exit(f"unknown variant(s) {sorted(set(variants) - set(VARIANTS))}; use some of {', '.join(VARIANTS)}")

    import torch

    figures: dict = {key: None for key in FIGURES}
    if not torch.cuda.is_available() and not args.cpu:
        figures["reason"] = "no CUDA GPU: this benchmark measures GPU throughput and skips without one"
        print(f"skipped: {figures['reason']}")
        print(json.dumps(figures))
        return
    device = "cpu" if args.cpu else "cuda"
    name = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    peak = args.peak_tflops or (None if args.cpu else peak_tflops(name))
    sizes = ONE_B if args.size == "1b" else TINY
    from mllm.models.attention import pick_attn_implementation

    print(f"device: {name}; attention (bf16): {pick_attn_implementation('bfloat16')}; peak bf16 "
          f"{peak if peak else 'unknown'} TFLOP/s; batch {args.batch}; {args.steps} steps after {args.warmup}")
    rows = []
    for kind in variants:
        result = measure(kind, sizes, args.batch, args.steps, args.warmup, device)
        mfu = result["flops_per_step"] / result["step_s"] / (peak * 1e12) if peak else None
        key = kind.replace("-", "_")
        figures[f"{key}_tokens_per_s"] = round(result["tokens_per_s"], 1)
        figures[f"{key}_step_s"] = round(result["step_s"], 4)
        figures[f"{key}_mfu"] = round(mfu, 4) if mfu is not None else None
        figures[f"{key}_peak_gib"] = round(result["peak_memory_gib"], 2) if result["peak_memory_gib"] else None
        figures[f"{key}_layout"] = result["layout"]
        figures["params_b"] = round(result["params_b"], 3)
        rows.append((kind, result, mfu))
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    figures["peak_tflops"] = peak
    figures["device"] = name
    for pair in (("sft_varied", "sft_packed"), ("dpo", "dpo_shared"), ("dpo_varied", "dpo_packed")):
        if all(f"{k}_step_s" in figures for k in pair):
            figures[f"{pair[1]}_speedup"] = round(figures[f"{pair[0]}_step_s"] / figures[f"{pair[1]}_step_s"], 3)
    print(f"{'step':<12}{'s/step':>10}{'tokens/step':>13}{'tokens/s':>12}{'TFLOP/step':>12}{'MFU':>8}{'peak GiB':>10}"
          "  layout")
    for kind, result, mfu in rows:
        memory = f"{result['peak_memory_gib']:.1f}" if result["peak_memory_gib"] is not None else "-"
        print(f"{kind:<12}{result['step_s']:>10.4f}{result['tokens']:>13}{result['tokens_per_s']:>12.0f}"
              f"{result['flops_per_step'] / 1e12:>12.2f}{(f'{mfu:.1%}' if mfu is not None else '-'):>8}{memory:>10}"
              f"  {result['layout']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
