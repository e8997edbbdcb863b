"""Evaluation speed: one-at-a-time generation vs batched generation vs choice scoring.

The model is the quickstart's tiny LLaVA (``model: {name: llava, init: tiny}``), trained
here for a few hundred plain-PyTorch steps on easy-VQA train questions so its answers
are real (or any saved model folder: ``--model runs/quickstart/sft/model``). It answers
``--questions`` (default 1,000) seeded easy-VQA test questions with ``max_new_tokens 8``;
every method uses the same preprocessing (the adapter's ``encode_prompt`` and
``load_images``) and the same greedy decoding:

- ``one-at-a-time`` (the plain way, as LLaVA's ``model_vqa.py``): per question, encode
  the prompt, load the image, ``model.generate`` with batch size 1, decode;
- ``engine, batch 1``: :class:`mllm.generation.engine.AnswerEngine` with batch size 1 (its
  per-image feature cache and shared-prefix cache, no batching);
- ``batched``: the engine's greedy ``generate`` on left-padded, length-sorted batches
  of ``--batch-size``;
- ``choice``: the engine's closed-set scoring (yes/no, or the 11 colours and shapes)
  from one forward pass per batch.

The questions are cut into chunks and the methods run chunk by chunk, in rotating
order, each with a fresh engine (no answer cache), so that the noise of this shared
machine hits all alike; a method's time is the sum over chunks, and a speedup is the
median over chunks of (one-at-a-time seconds / method seconds). Peak memory is the
highest resident set size sampled while the method ran. ``--threads`` defaults to 1:
on this shared 2-core machine, two OpenMP threads spin against other processes and
make the many small operations of batch-1 decoding erratically slow (which would
flatter the speedups).

``differing_answers`` counts questions whose batched answer differs from the
one-at-a-time answer (target 0; ``differing_answers_engine_batch1`` compares with the
engine at batch size 1). The last line printed is one JSON object: ``speedup_batched``
(target >= 4), ``speedup_choice`` (target >= 4.5), ``differing_answers``, with the
throughputs and accuracies.

    python benchmarks/eval_speed.py [--questions 1000] [--train-steps 200] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a background thread while active."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRSS":
        self._stop.clear()
        self.peak = max(self.peak, rss_bytes())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def train_tiny(steps: int, batch_size: int, lr: float, seed: int):
    """The quickstart's tiny LLaVA after ``steps`` plain-PyTorch SFT steps on easy-VQA train."""
    import torch
    from mllm.data.badrows import DataReport
    from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig
    from mllm_data.easyvqa import EasyVQA, EasyVQAConfig

    adapter = LlavaAdapter.from_config(LlavaModelConfig(init="tiny"), seed=seed)
    records = list(EasyVQA(EasyVQAConfig(split="train", limit=steps * batch_size, seed=seed))
                   .records(DataReport("easyvqa")))
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(adapter.model.parameters(), lr=lr)
    adapter.model.train()
    for step in range(steps):
        chunk = records[step * batch_size:(step + 1) * batch_size]
        encoded = [adapter.encode_conversation(r) for r in chunk]
        width = max(len(e["input_ids"]) for e in encoded)
        ids = torch.full((len(chunk), width), adapter.pad_token_id)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e["input_ids"])
            ids[row, :n] = torch.tensor(e["input_ids"])
            labels[row, :n] = torch.tensor(e["labels"])
            mask[row, :n] = 1
        loss = adapter.model(input_ids=ids, labels=labels, attention_mask=mask,
                             pixel_values=adapter.load_images([r.images[0] for r in chunk])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            print(f"  train step {step + 1}/{steps}: loss {loss.item():.3f}", flush=True)
    adapter.model.eval()
    return adapter


def plain_answers(adapter, items, max_new_tokens: int) -> dict[str, str]:
    """The plain way: one question at a time, ``model.generate`` with batch size 1."""
    import torch
    from transformers import GenerationConfig

    model = adapter.model
    stop_ids = [adapter.eos_token_id]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=adapter.pad_token_id, eos_token_id=stop_ids)
    answers = {}
    with torch.inference_mode():
        for item in items:
            ids = torch.tensor([adapter.encode_prompt(item.prompt)])
            pixel_values = adapter.load_images(list(item.images))
            output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values,
                                    generation_config=config)
            new = output[0, ids.shape[1]:].tolist()
            cut = next((i for i, token in enumerate(new) if token in stop_ids), len(new))
            answers[item.id] = adapter.tokenizer.decode(new[:cut], skip_special_tokens=True).strip()
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=1000, help="easy-VQA test questions to answer")
    parser.add_argument("--model", type=Path, default=None, help="a saved model folder (skips training)")
    parser.add_argument("--train-steps", type=int, default=200, help="plain SFT steps when no --model is given")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of batched generation and choice")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=5, help="interleaving chunks (noise control)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from mllm.generation.engine import AnswerEngine
    from mllm.models.llava.adapter import LlavaAdapter
    from mllm_eval.easyvqa import EasyVQABenchConfig, EasyVQABenchmark

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.model is not None:
        print(f"loading {args.model}", flush=True)
        adapter = LlavaAdapter.load(args.model)
    else:
        print(f"training the quickstart's tiny LLaVA for {args.train_steps} steps", flush=True)
        adapter = train_tiny(args.train_steps, args.train_batch, args.lr, args.seed)
    print(f"  model ready in {time.perf_counter() - started:.1f}s", flush=True)

    benchmark = EasyVQABenchmark(EasyVQABenchConfig(split="test", limit=args.questions, seed=args.seed,
                                                    max_new_tokens=args.max_new_tokens))
    items = benchmark.items()
    n_chunks = max(1, min(args.chunks, len(items)))
    # contiguous chunks: each keeps the benchmark's own mix (questions come grouped by image,
    # ~10 per image), as one engine answering the whole benchmark sees it
    bounds = [round(i * len(items) / n_chunks) for i in range(n_chunks + 1)]
    chunks = [items[bounds[i]:bounds[i + 1]] for i in range(n_chunks)]
    methods = {
        "one-at-a-time": None,
        "engine, batch 1": dict(batch_size=1, mode="generate"),
        "batched": dict(batch_size=args.batch_size, mode="generate"),
        "choice": dict(batch_size=args.batch_size, mode="choice"),
    }
    names = list(methods)
    seconds = {name: [] for name in names}
    answers: dict[str, dict[str, str]] = {name: {} for name in names}
    peaks = {name: PeakRSS() for name in names}

    def run(name: str, chunk) -> dict[str, str]:
        method = methods[name]
        if method is None:
            return plain_answers(adapter, chunk, args.max_new_tokens)
        engine = AnswerEngine(adapter, batch_size=method["batch_size"], max_new_tokens=args.max_new_tokens)
        return engine.answer(chunk, mode=method["mode"])

    adapter.model.eval()
    for name in names:  # warm-up (first calls pay one-off costs), not timed
        run(name, items[:2])
    for index, chunk in enumerate(chunks):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            with peaks[name]:
                start = time.perf_counter()
                answers[name].update(run(name, chunk))
                seconds[name].append(time.perf_counter() - start)
        print(f"  chunk {index + 1}/{n_chunks} ({len(chunk)} questions): "
              + ", ".join(f"{name} {seconds[name][-1]:.2f}s" for name in names), flush=True)

    base = seconds["one-at-a-time"]
    speedup = {name: statistics.median(b / s for b, s in zip(base, seconds[name])) for name in names}
    differing = sum(answers["batched"][i.id] != answers["one-at-a-time"][i.id] for i in items)
    differing_engine = sum(answers["batched"][i.id] != answers["engine, batch 1"][i.id] for i in items)
    choice_vs_generate = sum(answers["choice"][i.id] == answers["batched"][i.id] for i in items)
    metrics = {name: benchmark.score(items, answers[name]) for name in names}

    print()
    print(f"easy-VQA test, {len(items)} questions, max_new_tokens {args.max_new_tokens}, "
          f"batch size {args.batch_size}, {torch.get_num_threads()} thread(s), {n_chunks} interleaved chunks")
    header = f"{'method':<17}{'seconds':>10}{'questions/s':>13}{'speedup':>10}{'accuracy':>10}{'peak RSS MiB':>14}"
    print(header)
    print("-" * len(header))
    for name in names:
        total = sum(seconds[name])
        print(f"{name:<17}{total:>10.2f}{len(items) / total:>13.1f}{speedup[name]:>9.2f}x"
              f"{metrics[name]['accuracy']:>10.3f}{peaks[name].peak / 2**20:>14.0f}")
    print(f"answers differing between batched and one-at-a-time: {differing} "
          f"(and engine at batch size 1: {differing_engine})")
    print(f"choice answer equals batched generation: {choice_vs_generate}/{len(items)}")
    print(json.dumps({
        "speedup_batched": round(speedup["batched"], 3),
        "speedup_choice": round(speedup["choice"], 3),
        "differing_answers": differing,
        "differing_answers_engine_batch1": differing_engine,
        "speedup_engine_batch1": round(speedup["engine, batch 1"], 3),
        "questions": len(items),
        "qps_one_at_a_time": round(len(items) / sum(seconds["one-at-a-time"]), 2),
        "qps_batched": round(len(items) / sum(seconds["batched"]), 2),
        "qps_choice": round(len(items) / sum(seconds["choice"]), 2),
        "accuracy_generate": round(metrics["batched"]["accuracy"], 4),
        "accuracy_choice": round(metrics["choice"]["accuracy"], 4),
        "choice_agrees_with_generate": round(choice_vs_generate / len(items), 4),
    }))


if __name__ == "__main__":
    main()
