"""The ready pipelines of the seed studies (pipelines/studies/scienceqa_sft.yaml, pipelines/llava_two_stage.yaml,
pipelines/studies/personalization_lora.yaml): each validates once its data paths exist, and each runs end to end on
small stand-in data built here in the upstream file shapes (ScienceQA's problems.json +
pid_splits.json with generated PNGs, LLaVA caption and instruction JSON, POPE question and label
files, an image-qa-folder of new "facts" on easy-VQA images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mllm.pipeline.config import load_pipeline
from mllm.pipeline.runner import PipelineRunner
from mllm.plugins.registry import Registry
from mllm.testing.tiny import save_tiny_causal_lm

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
STUDIES = PIPELINES / "studies"  # the seed studies' pipelines (seeds: and findings:)
READY = ["scienceqa_sft", "llava_two_stage", "personalization_lora"]
#: the end-to-end runs here check each study's stages once: no repetition per seed (test_study_smoke runs one seed)
NO_SEEDS = ["seeds=null"]


def pipeline_path(name: str) -> Path:
    return STUDIES / f"{name}.yaml" if (STUDIES / f"{name}.yaml").is_file() else PIPELINES / f"{name}.yaml"

# a smaller tiny model: the same stages in seconds
TINY = ("{name: llava, init: tiny, tokenizer_corpus: easyvqa, image_size: 16, patch_size: 8, vision_hidden_size: 16, vision_layers: 1, "
        "vision_intermediate_size: 32, text_hidden_size: 32, text_layers: 1, text_intermediate_size: 64, heads: 2, "
        "vocab_size: 300}")
TINY_KEYS = ["model.image_size=16", "model.patch_size=8", "model.vision_hidden_size=16", "model.vision_layers=1",
             "model.vision_intermediate_size=32", "model.text_hidden_size=32", "model.text_layers=1",
             "model.text_intermediate_size=64", "model.heads=2", "model.vocab_size=300"]
FEW_STEPS = "{max_steps: 2, batch_size: 4, logging_steps: 1, save_steps: 100, warmup_ratio: 0.0}"


@pytest.fixture(scope="module")
def registry():
    return Registry(autoload=True)


# -- stand-in data ------------------------------------------------------------------------


def easyvqa_images(split: str) -> tuple[Path, dict[int, tuple[str, str]]]:
    """easy-VQA's image folder and (colour, shape) of each image, read from its own questions."""
    from mllm_data.easyvqa import split_files

    questions, images = split_files(split)
    shapes, colours = {"circle", "rectangle", "triangle"}, {}
    shape_of: dict[int, str] = {}
    for question, answer, image in json.loads(questions.read_text()):
        if question.startswith("what") and answer in shapes:
            shape_of[int(image)] = answer
        elif question.startswith("what") and "color" in question:
            colours[int(image)] = answer
    return images, {i: (colours[i], shape_of[i]) for i in sorted(set(colours) & set(shape_of))}


def write_png(path: Path, colour: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), colour).save(path)


def make_scienceqa(root: Path) -> Path:
    """ScienceQA's data/scienceqa folder: problems.json, pid_splits.json, images/<split>/<pid>/image.png."""
    problems, splits = {}, {s: [] for s in ("train", "val", "test", "trainval", "minitrain", "minival", "minitest")}
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for n in range(12):
        split = "train" if n < 8 else "test"
        pid = str(100 + n)
        name = list(colours)[n % 3]
        with_image = n % 2 == 0
        problems[pid] = {
            "question": "Which colour fills the picture?" if with_image else "Which word is a colour?",
            "choices": ["red", "blue", "green"] if with_image else ["table", name],
            "answer": n % 3 if with_image else 1,
            "hint": "Look at the picture." if with_image else "",
            "image": "image.png" if with_image else None,
            "task": "closed choice", "grade": "grade3", "subject": "natural science", "topic": "colours",
            "category": "Colours", "skill": "identify colours",
            "lecture": "Colours are properties of light.", "solution": f"The picture is {name}." if with_image else
            f"{name} is a colour.", "split": split,
        }
        splits[split].append(pid)
        if with_image:
            write_png(root / "images" / split / pid / "image.png", colours[name])
    splits["trainval"] = splits["train"] + splits["val"]
    splits["minitrain"], splits["minitest"] = splits["train"][:4], splits["test"][:2]
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps(splits))
    return root


def make_llava_json(folder: Path) -> dict[str, Path]:
    """LLaVA-Pretrain style captions and LLaVA instruction data on easy-VQA images, POPE files."""
    images, labels = easyvqa_images("train")
    ids = list(labels)[:16]
    captions = [{"id": f"cap{i}", "image": f"{i}.png", "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": f"a {labels[i][0]} {labels[i][1]}"}]} for i in ids]
    instruct = [{"id": f"ins{i}", "image": f"{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat shape is in the image?"}, {"from": "gpt", "value": labels[i][1]},
        {"from": "human", "value": "What color is it?"}, {"from": "gpt", "value": labels[i][0]}]} for i in ids]
    instruct.append({"id": "text-only", "conversations": [  # LLaVA's mix has text-only rows
        {"from": "human", "value": "Name a shape."}, {"from": "gpt", "value": "circle"}]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "captions.json").write_text(json.dumps(captions))
    (folder / "instruct.jsonl").write_text("\n".join(json.dumps(r) for r in instruct) + "\n")
    # POPE in LLaVA's layout: a question file with categories, label files per split
    test_images, test_labels = easyvqa_images("test")
    questions, label_rows = [], []
    for n, i in enumerate(list(test_labels)[:6]):
        shape = ["circle", "rectangle", "triangle"][n % 3]
        text = f"Is there a {shape} in the image?"
        questions.append({"question_id": n, "image": f"{i}.png", "text": text, "category": "random"})
        label_rows.append({"question_id": n, "image": f"{i}.png", "text": text,
                           "label": "yes" if test_labels[i][1] == shape else "no"})
    (folder / "pope" / "coco").mkdir(parents=True)
    (folder / "pope" / "llava_pope_test.jsonl").write_text("\n".join(json.dumps(r) for r in questions) + "\n")
    (folder / "pope" / "coco" / "coco_pope_random.json").write_text("\n".join(json.dumps(r) for r in label_rows) + "\n")
    return {"captions": folder / "captions.json", "instruct": folder / "instruct.jsonl", "images": images,
            "pope_questions": folder / "pope" / "llava_pope_test.jsonl", "pope_labels": folder / "pope" / "coco",
            "pope_images": test_images}


FACTS = {("red", "circle"): "zorp", ("blue", "rectangle"): "blick", ("green", "triangle"): "frob"}
FACT_QUESTION = "What is this shape called?"


def make_facts(folder: Path, per_fact: int = 3, others: int = 3) -> dict[str, Path]:
    """An image-qa-folder of new facts on easy-VQA images: red circles are called "zorp", ...;
    other shapes keep their plain names. Train on train images, test on held-out test images."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        images, labels = easyvqa_images(split)
        rows, counts = [], {}
        for image, combo in labels.items():
            key = combo if combo in FACTS else "other"
            wanted = per_fact if key != "other" else others
            if counts.get(key, 0) >= wanted:
                continue
            counts[key] = counts.get(key, 0) + 1
            rows.append({"question_id": f"{split}-{image}", "image": str(images / f"{image}.png"), "text": FACT_QUESTION,
                         "answer": FACTS.get(combo, combo[1]), "category": "fact" if key != "other" else "other"})
        out[split] = folder / f"{split}.jsonl"
        out[split].write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return out


def save_tiny_lm(folder: Path) -> Path:
    """A tiny randomly initialised causal LM (byte-level BPE): the local realign judge."""
    return save_tiny_causal_lm(folder, corpus="Explain step by step. The answer is A.")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    base = tmp_path_factory.mktemp("standin")
    sqa = make_scienceqa(base / "scienceqa")
    llava = make_llava_json(base / "llava")
    facts = make_facts(base / "facts")
    return {"scienceqa": sqa, "facts": facts, **llava}


# -- overrides: data paths (what a user sets), then what makes a run tiny -----------------


def scienceqa_paths(d) -> list[str]:
    root = d["scienceqa"]
    return [f"stages.{s}.data.root={root}" for s in ("short", "realigned", "mini", "sft-full")] + [
        f"stages.eval.benchmarks=[{{name: scienceqa, root: {root}, split: test, prompt_format: QCM-LEA, "
        "single_pred_prompt: false, max_new_tokens: 8}]"]


def two_stage_paths(d) -> list[str]:
    return [f"stages.pretrain.data.path={d['captions']}", f"stages.pretrain.data.image_folder={d['images']}",
            f"stages.instruct.data.path={d['instruct']}", f"stages.instruct.data.image_folder={d['images']}",
            f"stages.eval.benchmarks=[{{name: pope, questions: {d['pope_questions']}, labels: {d['pope_labels']}, "
            f"image_folder: {d['pope_images']}, splits: [random]}}]"]


def personalization_paths(d, easyvqa_limit: int = 1000) -> list[str]:
    return [f"stages.lora.data.path={d['facts']['train']}", f"stages.full.data.path={d['facts']['train']}",
            f"stages.eval.benchmarks=[{{name: image-qa, path: {d['facts']['test']}}}, "
            f"{{name: easyvqa, split: test, limit: {easyvqa_limit}, answer_mode: choice}}]"]


def paths(name: str, d) -> list[str]:
    """The data-path overrides of pipeline ``name`` (the model too, where the pipeline names a checkpoint)."""
    return {"scienceqa_sft": lambda: scienceqa_paths(d) + [f"model={TINY}"],
            "llava_two_stage": lambda: two_stage_paths(d),
            "personalization_lora": lambda: personalization_paths(d)}[name]()


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", READY)
def test_ready_pipeline_starts_with_its_command(name):
    path = pipeline_path(name)
    assert path.read_text().startswith(f"# mllm run {path.relative_to(ROOT)}")


def test_every_pipeline_validates_once_its_data_exists(standin):
    """`mllm validate` on every pipeline in pipelines/: the ready ones with their data keys pointed
    at the stand-in files; the others (quickstart, mllm_dpo: package data only) as they are."""
    for path in sorted([*PIPELINES.glob("*.yaml"), *STUDIES.glob("*.yaml")]):
        overrides = paths(path.stem, standin) if path.stem in READY else []
        if path.stem == "hadpo":
            continue  # its data (HA-DPO, Visual Genome, a 7B model) has no stand-in here; checked in tests of hadpo
        # a judge's API key is part of its setup, which validate checks (never sent: validate calls no judge)
        env = {**os.environ, "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY") or "placeholder"}
        result = subprocess.run([str(Path(sys.executable).parent / "mllm"), "validate", str(path), *overrides],
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


def test_validate_names_a_missing_data_path(standin, tmp_path):
    overrides = personalization_paths(standin) + [f"stages.lora.data.path={tmp_path / 'absent.jsonl'}"]
    result = subprocess.run([str(Path(sys.executable).parent / "mllm"), "validate",
                             str(pipeline_path("personalization_lora")), *overrides],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "absent.jsonl" in result.stdout + result.stderr


def run(registry, tmp_path, name, overrides):
    pipeline = load_pipeline(pipeline_path(name), registry, NO_SEEDS + list(overrides))
    PipelineRunner(pipeline, registry, runs_dir=tmp_path).run()
    return tmp_path / name


def test_scienceqa_sft_end_to_end(registry, standin, tmp_path):
    judge = save_tiny_lm(tmp_path / "judge")
    small = scienceqa_paths(standin) + [f"model={TINY}"] + [
        f"stages.{s}.train={FEW_STEPS}" for s in ("sft-full", "sft-short", "sft-realigned", "sft-mini", "sft-mini-short",
                                                  "sft-mini-realigned")] + [
        "stages.mini.ops=[{op: subsample, n: 4, seed: 0}]"] + [
        f"stages.{s}.ops=[{{op: realign, judge: {{name: hf-local, path: {judge}, max_new_tokens: 6}}, "
        "instruction: Explain step by step.}]" for s in ("realigned", "mini-realigned")]
    # the study as written, at one seed: the transforms (their own seed) run once, the rest once per seed
    run_dir = run(registry, tmp_path, "scienceqa_sft", small + ["seeds=[0]"])
    report = json.loads((run_dir / "report" / "report.json").read_text())
    arms = ["sft-full", "sft-short", "sft-realigned", "sft-mini", "sft-mini-short", "sft-mini-realigned"]
    models = ["init"] + [f"{arm}-s0" for arm in arms]
    assert set(report["models"]) == set(models)
    for model in models:
        assert {"accuracy", "img_accuracy", "acc_NAT"} <= set(report["models"][model]["scienceqa"])
        assert report["models"][model]["scienceqa"]["count"] == 4
    assert {f"{arm}-s0" for arm in arms} <= set(report["training"])
    assert all(report["aggregate"]["models"][arm]["scienceqa"]["accuracy"]["n"] == 1 for arm in arms)
    assert [f["verdict"] for f in report["findings"]] == ["too few seeds"] * 5  # one seed: no spread to judge by
    mini_short = [json.loads(line) for line in (run_dir / "mini-short" / "records.jsonl").read_text().splitlines()]
    assert len(mini_short) == 4 and all(r["turns"][-1]["content"].startswith("The answer is ") for r in mini_short)
    short = [json.loads(line) for line in (run_dir / "short" / "records.jsonl").read_text().splitlines()]
    assert len(short) == 8 and all(r["turns"][-1]["content"].startswith("The answer is ") for r in short)
    mini = (run_dir / "mini" / "records.jsonl").read_text().splitlines()
    assert len(mini) == 4
    realigned = [json.loads(line) for line in (run_dir / "realigned" / "records.jsonl").read_text().splitlines()]
    assert all(r["turns"][-1]["content"].rstrip().endswith(".") for r in realigned)
    assert (run_dir / "realigned" / "realign_cache.jsonl").is_file()


def test_llava_two_stage_end_to_end(registry, standin, tmp_path):
    small = two_stage_paths(standin) + TINY_KEYS + [f"stages.{s}.train={FEW_STEPS}" for s in ("pretrain", "instruct")]
    run_dir = run(registry, tmp_path, "llava_two_stage", small)
    # stage 1 trained (and saved) the plain template and only the projector; stage 2 switched to llava-1.5
    meta = {s: json.loads((run_dir / s / "model" / "mllm_model.json").read_text()) for s in ("pretrain", "instruct")}
    assert meta["pretrain"]["template"] == "plain" and meta["instruct"]["template"] == "llava-1.5"
    from safetensors.torch import load_file

    def weights(stage):
        return load_file(str(next((run_dir / stage / "model").glob("*.safetensors"))))

    init, pre, ins = weights("init"), weights("pretrain"), weights("instruct")
    changed = lambda a, b: {k for k in a if not (a[k] == b[k]).all()}  # noqa: E731
    stage1 = changed(init, pre)
    assert stage1 and all("projector" in k for k in stage1)
    stage2 = changed(pre, ins)
    assert any("language_model" in k for k in stage2) and not any("vision_tower" in k for k in stage2)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert "f1" in " ".join(report["models"]["instruct"]["pope"])
    answers = (run_dir / "eval" / "instruct" / "pope" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 6 and "USER:" not in json.loads(answers[0])["prompt"]  # prompt is the question, engine adds the template


def test_personalization_lora_vs_full_end_to_end(registry, standin, tmp_path):
    """New facts taught by LoRA and by full fine-tuning; accuracy on the facts and on easy-VQA
    test, side by side for both (and for the model before the facts). The study's smoke test too:
    one seed, and a sweep of the full fine-tuning lr through the expansion, judged by findings."""
    small = personalization_paths(standin, easyvqa_limit=16) + TINY_KEYS + [
        "stages.base.data.limit=64", "stages.base.train={max_steps: 4, batch_size: 16, logging_steps: 1, save_steps: 100}",
        "stages.lora.train={max_steps: 20, batch_size: 8, lr: 3.0e-3, lr_scheduler: constant, warmup_ratio: 0.0, logging_steps: 1, save_steps: 100}",
        "stages.full.train={max_steps: 20, batch_size: 8, lr: 3.0e-3, lr_scheduler: constant, warmup_ratio: 0.0, logging_steps: 1, save_steps: 100}",
    ]
    small += ["seeds=[0]", "sweep={lr3: {stages.full.train.lr: 3.0e-3}, lr1: {stages.full.train.lr: 1.0e-3}}",
              "findings=[{claim: LoRA keeps easy-VQA, metric: easyvqa.accuracy, arms: [lora, full-lr3], direction: higher}, "
              "{claim: facts, metric: image-qa.accuracy_fact, arms: [lora, base], direction: higher}]"]
    run_dir = run(registry, tmp_path, "personalization_lora", small)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert sorted(report["arms"]) == ["base", "full-lr1", "full-lr3", "lora"]
    assert {report["arms"][arm][0] for arm in report["arms"]} == {"base-s0", "lora-s0", "full-lr1-s0", "full-lr3-s0"}
    import yaml

    assert yaml.safe_load((run_dir / "full-lr1-s0" / "resolved_config.yaml").read_text())["train"]["lr"] == 1.0e-3
    assert [f["verdict"] for f in report["findings"]] == ["too few seeds"] * 2
    assert report["findings"][0]["arms"]["lora"]["n"] == 1
    for model in ("base-s0", "lora-s0", "full-lr3-s0", "full-lr1-s0"):
        facts, easyvqa = report["models"][model]["image-qa"], report["models"][model]["easyvqa"]
        assert 0.0 <= facts["accuracy"] <= 1.0 and facts["count"] == 12
        assert {"accuracy_fact", "accuracy_other"} <= set(facts)
        assert 0.0 <= easyvqa["accuracy"] <= 1.0
    assert set(report["training"]) >= {"base-s0", "lora-s0", "full-lr3-s0", "full-lr1-s0"}
    # LoRA saved an adapter on top of base; full fine-tuning a whole model
    assert (run_dir / "lora-s0" / "model" / "adapter_config.json").is_file()
    assert not (run_dir / "full-lr3-s0" / "model" / "adapter_config.json").exists()
    md = (run_dir / "report" / "report.md").read_text()
    assert "image-qa" in md and "easyvqa" in md and "## Findings" in md and "## Over seeds" in md


def test_hallucination_cpu_smoke(registry, tmp_path):
    """pipelines/studies/hallucination_cpu.yaml at one seed and a few steps: the yes-biased data made
    once (its own seed), SFT on it, DPO on the SFT model's own mistakes, POPE-style metrics judged;
    the HA-DPO arm: description data made once, the describing model, HA-DPO on its own wrong
    descriptions and answers, both scored POPE-style and by hallucination_rate."""
    path = pipeline_path("hallucination_cpu")
    assert path.read_text().startswith("# mllm run pipelines/studies/hallucination_cpu.yaml")
    small = TINY_KEYS + ["seeds=[0]", "stages.align.data.limit=16", "stages.base.data.limit=16",
                         "stages.biased.data.limit=64", "stages.mistakes.data.limit=8",
                         "stages.describe-data.data.limit=8", "stages.describe-mistakes.data.limit=6",
                         "stages.describe-mistakes.max_new_tokens=8"] + [
        f"stages.{s}.train={FEW_STEPS}" for s in ("align", "base", "sft", "dpo", "describe", "hadpo")] + [
        "stages.eval.benchmarks=[{name: easyvqa, split: test, limit: 16}]",
        "stages.eval-hadpo.benchmarks=[{name: easyvqa, split: test, limit: 16}, "
        "{name: easyvqa-describe, split: test, limit: 4, max_new_tokens: 8}]"]
    pipeline = load_pipeline(path, registry, small)
    PipelineRunner(pipeline, registry, runs_dir=tmp_path).run()
    run_dir = tmp_path / "hallucination_cpu"
    biased = [json.loads(line) for line in (run_dir / "biased" / "records.jsonl").read_text().splitlines()]
    answers = [r["turns"][-1]["content"] for r in biased]
    assert 0 < len(biased) < 64 and answers.count("no") < answers.count("yes")
    assert not (run_dir / "describe-data-s0").exists()  # made once, shared by every seed
    described = [json.loads(line) for line in (run_dir / "describe-data" / "records.jsonl").read_text().splitlines()]
    assert sum(r["turns"][-1]["content"].startswith("The image shows a ") for r in described) == 8
    generated = [json.loads(line) for line in
                 (run_dir / "describe-mistakes-s0" / "records.jsonl").read_text().splitlines()]
    assert sum(r["id"].startswith("easyvqa-describe-") for r in generated) == 6 and len(generated) > 6
    assert all(r["metadata"]["correct"] in (True, False) for r in generated)  # rated by the description rules
    import yaml

    hadpo = yaml.safe_load((run_dir / "hadpo-s0" / "resolved_config.yaml").read_text())
    assert hadpo["method"]["name"] == "hadpo" and hadpo["data"]["from"] == "describe-mistakes-s0"
    report = json.loads((run_dir / "report" / "report.json").read_text())
    for model in ("base", "sft-s0", "dpo-s0", "describe-s0", "hadpo-s0"):
        assert {"pope_yes_ratio", "pope_f1"} <= set(report["models"][model]["easyvqa"])
    for model in ("describe-s0", "hadpo-s0"):
        assert 0.0 <= report["models"][model]["easyvqa-describe"]["hallucination_rate"] <= 1.0
    assert [(f["metric"], f["verdict"]) for f in report["findings"]] == [
        ("easyvqa.pope_yes_ratio", "too few seeds"), ("easyvqa.pope_f1", "too few seeds"),
        ("easyvqa.yesno_accuracy", "too few seeds"), ("easyvqa.pope_yes_ratio", "too few seeds"),
        ("easyvqa-describe.hallucination_rate", "too few seeds"), ("easyvqa.pope_yes_ratio", "too few seeds"),
        ("easyvqa.pope_f1", "too few seeds"), ("easyvqa.pope_yes_ratio", "too few seeds")]


def test_scienceqa_cpu_smoke(registry, tmp_path):
    """pipelines/studies/scienceqa_cpu.yaml at one seed and a few steps: the shortened, mini and
    realigned sets made once (their own seed), the mini set's questions one subset of the full
    set's in all three answer styles, six SFT arms from align, scored on parsed explained answers."""
    path = pipeline_path("scienceqa_cpu")
    assert path.read_text().startswith("# mllm run pipelines/studies/scienceqa_cpu.yaml")
    arms = ["sft-full", "sft-short", "sft-realigned", "sft-mini", "sft-mini-short", "sft-mini-realigned"]
    small = TINY_KEYS + ["seeds=[0]", "stages.align.data.limit=16"] + [
        f"stages.{s}.data.limit=24" for s in ("short", "mini", "mini-realigned", "sft-full", "sft-realigned")] + [
        f"stages.{s}.ops=[{{op: subsample, n: 8, seed: 0}}]" for s in ("mini", "mini-realigned")] + [
        f"stages.{s}.train={FEW_STEPS}" for s in ["align", *arms]] + [
        "stages.eval.benchmarks=[{name: easyvqa, split: test, limit: 8, answer_style: explained, max_new_tokens: 12}]"]
    pipeline = load_pipeline(path, registry, small)
    PipelineRunner(pipeline, registry, runs_dir=tmp_path).run()
    run_dir = tmp_path / "scienceqa_cpu"

    def rows(stage: str) -> list[dict]:
        return [json.loads(line) for line in (run_dir / stage / "records.jsonl").read_text().splitlines()]

    full, mini, mini_short, mini_realigned = rows("short"), rows("mini"), rows("mini-short"), rows("mini-realigned")
    assert len(full) == 24 and len(mini) == 8
    assert [r["id"] for r in mini] == [r["id"] for r in mini_short] == [r["id"] for r in mini_realigned]
    assert {r["id"] for r in mini} < {r["id"] for r in full}
    assert all(r["turns"][-1]["content"] == f"The answer is {r['metadata']['answer']}." for r in full + mini_short)
    assert all(r["turns"][-1]["content"].startswith("Lecture: ") for r in mini)
    assert not any("Lecture" in r["turns"][-1]["content"] for r in mini_realigned)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    for arm in arms:
        metrics = report["models"][f"{arm}-s0"]["easyvqa"]
        assert 0.0 <= metrics["accuracy"] <= metrics["parsed_rate"] <= 1.0
    assert [(f["metric"], f["verdict"]) for f in report["findings"]] == [("easyvqa.accuracy", "too few seeds")] * 5


def test_personalization_cpu_smoke(registry, tmp_path):
    """pipelines/studies/personalization_cpu.yaml at one seed and a few steps: align and base trained once
    (their own seed), the named individuals taught by LoRA and by full fine-tuning, both benchmarks judged."""
    path = pipeline_path("personalization_cpu")
    assert path.read_text().startswith("# mllm run pipelines/studies/personalization_cpu.yaml")
    small = TINY_KEYS + ["seeds=[0]", "stages.align.data.limit=16", "stages.base.data.limit=16",
                         "stages.lora.data.limit=16", "stages.full.data.limit=16"] + [
        f"stages.{s}.train={FEW_STEPS}" for s in ("align", "base", "lora", "full")] + [
        "stages.eval.benchmarks=[{name: easyvqa-named, split: test, limit: 8, answer_mode: choice}, "
        "{name: easyvqa, split: test, limit: 8, answer_mode: choice}]"]
    pipeline = load_pipeline(path, registry, small)
    PipelineRunner(pipeline, registry, runs_dir=tmp_path).run()
    run_dir = tmp_path / "personalization_cpu"
    import yaml

    assert not (run_dir / "base-s0").exists() and not (run_dir / "align-s0").exists()  # trained once, shared
    for stage in ("lora-s0", "full-s0"):
        resolved = yaml.safe_load((run_dir / stage / "resolved_config.yaml").read_text())
        assert resolved["data"]["name"] == "easyvqa-named"
    report = json.loads((run_dir / "report" / "report.json").read_text())
    for model in ("base", "lora-s0", "full-s0"):
        assert report["models"][model]["easyvqa-named"]["count"] == 8
        assert 0.0 <= report["models"][model]["easyvqa"]["accuracy"] <= 1.0
    assert (run_dir / "lora-s0" / "model" / "adapter_config.json").is_file()
    assert not (run_dir / "full-s0" / "model" / "adapter_config.json").exists()
    assert [(f["metric"], f["verdict"]) for f in report["findings"]] == [
        ("easyvqa-named.accuracy", "too few seeds"), ("easyvqa-named.accuracy", "too few seeds"),
        ("easyvqa.accuracy", "too few seeds")]
