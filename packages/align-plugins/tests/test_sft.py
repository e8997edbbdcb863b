"""The SFT method on a tiny LLaVA and real easy-VQA rows: loss goes down, only the
intended parameters train (freezing, LoRA), the projector gets its own learning rate."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

easy_vqa = pytest.importorskip("easy_vqa")

from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig  # noqa: E402
from mllm.records import Conversation, Turn  # noqa: E402
from mllm.training.trainer import MethodTrainer, TrainSettings  # noqa: E402
from mllm_align.common import IGNORE_INDEX, lora_target_regex, part_of  # noqa: E402
from mllm_align.sft import SFT, SFTConfig  # noqa: E402

TINY = dict(init="tiny", tokenizer_corpus="easyvqa", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
            vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
            heads=2, vocab_size=300)


def easyvqa_conversations(n: int) -> list[Conversation]:
    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    return [
        Conversation(id=f"train-{i}", turns=(Turn("user", f"<image>\n{questions[i]}"), Turn("assistant", answers[i])),
                     images=(paths[image_ids[i]],))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    LlavaAdapter.from_config(LlavaModelConfig(**TINY), seed=0).save(path)
    return path


@pytest.fixture
def adapter(tiny_model_dir):
    return LlavaAdapter.load(tiny_model_dir)


@pytest.fixture(scope="module")
def records():
    return easyvqa_conversations(8)


def settings(tmp_path, **overrides) -> TrainSettings:
    values = dict(max_steps=1, lr=1e-2, batch_size=8, warmup_ratio=0.0, lr_scheduler="constant",
                  logging_steps=1, save_steps=1000, group_by_length=False)
    values.update(overrides)
    return TrainSettings(**values)


def make_trainer(method, model, records, tmp_path, adapter=None, **overrides) -> MethodTrainer:
    train = settings(tmp_path, **overrides)
    projector_lr = method.projector_lr
    return MethodTrainer(
        method, model=model, args=train.to_training_arguments(tmp_path, disable_tqdm=True, save_strategy="no"),
        train_dataset=records, group_by_length=train.group_by_length, projector_lr=projector_lr,
        projector_module=adapter.module_names()["projector"] if projector_lr is not None else None,
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model) -> set[str]:
    after = model.state_dict()
    return {name for name, value in before.items() if not torch.equal(value, after[name])}


# -- collate --------------------------------------------------------------------------


def test_collate_pads_and_labels_only_answers(adapter, records):
    method = SFT(SFTConfig())
    method.setup(adapter)
    batch = method.collate(records[:3])
    assert set(batch) == {"input_ids", "labels", "attention_mask", "pixel_values"}
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape[0] == 3
    for row, record in enumerate(records[:3]):
        mask = batch["attention_mask"][row].bool()
        assert (batch["input_ids"][row][~mask] == adapter.pad_token_id).all()
        assert (batch["labels"][row][~mask] == IGNORE_INDEX).all()
        learned = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        text = adapter.tokenizer.decode(learned)
        assert text.strip() == record.turns[-1].content + "</s>"
    assert method.lengths(records[:3]) == [
        sum(len(t.content) for t in r.turns) + adapter.num_image_tokens for r in records[:3]]


def test_collate_before_setup_is_a_clear_error(records):
    with pytest.raises(RuntimeError, match="setup"):
        SFT(SFTConfig()).collate(records[:1])


# -- training -------------------------------------------------------------------------


def test_sft_steps_lower_the_loss_on_a_fixed_batch(adapter, records, tmp_path):
    method = SFT(SFTConfig())
    model = method.setup(adapter)
    batch = method.collate(records)
    with torch.no_grad():
        model.eval()
        before, metrics = method.loss(model, batch)
    assert 0.0 <= metrics["token_accuracy"] <= 1.0 and metrics["answer_tokens"] > 0
    trainer = make_trainer(method, model, records, tmp_path, adapter=adapter, max_steps=5)
    trainer.train()
    with torch.no_grad():
        model.eval()
        after, _ = method.loss(model, batch)
    assert after.item() < before.item() - 0.1
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 5 and all("token_accuracy" in entry for entry in logged)


def test_full_finetuning_freezes_only_the_vision_tower(adapter, records, tmp_path):
    method = SFT(SFTConfig())
    model = method.setup(adapter)
    names = adapter.module_names()
    before = snapshot(model)
    make_trainer(method, model, records, tmp_path, adapter=adapter).train()
    parts = {part_of(name, names) for name in changed(before, model)}
    assert parts == {"projector", "language_model"}
    assert not any(name.startswith(names["vision_tower"]) for name in changed(before, model))


def test_projector_only_training(adapter, records, tmp_path):
    method = SFT(SFTConfig(freeze_language_model=True))
    model = method.setup(adapter)
    names = adapter.module_names()
    before = snapshot(model)
    make_trainer(method, model, records, tmp_path, adapter=adapter).train()
    touched = changed(before, model)
    assert touched and all(part_of(name, names) == "projector" for name in touched)


def test_lora_trains_adapters_and_projector_only(adapter, records, tmp_path):
    names = adapter.module_names()
    method = SFT(SFTConfig(lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0))
    model = method.setup(adapter)
    assert adapter.model is model  # adapter.save writes the adapter folder
    wrapped = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
    assert wrapped and all(f".{names['language_model']}." in f".{n}" for n in wrapped)
    assert not any("vision_tower" in n for n in wrapped)
    before = snapshot(model)
    # one step moves lora_B off zero; a second makes lora_A move too
    make_trainer(method, model, records, tmp_path, adapter=adapter, max_steps=2).train()
    touched = changed(before, model)
    assert any("lora_B" in n for n in touched) and any("lora_A" in n for n in touched)
    assert any("modules_to_save" in n and "multi_modal_projector" in n for n in touched)
    unexpected = [n for n in touched if "lora_" not in n and "modules_to_save" not in n]
    assert unexpected == []


def test_lora_targets_are_restricted_to_the_language_model():
    import re

    pattern = re.compile(lora_target_regex("model.language_model", ["q_proj", "fc1"]))
    assert pattern.match("model.language_model.layers.0.self_attn.q_proj")
    assert not pattern.match("model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj")
    assert not pattern.match("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1")


def test_projector_learning_rate_has_its_own_param_group(adapter, records, tmp_path):
    method = SFT(SFTConfig(projector_lr=3e-3))
    model = method.setup(adapter)
    trainer = make_trainer(method, model, records, tmp_path, adapter=adapter, lr=1e-4)
    optimizer = trainer.create_optimizer()
    projector = {id(p) for p in model.get_submodule(adapter.module_names()["projector"]).parameters()}
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        if ids & projector:
            assert ids <= projector and group["lr"] == 3e-3
        else:
            assert group["lr"] == 1e-4
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert projector <= grouped
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_qlora_without_gpu_is_a_clear_error(adapter):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="bitsandbytes and a CUDA GPU"):
        SFT(SFTConfig(qlora=True)).setup(adapter)


def test_config_rejects_contradictions_and_unknown_keys():
    with pytest.raises(ValueError, match="freeze_language_model"):
        SFTConfig(lora=True, freeze_language_model=True)
    with pytest.raises(ValueError, match="nothing would train"):
        SFTConfig(freeze_projector=True, freeze_language_model=True)
    with pytest.raises(ValueError, match="lora_rank"):
        SFTConfig(lora_rank=8)
    assert SFTConfig(qlora=True).lora


def test_plugin_registers_sft_without_importing_torch():
    code = ("import sys, mllm_align.plugin as p; from mllm.plugins.registry import Registry; "
            "r = Registry(autoload=False); assert r.register_plugin(p, distribution='mllm-align'); "
            "spec = r.get('method', 'sft'); assert spec.impl == 'mllm_align.sft:SFT', spec; "
            "assert 'torch' not in sys.modules, 'plugin.py imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert SFT.record_kind == "conversation"
