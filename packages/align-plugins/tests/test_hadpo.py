"""HA-DPO: its released file shapes (desc_data.json, pope_data.json, Visual Genome) load,
bad rows follow the policy, the hadpo method (the dpo loss, resampled pairs) trains a step,
and pipelines/studies/hadpo.yaml validates once its paths exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mllm.data.badrows import BadRowError, DataReport
from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig
from mllm.training.trainer import TrainSettings, train_method
from mllm_align.dpo import DPO
from mllm_align.hadpo import DESC_PROMPTS, HADPO, HADPOConfig, HADPOData, HADPODataConfig

ROOT = Path(__file__).resolve().parents[3]
TINY = dict(init="tiny", tokenizer_corpus="easyvqa", image_size=16, patch_size=8, vision_hidden_size=16, vision_layers=1,
            vision_intermediate_size=32, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
            heads=2, vocab_size=300)


@pytest.fixture
def hadpo_files(tmp_path):
    """Fixtures in HA-DPO's exact shapes, Visual Genome laid out with image_data.json."""
    from PIL import Image

    vg = tmp_path / "VG"
    index = []
    for image_id, folder in ((1, "VG_100K"), (2, "VG_100K"), (3, "VG_100K_2")):
        (vg / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 12), (40 * image_id, 90, 20)).save(vg / folder / f"{image_id}.jpg")
        index.append({"image_id": image_id, "url": f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg",
                      "width": 20, "height": 12})
    (vg / "image_data.json").write_text(json.dumps(index))
    desc = {
        "1": {"chosen": ["A red bus on a street.", "A bus parked by the road."],
              "rejected": ["A red bus with three dogs on its roof.", "A train next to a bus."]},
        "3": {"chosen": ["Two people on a beach."], "rejected": ["Two people and a horse on a beach."]},
    }
    pope = [
        {"image_id": 2, "question": "Is there a dog in the image?", "answer": "no", "chosen": "No, there is no dog.",
         "reject": "Yes, there is a dog.", "correct": False},
        {"image_id": 1, "question": "Is there a bus in the image?", "answer": "yes", "chosen": "Yes.",
         "reject": "No.", "correct": True},
        {"image_id": 3, "question": "Is there a horse in the image?", "answer": "no", "chosen": "No.",
         "reject": "Yes, a horse.", "correct": False},
    ]
    (tmp_path / "desc_data.json").write_text(json.dumps(desc))
    (tmp_path / "pope_data.json").write_text(json.dumps(pope))
    return tmp_path


def load(files: Path, **options):
    config = HADPODataConfig(desc_data=str(files / "desc_data.json"), pope_data=str(files / "pope_data.json"),
                             vg_images=str(files / "VG"), **options)
    report = DataReport(source="hadpo", on_bad_row=config.on_bad_row, max_bad_fraction=config.max_bad_fraction)
    records = list(HADPOData(config).records(report))
    report.finish()
    return records, report


def test_files_load_in_hadpo_order(hadpo_files):
    records, report = load(hadpo_files)
    # pope rows (correct ones left out), then each description pair twice (HA-DPO's pope + desc * 2)
    assert [r.id for r in records] == ["pope-0", "pope-2", "desc-1", "desc-3", "desc-1#1", "desc-3#1"]
    pope = records[0]
    assert pope.prompt[0].content == "<image>\nIs there a dog in the image?"
    assert (pope.chosen, pope.rejected) == ("No, there is no dog.", "Yes, there is a dog.")
    assert pope.images[0].endswith("VG_100K/2.jpg")
    desc = records[2]
    assert desc.prompt[0].content.removeprefix("<image>\n") in DESC_PROMPTS
    assert desc.chosen in desc.metadata["chosen_options"] and desc.rejected in desc.metadata["rejected_options"]
    assert records[3].images[0].endswith("VG_100K_2/3.jpg")
    assert report.kept == 4 and not report.skipped
    # seeded: the same seed draws the same pairs
    again, _ = load(hadpo_files)
    assert [(r.chosen, r.rejected, r.prompt) for r in again] == [(r.chosen, r.rejected, r.prompt) for r in records]


def test_bad_rows_follow_the_policy(hadpo_files):
    pope = json.loads((hadpo_files / "pope_data.json").read_text())
    pope.append({"image_id": 99, "question": "Is there a cat?", "answer": "no", "chosen": "No.", "reject": "Yes.",
                 "correct": False})  # no such image
    pope.append({"image_id": 2, "question": "Q?", "answer": "no", "chosen": "Same.", "reject": "Same.",
                 "correct": False})
    (hadpo_files / "pope_data.json").write_text(json.dumps(pope))
    with pytest.raises(BadRowError, match="row 3"):
        load(hadpo_files)
    records, report = load(hadpo_files, on_bad_row="skip", max_bad_fraction=0.5)
    assert len(report.skipped) == 2
    assert "not found" in report.skipped[0].reason and "same" in report.skipped[1].reason


def test_hadpo_is_dpo_with_the_recipe_and_trains_a_step(hadpo_files, tmp_path):
    config = HADPOConfig()
    assert (config.lora, config.lora_r, config.lora_alpha, config.beta) == (True, 128, 256, 0.1)
    assert issubclass(HADPO, DPO) and HADPO.loss is DPO.loss  # the dpo loss itself, not a copy
    records, _ = load(hadpo_files)
    method = HADPO(HADPOConfig(lora_r=4, lora_alpha=8))
    adapter = LlavaAdapter.from_config(LlavaModelConfig(**TINY), seed=0)
    model = method.setup(adapter)
    # resampling per epoch: epoch 0 is the file's draw, later epochs draw again (seeded)
    desc = records[2]
    assert method.resolve(desc, 0) is desc
    later = [method.resolve(desc, epoch) for epoch in range(1, 6)]
    assert all(p.chosen in desc.metadata["chosen_options"] for p in later)
    assert len({(p.chosen, p.rejected, p.prompt) for p in later}) > 1

    # what the train stage hands prepare (a TrainContext): the records and the train settings
    context = type("Ctx", (), {"records": records, "stage_dir": tmp_path, "fingerprint": "fp", "logger": None,
                               "train": TrainSettings(epochs=2)})()
    method.prepare(context)
    assert method.epochs == 2
    assert method.stats["reference_computed"] >= len(records)  # both epochs' draws
    settings = TrainSettings(max_steps=2, lr=1e-3, batch_size=3, warmup_ratio=0.0, logging_steps=1,
                             save_steps=1000, group_by_length=False)
    trainer, metrics = train_method(method, model, records, settings, tmp_path, callbacks=method.callbacks())
    assert "rewards/accuracies" in metrics and method.stats["reference_forward_passes"] == 0


def test_pipeline_validates_when_its_paths_exist(hadpo_files):
    model_dir = hadpo_files / "llava"
    LlavaAdapter.from_config(LlavaModelConfig(**TINY), seed=0).save(model_dir)
    pope = hadpo_files / "pope"
    (pope / "coco").mkdir(parents=True)
    (pope / "llava_pope_test.jsonl").write_text(json.dumps({"question_id": 1, "image": "a.jpg",
                                                            "text": "Is there a dog?", "category": "random"}) + "\n")
    for split in ("random", "popular", "adversarial"):  # validate reads the labels: one for the one question
        label = {"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "no"}
        (pope / "coco" / f"coco_pope_{split}.json").write_text(json.dumps(label) + "\n" if split == "random" else "")
    (hadpo_files / "coco").mkdir()
    from PIL import Image  # validate spot-checks that the first questions' images exist

    Image.new("RGB", (8, 8)).save(hadpo_files / "coco" / "a.jpg")
    overrides = [f"model.path={model_dir}", f"stages.hadpo.data.desc_data={hadpo_files / 'desc_data.json'}",
                 f"stages.hadpo.data.pope_data={hadpo_files / 'pope_data.json'}",
                 f"stages.hadpo.data.vg_images={hadpo_files / 'VG'}",
                 f"stages.eval.benchmarks=[{{name: pope, questions: {pope / 'llava_pope_test.jsonl'}, "
                 f"labels: {pope / 'coco'}, image_folder: {hadpo_files / 'coco'}}}]"]
    pipeline = ROOT / "pipelines" / "studies" / "hadpo.yaml"
    assert pipeline.read_text().startswith("# mllm run pipelines/studies/hadpo.yaml")
    result = subprocess.run([sys.executable, "-m", "mllm", "validate", str(pipeline), *overrides],
                            capture_output=True, text=True, cwd=hadpo_files)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run([sys.executable, "-m", "mllm", "validate", str(pipeline), *[o for o in overrides if "pope_data" not in o]],
                         capture_output=True, text=True, cwd=hadpo_files)
    assert bad.returncode != 0 and "pope_data.json" in bad.stdout + bad.stderr
