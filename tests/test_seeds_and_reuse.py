"""Seeds, cross-run reuse and findings with real (tiny) training: a stage reused from another run
is byte-identical to the same stage recomputed in a fresh runs folder, and the report holds each
arm's metrics over seeds and a verdict per claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mllm.pipeline.config import load_pipeline
from mllm.pipeline.runner import PipelineRunner
from mllm.plugins.registry import Registry

PIPELINE = """
name: a
model: {name: llava, init: tiny, tokenizer_corpus: easyvqa, image_size: 16, patch_size: 8, vision_hidden_size: 16,
        vision_layers: 1, vision_intermediate_size: 32, text_hidden_size: 32, text_layers: 1,
        text_intermediate_size: 64, heads: 2, vocab_size: 300}
seeds: [0, 1]
stages:
  - id: sft
    kind: train
    method: {name: sft}
    data: {name: easyvqa, split: train, limit: 8}
    train: {max_steps: 2, batch_size: 4, lr: 1.0e-3, logging_steps: 1, save_steps: 100, warmup_ratio: 0.0}
  - id: eval
    kind: eval
    models: [init, sft]
    benchmarks: [{name: easyvqa, split: test, limit: 4, answer_mode: choice}]
  - id: report
    kind: report
    plots: false
findings:
  - {claim: SFT beats the untrained model, metric: easyvqa.accuracy, arms: [sft, init], direction: higher,
     paper: "n/a"}
"""


@pytest.fixture(scope="module")
def registry():
    return Registry(autoload=True)


def run(registry, path: Path, runs: Path, *overrides: str) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    pipeline = load_pipeline(path, registry, list(overrides))
    PipelineRunner(pipeline, registry, runs, on_event=lambda plan, event: events.append((plan.stage_id, event))).run()
    return events


TIMING = ("train_runtime", "_per_second")  # wall-clock figures: the one thing a recomputation changes


def files(stage_dir: Path) -> dict[str, bytes]:
    """The stage's outputs: the model's files and records byte for byte, metrics and logs without their
    wall-clock figures; left out: state files and log (timestamps) and trainer checkpoints (timestamps, paths)."""
    skip = {"stage.json", "COMPLETE", "log.txt", "environment.json", "resolved_config.yaml"}
    out = {}
    for path in sorted(stage_dir.rglob("*")):
        name = str(path.relative_to(stage_dir))
        if not path.is_file() or path.name in skip or name.startswith("checkpoints"):
            continue
        data = path.read_bytes()
        if path.name in ("metrics.json", "train_log.jsonl"):
            rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()] \
                if path.suffix == ".jsonl" else [json.loads(data)]
            data = json.dumps([{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]).encode()
        out[name] = data
    return out


def test_reused_stages_equal_recomputed_ones_and_the_report_judges_the_claim(registry, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(PIPELINE)
    shared, fresh = tmp_path / "runs", tmp_path / "fresh"
    run(registry, path, shared)
    reused = run(registry, path, shared, "name=b")  # same stages, another run: copied
    # init is built only when a stage loads it: none does here
    assert {s for s, e in reused if e.startswith("reused from")} == {"sft-s0", "sft-s1", "eval-s0", "eval-s1"}
    assert {s for s, e in reused if e == "started"} == {"report"}
    run(registry, path, fresh, "name=b")  # recomputed from nothing
    for stage in ("sft-s0", "sft-s1", "eval-s0", "eval-s1"):
        got, want = files(shared / "b" / stage), files(fresh / "b" / stage)
        assert got.keys() == want.keys(), stage
        differ = sorted(name for name in got if got[name] != want[name])
        assert differ == [], (stage, differ)
    assert any(name.endswith(".safetensors") for name in files(shared / "b" / "sft-s0"))
    report = json.loads((shared / "b" / "report" / "report.json").read_text())
    assert report["arms"]["sft"] == ["sft-s0", "sft-s1"]
    accuracy = report["aggregate"]["models"]["sft"]["easyvqa"]["accuracy"]
    assert accuracy["n"] == 2 and accuracy["values"] == [report["models"][f"sft-s{n}"]["easyvqa"]["accuracy"]
                                                         for n in range(2)]
    (finding,) = report["findings"]
    assert finding["arms"]["sft"]["n"] == 2 and finding["arms"]["init"]["n"] == 1
    # init is one fixed model: its term in se is 0
    assert finding["se"] == pytest.approx(accuracy["std"] / 2 ** 0.5) if accuracy["std"] else finding["se"] == 0
    assert finding["verdict"] in ("holds", "does not hold", "within noise") and "Welch" in finding["rule"]
    md = (shared / "b" / "report" / "report.md").read_text()
    assert "## Findings" in md and "## Over seeds" in md and f"**{finding['verdict']}**" in md
    # one more seed: only its stages train
    more = run(registry, path, shared, "name=b", "seeds=[0, 1, 2]")
    assert {s for s, e in more if e == "started"} == {"sft-s2", "eval-s2", "report"}
