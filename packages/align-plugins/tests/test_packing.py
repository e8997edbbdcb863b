"""Packed rows and the shared prompt pass on a tiny LLaVA with real easy-VQA images: per-
sequence log-probs and losses equal the padded separate sequences' (1e-5) under sdpa and
eager, images stay with their sequence, a short training run works with both on, and
where the attention cannot take a block mask the layout falls back with its reason."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

easy_vqa = pytest.importorskip("easy_vqa")

from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig  # noqa: E402
from mllm.records import Conversation, Preference, Turn  # noqa: E402
from mllm.training.packing import layout_support, packed_model_inputs, padding_share  # noqa: E402
from mllm.training.trainer import TrainSettings, train_method  # noqa: E402
from mllm_align.dpo import DPO, DPOConfig  # noqa: E402
from mllm_align.hadpo import HADPO, HADPOConfig  # noqa: E402
from mllm_align.layout import Layout, choose_layout  # noqa: E402
from mllm_align.sft import SFT  # noqa: E402

TINY = dict(init="tiny", tokenizer_corpus="easyvqa", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
            vision_intermediate_size=64, text_hidden_size=32, text_layers=2, text_intermediate_size=64,
            heads=2, vocab_size=300)
EXPLANATION = "the shape in the picture is what the question asks about"


def _answer(base: str, i: int) -> str:
    # answers of widely varying length, as with explanations: padding to pack away
    return base if i % 3 == 0 else f"{base} because {' '.join([EXPLANATION] * (3 * (i % 3)))}"


def preference_records(n: int) -> list[Preference]:
    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    out = []
    for i in range(n):
        wrong = {"yes": "no", "no": "yes"}.get(answers[i], "circle" if answers[i] != "circle" else "red")
        images = (paths[image_ids[i]],) if i != 2 else ()  # one text-only pair among the image pairs
        prompt = f"<image>\n{questions[i]}" if images else questions[i]
        out.append(Preference(id=f"train-{i}", prompt=(Turn("user", prompt),), chosen=_answer(answers[i], i),
                              rejected=_answer(wrong, i + 1), images=images))
    return out


def conversations(n: int) -> list[Conversation]:
    return [Conversation(id=r.id, turns=(*r.prompt, Turn("assistant", r.chosen)), images=r.images)
            for r in preference_records(n)]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    LlavaAdapter.from_config(LlavaModelConfig(**TINY), seed=0).save(path)
    return path


@pytest.fixture
def adapter(tiny_model_dir):
    return LlavaAdapter.load(tiny_model_dir)


def _perturb(model) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))


@pytest.mark.parametrize("attention", ["sdpa", "sdpa-mask", "eager"])
def test_shared_prompt_and_packing_give_the_separate_sequences_log_probs(adapter, attention, monkeypatch):
    """sdpa: packed forwards go block by block (segmented attention); sdpa-mask: the 4D block
    mask (MLLM_PACKED_ATTENTION=mask); eager: its additive mask."""
    if attention == "sdpa-mask":
        monkeypatch.setenv("MLLM_PACKED_ATTENTION", "mask")
    method = DPO(DPOConfig())
    model = method.setup(adapter)
    model.set_attn_implementation(attention.split("-")[0])
    _perturb(model)
    model.eval()
    records = preference_records(6)
    plain = method.collate(records)
    results = {}
    with torch.no_grad():
        expected, expected_counts = method.sequence_logps(model, plain)
        for packing, shared in ((False, True), (True, False), (True, True)):
            method.layout = Layout(packing=packing, shared_prompt=shared)
            batch = method.collate(records)
            for share_images in (True, False):
                logps, counts = method.sequence_logps(model, batch, share_image_features=share_images)
                assert torch.equal(counts, expected_counts)
                # sums of up to ~100 token log-probs near -400: 1e-5 plus float32's resolution there
                assert torch.allclose(logps, expected, atol=1e-5, rtol=1e-6), (packing, shared, share_images)
                assert torch.allclose(logps / counts, expected / counts, atol=1e-6, rtol=0)
            results[(packing, shared)] = batch
    used = model.config.text_config._attn_implementation
    assert used == {"sdpa": "mllm_segmented_sdpa", "sdpa-mask": "sdpa", "eager": "eager"}[attention]
    n = len(records)
    assert results[(False, True)]["input_ids"].shape[0] == n  # one row per pair
    # the prompt (image tokens included) once per pair: fewer tokens than two sequences
    shared_tokens = int(results[(False, True)]["attention_mask"].sum())
    assert shared_tokens < int(plain["attention_mask"].sum()) - n * adapter.num_image_tokens // 2
    packed = results[(True, True)]
    assert packed["input_ids"].shape[0] < n and padding_share(packed) < padding_share(plain)
    # images follow their tokens: one per image pair when shared, twice without sharing
    assert packed["image_index"].numel() == sum(len(r.images) for r in records)
    assert results[(True, False)]["image_index"].numel() == 2 * sum(len(r.images) for r in records)


@pytest.mark.parametrize("attention", ["segmented", "mask"])
def test_packed_sft_loss_and_gradients_equal_padded(adapter, attention, monkeypatch):
    monkeypatch.setenv("MLLM_PACKED_ATTENTION", attention)
    method = SFT()
    model = method.setup(adapter)
    _perturb(model)
    model.eval()
    records = conversations(6)
    losses, grads = [], []
    for packing in (False, True):
        method.layout = Layout(packing=packing)
        batch = method.collate(records)
        model.zero_grad()
        loss, metrics = method.loss(model, batch)
        loss.backward()
        losses.append((float(loss.detach()), metrics["token_accuracy"], metrics["answer_tokens"]))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        if packing:
            assert batch["input_ids"].shape[0] < len(records)
    assert abs(losses[0][0] - losses[1][0]) < 1e-5 and losses[0][1:] == losses[1][1:]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def _context(records, tmp_path, train):
    return SimpleNamespace(records=records, stage_dir=tmp_path, fingerprint="fp", logger=None, train=train)


@pytest.mark.parametrize("kind", ["dpo", "hadpo", "sft"])
def test_a_short_training_run_with_packing_on(adapter, tmp_path, kind):
    train = TrainSettings(max_steps=2, lr=1e-2, batch_size=4, warmup_ratio=0.0, lr_scheduler="constant",
                          logging_steps=1, save_steps=1000, group_by_length=False, packing=True,
                          shared_prompt=True)
    records = conversations(8) if kind == "sft" else preference_records(8)
    method = {"dpo": lambda: DPO(DPOConfig()), "hadpo": lambda: HADPO(HADPOConfig(lora_r=8, lora_alpha=16)),
              "sft": SFT}[kind]()
    model = method.setup(adapter)
    method.prepare(_context(records, tmp_path, train))
    assert method.layout.packing and method.layout.shared_prompt == (kind != "sft")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer, metrics = train_method(method, model, records, train, tmp_path, seed=0)
    assert trainer.state.global_step == 2 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
    if kind != "sft":
        assert method.stats["reference_forward_passes"] == 0 and method.stats["reference_computed"] == 8


def test_the_layout_falls_back_with_its_reason(adapter, caplog):
    assert layout_support(adapter, shared_prompt=True, packing=True) == (True, True, False, "")
    adapter.model.config._attn_implementation = "flash_attention_2"
    adapter.model.config.text_config._attn_implementation = "flash_attention_2"
    shared, packing, one_row, reason = layout_support(adapter, shared_prompt=True, packing=True)
    assert (shared, packing, one_row) == (False, True, True) and "takes no block mask" in reason
    with caplog.at_level("WARNING"):
        layout = choose_layout(adapter, packing=True, shared_prompt=True)
    assert layout == Layout(packing=True, shared_prompt=False, one_row=True) and "shared_prompt is off" in caplog.text
    method = SFT()
    method.setup(adapter)
    method.layout = layout
    batch = method.collate(conversations(4))
    assert batch["input_ids"].shape[0] == 1 and padding_share(batch) == 0.0  # varlen: one row, no padding
    assert packed_model_inputs(adapter.model, batch)["attention_mask"] is None
    other = SimpleNamespace(model=adapter.model)
    assert layout_support(other, shared_prompt=True)[:2] == (False, False)
    assert "supports_packed_sequences" in layout_support(other, shared_prompt=True)[3]
