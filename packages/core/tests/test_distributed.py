"""Scale-out: ``mllm run --nproc-per-node N`` (torchrun), DeepSpeed ZeRO presets, precision,
attention choice and ``environment.json``.

The slow tests run for real on this CPU machine: two processes, the gloo backend,
DeepSpeed's CPU accelerator, a tiny LLaVA. Each compares a two-process run with one
process at the same global batch (per-process batch 4 x 2 processes = batch 8): the same
loss curve within a small tolerance, the saved model loads in a single process, its
weights match the single-process model's, and a two-process (sharded) evaluation gives
the same answers and metrics as a single-process one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from mllm.pipeline.launch import ENTRY_MODULE, LaunchSettings, torchrun_argv
from mllm.training.settings import DEEPSPEED_PRESETS, TrainSettings, deepspeed_config_path

TINY_MODEL = dict(name="llava", init="tiny", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
                  vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
                  heads=2, vocab_size=300)


# -- fast: settings, presets, the torchrun command ----------------------------------------


def test_torchrun_command_is_an_argument_list():
    settings = LaunchSettings(nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29501)
    argv = torchrun_argv(settings, ["--launch-file", "/runs/x/sft/.launch.node1.json"])
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    pairs = dict(zip(argv[3:13:2], argv[4:13:2]))
    assert pairs == {"--nproc-per-node": "8", "--nnodes": "2", "--node-rank": "1", "--master-addr": "10.0.0.1",
                     "--master-port": "29501"}
    assert argv[13:] == ["-m", ENTRY_MODULE, "--launch-file", "/runs/x/sft/.launch.node1.json"]
    assert settings.world_size == 16 and settings.distributed
    one_node = torchrun_argv(LaunchSettings(nproc_per_node=2), [])
    assert one_node[one_node.index("--master-addr") + 1] == "127.0.0.1"
    assert int(one_node[one_node.index("--master-port") + 1]) > 0  # a free port was picked


def test_launch_settings_are_checked():
    with pytest.raises(ValueError, match="--master-addr"):
        LaunchSettings(nproc_per_node=8, nnodes=2)
    with pytest.raises(ValueError, match="--node-rank 2"):
        LaunchSettings(nnodes=2, node_rank=2, master_addr="a", master_port=1)
    assert not LaunchSettings().distributed


def test_deepspeed_presets_use_the_trainers_auto_values():
    for name in DEEPSPEED_PRESETS:
        config = json.loads(deepspeed_config_path(name).read_text())
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                    "gradient_clipping"):
            assert config[key] == "auto", (name, key)
        assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
        assert "optimizer" not in config  # the Trainer's optimizer (and projector_lr param groups) is kept
    assert json.loads(deepspeed_config_path("zero2").read_text())["zero_optimization"]["stage"] == 2
    zero3 = json.loads(deepspeed_config_path("zero3").read_text())["zero_optimization"]
    assert zero3["stage"] == 3 and zero3["stage3_gather_16bit_weights_on_model_save"] is True
    offload = json.loads(deepspeed_config_path("zero3-offload").read_text())["zero_optimization"]
    assert offload["offload_optimizer"]["device"] == "cpu" and offload["offload_param"]["device"] == "cpu"


def test_deepspeed_setting_names_a_preset_or_a_file(tmp_path):
    with pytest.raises(ValueError, match="unknown DeepSpeed preset 'zero-3'; did you mean 'zero3'"):
        TrainSettings(deepspeed="zero-3")
    settings = TrainSettings(deepspeed=str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        deepspeed_config_path(settings.deepspeed)
    own = tmp_path / "ds.json"
    own.write_text("{}")
    assert deepspeed_config_path(str(own)) == own
    assert deepspeed_config_path("zero3").name == "zero3.json"


def test_precision_key_and_the_bf16_fp16_switches():
    assert TrainSettings().effective_precision == "fp32"
    assert TrainSettings(bf16=True).effective_precision == "bf16"
    assert TrainSettings(precision="fp16").effective_precision == "fp16"
    assert TrainSettings(precision="bf16", bf16=True).effective_precision == "bf16"
    with pytest.raises(ValueError, match="contradicts fp16"):
        TrainSettings(precision="bf16", fp16=True)
    with pytest.raises(ValueError, match="both true"):
        TrainSettings(bf16=True, fp16=True)
    args = TrainSettings(precision="bf16").to_training_arguments(Path("/tmp/mllm-precision-test"))
    assert args.bf16 and not args.fp16


def test_attention_choice(monkeypatch):
    import torch
    from mllm.models.attention import pick_attn_implementation

    if not torch.cuda.is_available():
        assert pick_attn_implementation("bfloat16") == "sdpa"
    assert pick_attn_implementation() == "sdpa"  # fp32 weights never get flash-attn
    monkeypatch.setenv("MLLM_ATTN_IMPLEMENTATION", "eager")
    assert pick_attn_implementation("bfloat16") == "eager"


def test_shard_and_collectives_without_a_process_group():
    from mllm import distributed

    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.gather_to_main({"a": 1}) == [{"a": 1}]


def test_cli_run_has_the_launch_flags():
    from click.testing import CliRunner
    from mllm.cli.main import main

    result = CliRunner().invoke(main, ["run", "--help"])
    for flag in ("--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port"):
        assert flag in result.output
    bad = CliRunner().invoke(main, ["run", "x.yaml", "--nnodes", "2"])
    assert bad.exit_code == 2 and "--master-addr" in bad.output


def test_env_reports_attention():
    from mllm.pipeline.environment import collect_env

    info = collect_env()
    assert info["attention"] in ("sdpa", "flash_attention_2", "eager")
    assert "deepspeed" in info


# -- slow: two processes (gloo) against one ------------------------------------------------

@pytest.fixture(scope="module")
def easyvqa_files(tmp_path_factory):
    """A preference file (mllm-dpo-json) built from the first easy-VQA training questions."""
    easy_vqa = pytest.importorskip("easy_vqa")
    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    rows = []
    for i in range(16):
        wrong = "circle" if answers[i] != "circle" else "triangle"
        rows.append({"id": str(i), "image": str(paths[image_ids[i]]), "question": questions[i],
                     "chosen": answers[i], "rejected": wrong})
    folder = tmp_path_factory.mktemp("prefs")
    path = folder / "prefs.json"
    path.write_text(json.dumps(rows))
    return {"preferences": path, "image_folder": Path(paths[image_ids[0]]).parent}


def pipeline(name, *, method, data, train, eval_limit=None):
    stages = [{"id": "train", "kind": "train", "method": method, "data": data,
               "train": {"max_steps": 3, "lr": 5e-3, "logging_steps": 1, "save_steps": 100, "warmup_ratio": 0.0,
                         "group_by_length": False, **train}}]
    if eval_limit:
        stages.append({"id": "eval", "kind": "eval", "models": ["train"], "batch_size": 8,
                       "benchmarks": [{"name": "easyvqa", "split": "test", "limit": eval_limit}]})
    return {"name": name, "model": dict(TINY_MODEL), "seed": 0, "stages": stages}


def run(data, runs_dir, *, nproc=1, force=(), only=None):
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins import registry as plugins

    plugins.set_registry(None)  # the installed plugins, as the torchrun processes see them
    registry = plugins.get_registry()
    launch = LaunchSettings(nproc_per_node=nproc) if nproc > 1 else None
    runner = PipelineRunner(load_pipeline(None, registry, data=data), registry, runs_dir, force=force, launch=launch)
    started = time.monotonic()
    runner.run(only=only)
    return runner, time.monotonic() - started


def losses(stage_dir):
    lines = [json.loads(line) for line in (stage_dir / "train_log.jsonl").read_text().splitlines()]
    return [(entry["step"], entry["loss"], entry["epoch"]) for entry in lines if "loss" in entry]


def weights(model_dir):
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    out = {}
    for file in files:
        out.update(load_file(str(file)))
    return out


CASES = {
    # id: (method, deepspeed preset or None for plain DDP, loss tolerance)
    "sft-full-zero2": ({"name": "sft"}, "zero2"),
    "sft-lora-zero3": ({"name": "sft", "lora": True, "lora_dropout": 0.0, "lora_r": 4, "lora_alpha": 8}, "zero3"),
    "sft-full-ddp": ({"name": "sft"}, None),
    "dpo-full-zero2": ({"name": "dpo", "beta": 0.1}, "zero2"),
    "dpo-full-zero3": ({"name": "dpo", "beta": 0.1}, "zero3"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one(case, tmp_path, easyvqa_files, monkeypatch):
    """Same loss curve (global batch 8 = 4 per process x 2), an ordinary saved model that
    loads and evaluates in one process; for one case also sharded evaluation."""
    import torch

    pytest.importorskip("easy_vqa")
    pytest.importorskip("mllm_align")
    pytest.importorskip("mllm_eval")
    if CASES[case][1] is not None:
        pytest.importorskip("deepspeed")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    method, preset = CASES[case]
    if method["name"] == "dpo":
        data = {"name": "mllm-dpo-json", "path": str(easyvqa_files["preferences"]), "check_images": False}
    else:
        data = {"name": "easyvqa", "split": "train", "limit": 16}
    extra = {"deepspeed": preset} if preset else {}
    eval_limit = 24 if case == "sft-full-zero2" else None

    one, one_seconds = run(pipeline("one", method=method, data=data, train={"batch_size": 8}, eval_limit=eval_limit),
                           tmp_path / "one")
    two, two_seconds = run(pipeline("two", method=method, data=data, train={"batch_size": 4, **extra},
                                    eval_limit=eval_limit), tmp_path / "two", nproc=2)
    print(f"\n{case}: one process {one_seconds:.1f}s, two processes {two_seconds:.1f}s")

    single, double = losses(one.run_dir / "train"), losses(two.run_dir / "train")
    assert [s for s, _, _ in double] == [1, 2, 3]
    assert [e for _, _, e in double] == [e for _, _, e in single] == [0.5, 1.0, 1.5]  # 8 of 16 records a step
    # SFT's loss is a per-process mean over answer tokens, so the halves weigh tokens slightly
    # differently; DPO's is a mean over pairs, identical up to float summation order
    tolerance = 1e-2 if method["name"] == "sft" else 1e-4
    for (_, a, _), (_, b, _) in zip(single, double):
        assert b == pytest.approx(a, rel=tolerance)
    environment = json.loads((two.run_dir / "train" / "environment.json").read_text())
    assert environment["processes"]["world_size"] == 2 and environment["deepspeed"] == preset
    assert environment["backend"] == "gloo" and environment["attention"] == "sdpa"
    assert (two.run_dir / "train" / "COMPLETE").is_file()
    assert not list((two.run_dir / "train").glob(".launch*"))
    if preset:  # DeepSpeed wrote its own (sharded) checkpoint beside the Trainer's files
        assert list((two.run_dir / "train" / "checkpoints").glob("checkpoint-3/global_step3"))

    # the saved folder is an ordinary one: weights equal the single-process model's
    model_one, model_two = one.run_dir / "train" / "model", two.run_dir / "train" / "model"
    w1, w2 = weights(model_one), weights(model_two)
    assert set(w1) == set(w2) and w2
    if method.get("lora"):  # the adapter folder: LoRA A and B (seeded alike in both runs) and the projector
        w0 = {k: torch.zeros_like(v) for k, v in w1.items()}
    else:
        w0 = weights(one.run_dir / "init" / "model")
    apart = sum(float(((w1[k].float() - w2[k].float()) ** 2).sum()) for k in w1) ** 0.5
    moved = sum(float(((w1[k].float() - w0[k].float()) ** 2).sum()) for k in w1) ** 0.5
    print(f"{case}: |two - one| / |one - start| = {apart / moved:.2e} (loss {[round(b, 4) for _, b, _ in double]} "
          f"vs {[round(a, 4) for _, a, _ in single]})")
    # Adam's first steps are nearly sign(grad): SFT's token weighting moves some weights differently
    assert apart / moved < (0.05 if method.get("lora") else 0.25 if method["name"] == "sft" else 1e-2)

    # ... and loads and answers in a single process
    from mllm.generation.engine import AnswerEngine
    from mllm.models.llava.adapter import LlavaAdapter
    from mllm.records import EvalItem

    adapter = LlavaAdapter.load(model_two)
    image = easyvqa_files["image_folder"] / sorted(os.listdir(easyvqa_files["image_folder"]))[0]
    item = EvalItem(id="q", prompt="<image>\nWhat shape is in the image?", images=(image,), answer="circle")
    assert isinstance(AnswerEngine(adapter, batch_size=1, max_new_tokens=4).answer([item])["q"], str)

    if eval_limit:  # sharded evaluation (two processes) gives the single-process answers and metrics
        sharded = json.loads((two.run_dir / "eval" / "metrics.json").read_text())
        sharded_answers = (two.run_dir / "eval" / "train" / "easyvqa" / "answers.jsonl").read_text()
        assert sorted(p.name for p in (two.run_dir / "eval" / "train" / "easyvqa").glob("answer_cache*")) == \
            ["answer_cache.rank0.jsonl", "answer_cache.rank1.jsonl"]
        run(pipeline("two", method=method, data=data, train={"batch_size": 4, **extra}, eval_limit=eval_limit),
            tmp_path / "two", force=("eval",))
        assert json.loads((two.run_dir / "eval" / "metrics.json").read_text()) == sharded
        assert (two.run_dir / "eval" / "train" / "easyvqa" / "answers.jsonl").read_text() == sharded_answers
