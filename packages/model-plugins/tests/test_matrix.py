"""Every stage kind and method on each family: a tiny model, a few steps each.

One pipeline per family runs sft (full), sft with LoRA, projector-only sft, dpo, hadpo,
a scored generate stage with rejection sampling and steerlm on its candidates, and an
eval stage answering by generation and by choice scoring. Idefics3 runs in the default
test set; the other families (Qwen2-VL and Qwen2.5-VL included) are marked ``slow`` and ``families`` (run them with
``MLLM_FAMILIES=1``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("easy_vqa")

SMALL = {"init": "tiny", "image_size": 16, "patch_size": 8, "vision_hidden_size": 16, "vision_intermediate_size": 32,
         "text_hidden_size": 32, "text_intermediate_size": 64, "text_layers": 1, "vocab_size": 400,
         "max_length": 256, "tokenizer_corpus": "easyvqa"}
TRAIN = {"max_steps": 2, "batch_size": 2, "logging_steps": 1}
LORA = {"lora": True, "lora_r": 4, "lora_alpha": 8}


def matrix_pipeline(family: str, tmp_path: Path) -> dict:
    from mllm.data.recordio import write_records
    from mllm.testing import example_records, write_image

    pairs = tmp_path / "pairs.jsonl"
    write_records(pairs, example_records("preference", tmp_path / "images", count=2))
    vg = tmp_path / "vg"
    for index, colour in ((1, "red"), (2, "blue")):
        write_image(vg / f"{index}.jpg", colour)
    (tmp_path / "desc_data.json").write_text(json.dumps({
        "1": {"chosen": ["A red square on white."], "rejected": ["A blue circle on grass."]},
        "2": {"chosen": ["A blue square on white."], "rejected": ["A red dog."]}}))
    easyvqa = {"name": "easyvqa", "split": "train", "limit": 4}
    describe = {"name": "easyvqa-describe", "split": "train", "limit": 2}
    return {"name": "matrix", "model": {"name": family, **SMALL}, "stages": [
        {"id": "sft", "kind": "train", "method": {"name": "sft", "freeze_vision_tower": False}, "data": easyvqa,
         "train": TRAIN},
        {"id": "sft-lora", "kind": "train", "from": "sft", "method": {"name": "sft", **LORA}, "data": easyvqa,
         "train": TRAIN},
        {"id": "projector", "kind": "train", "method": {"name": "sft", "freeze_language_model": True},
         "data": easyvqa, "train": TRAIN},
        {"id": "dpo", "kind": "train", "from": "sft", "method": {"name": "dpo", "beta": 0.1},
         "data": {"name": "records-jsonl", "path": str(pairs), "kind": "preference"}, "train": TRAIN},
        {"id": "hadpo", "kind": "train", "from": "sft", "method": {"name": "hadpo", **LORA},
         "data": {"name": "hadpo", "desc_data": str(tmp_path / "desc_data.json"), "vg_images": str(vg)},
         "train": TRAIN},
        {"id": "candidates", "kind": "generate", "from": "sft", "data": describe, "num_samples": 2,
         "temperature": 1.0, "max_new_tokens": 6, "score": {"rule": "attributes", "rules": "description"}},
        {"id": "rejection-sampling", "kind": "train", "from": "sft", "method": {"name": "rejection-sampling"},
         "data": {"from": "candidates"}, "train": TRAIN},
        {"id": "steerlm", "kind": "train", "from": "sft", "method": {"name": "steerlm"},
         "data": {"from": "candidates"}, "train": TRAIN},
        {"id": "eval", "kind": "eval", "models": ["sft-lora", "projector", "dpo", "hadpo", "rejection-sampling"],
         "benchmarks": [{"name": "easyvqa", "split": "test", "limit": 4},
                        {"name": "easyvqa", "split": "test", "limit": 4, "answer_mode": "choice"}]},
    ]}


def run_matrix(family: str, tmp_path: Path) -> Path:
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins.registry import Registry

    registry = Registry(autoload=True)
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix_pipeline(family, tmp_path), sort_keys=False))
    PipelineRunner(load_pipeline(path, registry, []), registry, tmp_path / "runs").run()
    return tmp_path / "runs" / "matrix"


def check_matrix(run_dir: Path, family: str) -> None:
    from transformers import AutoTokenizer

    for stage in ("sft", "sft-lora", "projector", "dpo", "hadpo", "rejection-sampling", "steerlm"):
        meta = json.loads((run_dir / stage / "model" / "mllm_model.json").read_text())
        assert meta["family"] == family, stage
    assert (run_dir / "sft-lora" / "model" / "adapter_config.json").is_file()
    # projector-only: the language model's and the vision tower's weights are the init's
    from safetensors.torch import load_file

    init = load_file(str(run_dir / "init" / "model" / "model.safetensors"))
    projector = load_file(str(run_dir / "projector" / "model" / "model.safetensors"))
    changed = {k for k in init if not (init[k] == projector[k]).all()}
    assert changed and all(any(part in k for part in ("projector", "connector", "merger")) for k in changed), sorted(changed)[:4]
    candidates = (run_dir / "candidates" / "records.jsonl").read_text().splitlines()
    assert len(candidates) == 4
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"sft-lora", "projector", "dpo", "hadpo", "rejection-sampling"}
    assert all(set(m) == {"easyvqa", "easyvqa_2"} for m in metrics.values())
    # every saved folder applies its chat template in plain transformers (the tokenizer: a composed
    # family's transformers processor needs torchvision)
    for stage in ("dpo", "sft-lora"):
        tokenizer = AutoTokenizer.from_pretrained(run_dir / stage / "model")
        text = tokenizer.apply_chat_template([{"role": "user", "content": "<image>\nWhat?"}],
                                             add_generation_prompt=True, tokenize=False)
        assert "What?" in text, stage


def test_idefics3_runs_every_stage_kind_and_method(tmp_path):
    check_matrix(run_matrix("idefics3", tmp_path), "idefics3")


@pytest.mark.slow
@pytest.mark.families
def test_llava_next_runs_every_stage_kind_and_method(tmp_path):
    check_matrix(run_matrix("llava-next", tmp_path), "llava-next")


@pytest.mark.slow
@pytest.mark.families
def test_llava_onevision_runs_every_stage_kind_and_method(tmp_path):
    check_matrix(run_matrix("llava-onevision", tmp_path), "llava-onevision")


@pytest.mark.slow
@pytest.mark.families
def test_smolvlm_runs_every_stage_kind_and_method(tmp_path):
    check_matrix(run_matrix("smolvlm", tmp_path), "smolvlm")


@pytest.mark.slow
@pytest.mark.families
def test_qwen2_vl_runs_every_stage_kind_and_method(tmp_path):
    check_matrix(run_matrix("qwen2-vl", tmp_path), "qwen2-vl")


@pytest.mark.slow
@pytest.mark.families
def test_qwen2_5_vl_runs_every_stage_kind_and_method(tmp_path):
    check_matrix(run_matrix("qwen2.5-vl", tmp_path), "qwen2.5-vl")
