"""The core trainer and the train stage, run for real on a tiny LLaVA and easy-VQA rows:
train_log.jsonl, data_report.json, the saved model, resume from a checkpoint after an
interruption, ``mllm export --merge``, and a record-kind mismatch."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

easy_vqa = pytest.importorskip("easy_vqa")
pytest.importorskip("mllm_align")

from click.testing import CliRunner  # noqa: E402
from mllm import hookimpl  # noqa: E402
from mllm.interfaces import DatasetConfig  # noqa: E402
from mllm.pipeline.config import ConfigError, load_pipeline  # noqa: E402
from mllm.pipeline.runner import PipelineRunner  # noqa: E402
from mllm.plugins import registry as plugins  # noqa: E402
from mllm.plugins.specs import ComponentSpec  # noqa: E402
from mllm.records import Conversation, Preference, Turn  # noqa: E402
from mllm.training.trainer import (  # noqa: E402
    MethodTrainer,
    TrainSettings,
    last_checkpoint,
    last_logged_values,
    truncate_log,
)
from transformers import TrainerCallback  # noqa: E402
from transformers.trainer_pt_utils import LengthGroupedSampler  # noqa: E402

TINY_MODEL = dict(name="llava", init="tiny", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
                  vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
                  heads=2, vocab_size=300)


# -- an in-test dataset plugin ----------------------------------------------------------


class TinyDataConfig(DatasetConfig):
    limit: int = 16
    kind: str = "conversation"


class TinyData:
    """Conversations (or preferences) from the first easy-VQA training questions."""

    record_kind = "conversation"

    def __init__(self, config: TinyDataConfig) -> None:
        self.config = config
        self.record_kind = config.kind

    @classmethod
    def data_files(cls, config):
        return []

    def records(self, report):
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
        for i in range(self.config.limit):
            with report.row(file="easy_vqa/train", row=i):
                turn = Turn("user", f"<image>\n{questions[i]}")
                if self.config.kind == "preference":
                    yield Preference(id=str(i), prompt=(turn,), chosen=answers[i], rejected="circle",
                                     images=(paths[image_ids[i]],))
                else:
                    yield Conversation(id=str(i), turns=(turn, Turn("assistant", answers[i])),
                                       images=(paths[image_ids[i]],))


class TestPlugin:
    @hookimpl
    def mllm_register_datasets(self, register):
        register(ComponentSpec(name="tinyvqa", impl="mllm_test_training_data:TinyData",
                               config="mllm_test_training_data:TinyDataConfig"))


@pytest.fixture(scope="module")
def registry():
    import mllm_align.plugin

    module = types.ModuleType("mllm_test_training_data")
    module.TinyData, module.TinyDataConfig = TinyData, TinyDataConfig
    sys.modules[module.__name__] = module
    reg = plugins.Registry(autoload=False)
    assert reg.register_plugin(mllm_align.plugin, distribution="mllm-align")
    assert reg.register_plugin(TestPlugin(), distribution="test-dist")
    plugins.set_registry(reg)
    yield reg
    plugins.set_registry(None)
    sys.modules.pop(module.__name__, None)


def pipeline_data(name="tiny", method=None, train=None, data=None):
    return {
        "name": name,
        "model": dict(TINY_MODEL),
        "stages": [{
            "id": "sft", "kind": "train",
            "method": method or {"name": "sft"},
            "data": data or {"name": "tinyvqa", "limit": 16},
            "train": {"max_steps": 4, "lr": 5e-3, "batch_size": 4, "logging_steps": 1, "save_steps": 2,
                      "warmup_ratio": 0.0, **(train or {})},
        }],
    }


def run_pipeline(registry, runs_dir, **kwargs):
    pipeline = load_pipeline(None, registry, data=pipeline_data(**kwargs))
    runner = PipelineRunner(pipeline, registry, runs_dir)
    return runner, runner.run()


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- settings and helpers ---------------------------------------------------------------


def test_train_settings_map_to_training_arguments(tmp_path):
    settings = TrainSettings(epochs=2, lr=1e-3, batch_size=4, grad_accum=2, warmup_ratio=0.1,
                             report_to=["tensorboard"], save_total_limit=3)
    args = settings.to_training_arguments(tmp_path, seed=7)
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert (args.num_train_epochs, args.learning_rate, args.per_device_train_batch_size) == (2, 1e-3, 4)
    assert args.gradient_accumulation_steps == 2 and args.get_warmup_steps(100) == 10
    assert args.report_to == ["tensorboard"] and args.seed == 7 and args.save_total_limit == 3
    assert args.remove_unused_columns is False
    assert TrainSettings().report_to == ["none"] and TrainSettings().group_by_length
    with pytest.raises(ValueError, match="extra"):
        TrainSettings(learning_rate=1e-3)


def test_last_checkpoint_needs_the_completion_marker_and_log_truncation(tmp_path):
    from mllm.training.checkpoints import mark_complete

    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    mark_complete(tmp_path / "checkpoint-2", 2)
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-4").mkdir()  # interrupted while saving: every file, but no marker
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path).name == "checkpoint-2"
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)))
    truncate_log(log, 2)
    assert [e["step"] for e in read_log(log)] == [1, 2]
    assert last_logged_values([{"loss": 2.0, "step": 1}, {"loss": 1.0, "step": 2}, {"train_loss": 1.5}]) == {
        "loss": 1.0, "step": 2, "train_loss": 1.5}


def test_length_grouped_sampler_uses_method_lengths(tmp_path, registry):
    from mllm_align.sft import SFT, SFTConfig

    method = SFT(SFTConfig())
    records = list(TinyData(TinyDataConfig(limit=8)).records(__import__("mllm.data.badrows").data.badrows.DataReport("t")))
    model = torch.nn.Linear(2, 2)
    args = TrainSettings(batch_size=2).to_training_arguments(tmp_path)
    trainer = MethodTrainer(method, model=model, args=args, train_dataset=records, group_by_length=True)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == method.lengths(records)
    plain = MethodTrainer(method, model=model, args=args, train_dataset=records, group_by_length=False)
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)


# -- the train stage ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(registry, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    runner, plans = run_pipeline(registry, runs, name="lora",
                                 method={"name": "sft", "lora": True, "lora_r": 4, "lora_alpha": 16,
                                         "lora_dropout": 0.0})
    return runner, plans


def test_train_stage_writes_model_logs_and_report(registry, lora_run):
    from mllm.models.llava.adapter import LlavaAdapter

    runner, plans = lora_run
    stage = runner.run_dir / "sft"
    assert [p.action for p in plans] == ["run", "run"]
    for name in ("model", "train_log.jsonl", "data_report.json", "COMPLETE", "metrics.json"):
        assert (stage / name).exists(), name
    report = json.loads((stage / "data_report.json").read_text())
    assert report["total"] == report["kept"] == 16 and report["skipped"] == []
    log = read_log(stage / "train_log.jsonl")
    steps = [e["step"] for e in log if "loss" in e]
    assert steps == [1, 2, 3, 4]
    assert all("token_accuracy" in e and "learning_rate" in e for e in log if "loss" in e)
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["loss"] == [e for e in log if "loss" in e][-1]["loss"] and "train_loss" in metrics
    assert (stage / "model" / "adapter_config.json").exists()  # LoRA: an adapter folder
    adapter = LlavaAdapter.load(stage / "model")
    assert hasattr(adapter.model, "merge_and_unload")
    # a second run finds the stage finished and skips it
    again = PipelineRunner(runner.pipeline, registry, runner.run_dir.parent).run()
    assert [p.action for p in again] == ["skip", "skip"]


def test_export_merge_gives_the_lora_models_logits(registry, lora_run, tmp_path):
    from mllm.cli.main import main
    from mllm.models.llava.adapter import LlavaAdapter
    from mllm_align.sft import SFT, SFTConfig

    runner, _ = lora_run
    stage = runner.run_dir / "sft"
    dest = tmp_path / "merged"
    result = CliRunner().invoke(main, ["export", "--merge", str(stage), str(dest)])
    assert result.exit_code == 0, result.output
    assert not (dest / "adapter_config.json").exists() and (dest / "model.safetensors").exists()

    lora = LlavaAdapter.load(stage / "model")
    merged = LlavaAdapter.load(dest)
    assert not hasattr(merged.model, "merge_and_unload")
    method = SFT(SFTConfig())
    method.adapter = lora
    batch = method.collate(list(TinyData(TinyDataConfig(limit=4)).records(
        __import__("mllm.data.badrows").data.badrows.DataReport("t"))))
    batch.pop("labels")
    with torch.no_grad():
        lora.model.eval()
        merged.model.eval()
        expected = lora.model(**batch).logits
        got = merged.model(**batch).logits
        base = LlavaAdapter.load(runner.run_dir / "init" / "model").model.eval()(**batch).logits
    assert not torch.allclose(expected, base, atol=1e-4)  # the LoRA model did learn something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # exporting a model that is not LoRA is a clear error
    refused = CliRunner().invoke(main, ["export", "--merge", str(dest), str(tmp_path / "again")])
    assert refused.exit_code != 0 and "not a LoRA" in refused.output


class Interrupt(TrainerCallback):
    """Raises after step ``at`` (on the first run only), like a killed process."""

    def __init__(self, at: int, armed: dict) -> None:
        self.at, self.armed = at, armed

    def on_train_begin(self, args, state, control, **kwargs):
        self.armed.setdefault("started_at", []).append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # after train_log.jsonl got the step's line: the resumed run must not log it twice
        if self.armed.get("crash") and state.global_step == self.at:
            raise KeyboardInterrupt(f"simulated interruption after step {self.at}")


def test_resume_from_checkpoint_after_interruption(registry, tmp_path, monkeypatch):
    from mllm_align.sft import SFT

    armed = {"crash": True}
    monkeypatch.setattr(SFT, "callbacks", lambda self: [Interrupt(3, armed)], raising=False)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(registry, tmp_path, name="resume")
    stage = tmp_path / "resume" / "sft"
    assert not (stage / "COMPLETE").exists()
    assert last_checkpoint(stage / "checkpoints").name == "checkpoint-2"
    assert [e["step"] for e in read_log(stage / "train_log.jsonl")] == [1, 2, 3]

    armed["crash"] = False
    runner, plans = run_pipeline(registry, tmp_path, name="resume")
    assert [p.action for p in plans] == ["skip", "resume"]
    assert armed["started_at"] == [0, 2]  # the second run started from the checkpoint, not step 0
    assert (stage / "COMPLETE").exists() and (stage / "model" / "model.safetensors").exists()
    log = [e for e in read_log(stage / "train_log.jsonl") if "loss" in e]
    assert [e["step"] for e in log] == [1, 2, 3, 4]  # step 3 logged once, by the resumed run
    state = json.loads((last_checkpoint(stage / "checkpoints") / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_record_kind_mismatch_is_a_clear_error(registry, tmp_path):
    with pytest.raises(ConfigError, match="'conversation' records and dataset 'tinyvqa' yields 'preference'"):
        run_pipeline(registry, tmp_path, name="mismatch", data={"name": "tinyvqa", "limit": 2, "kind": "preference"})
    assert not (tmp_path / "mismatch" / "sft" / "model").exists()


def test_unknown_train_key_names_the_key(registry):
    data = pipeline_data(train={"epoch": 1})
    with pytest.raises(ConfigError, match="unknown key 'epoch'; did you mean 'epochs'"):
        load_pipeline(None, registry, data=data)
