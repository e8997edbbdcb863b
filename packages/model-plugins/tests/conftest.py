"""``families`` tests (each family's full matrix) run only with ``MLLM_FAMILIES=1`` or ``-m families``:
the README's test command runs one family's matrix, the rest on request."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MLLM_FAMILIES") == "1" or "families" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="a further family's matrix: run with MLLM_FAMILIES=1 or -m families")
    for item in items:
        if "families" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    small shared CPU, more threads spin against other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def train_steps():
    """``train_steps(method, model, batch, steps, lr)``: that many AdamW steps of ``method.loss`` on one
    batch (the model left in train mode), and the losses, for "it trains" checks."""
    import torch

    def run(method, model, batch, steps, lr):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        model.train()
        losses = []
        for _ in range(steps):
            loss, _ = method.loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return losses

    return run


@pytest.fixture
def answer_stages():
    """``answer_stages(tmp_path, model, records, limit)``: a pipeline of an eval stage (easyvqa, ``limit``
    questions, generated and choice answers) and greedy and sampled generate stages over ``records``,
    run end to end with ``model`` (a model config dict); checks what each stage wrote."""
    import json

    from mllm.data.recordio import read_records, write_records
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins.registry import Registry

    def run(tmp_path, model, records, limit):
        write_records(tmp_path / "records.jsonl", records)
        source = {"name": "records-jsonl", "path": str(tmp_path / "records.jsonl")}
        registry = Registry(autoload=True)
        data = {"name": "dyneval", "model": model,
                "stages": [{"id": "eval", "kind": "eval", "batch_size": 4, "max_new_tokens": 3,
                            "benchmarks": [{"name": "easyvqa", "limit": limit},
                                           {"name": "easyvqa", "limit": limit, "answer_mode": "choice"}]},
                           {"id": "greedy", "kind": "generate", "data": source, "score": {"rule": "exact-match"},
                            "max_new_tokens": 3, "batch_size": 3},
                           {"id": "sampled", "kind": "generate", "data": source, "num_samples": 2,
                            "temperature": 1.0, "max_new_tokens": 3, "batch_size": 3}]}
        PipelineRunner(load_pipeline(None, registry, data=data), registry, runs_dir=tmp_path / "runs").run()
        stage_dir = tmp_path / "runs" / "dyneval" / "eval"
        metrics = json.loads((stage_dir / "metrics.json").read_text())
        assert set(metrics["init"]) == {"easyvqa", "easyvqa_2"}
        for name in ("easyvqa", "easyvqa_2"):
            lines = [json.loads(line) for line in (stage_dir / "init" / name / "answers.jsonl").read_text().splitlines()]
            assert len(lines) == limit and all(set(line) >= {"id", "prompt", "answer", "gold"} for line in lines)
        greedy = list(read_records(tmp_path / "runs" / "dyneval" / "greedy" / "records.jsonl"))
        assert sorted(r.metadata["source_id"] for r in greedy) == sorted(r.id for r in records)
        sampled = list(read_records(tmp_path / "runs" / "dyneval" / "sampled" / "records.jsonl"))
        assert len(sampled) == 2 * len(records)

    return run
