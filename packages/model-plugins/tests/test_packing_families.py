"""Packed rows and the shared prompt pass on every model-plugins family (tiny models, real
easy-VQA images): DPO's per-sequence log-probs packed, shared-prompt and both equal the padded
separate sequences' (1e-5, with the shared vision pass and without), SFT's loss and gradients
packed equal padded, and two training steps run with both on. Qwen2-VL / Qwen2.5-VL get each
sequence's own M-RoPE ids (checked against the padded forward, whose ids the model computes);
with ``dynamic_resolution`` the layout falls back to padded rows with its reason.

Idefics3 runs in the default set; the other families are marked ``slow`` and ``families``
(``MLLM_FAMILIES=1`` or ``-m families``), as in test_matrix.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
easy_vqa = pytest.importorskip("easy_vqa")

from mllm.records import Conversation, Preference, Turn  # noqa: E402
from mllm.training.packing import layout_support, padding_share  # noqa: E402
from mllm.training.trainer import TrainSettings, train_method  # noqa: E402
from mllm_align.dpo import DPO, DPOConfig  # noqa: E402
from mllm_align.layout import Layout  # noqa: E402
from mllm_align.sft import SFT  # noqa: E402
from mllm_models.adapter import (  # noqa: E402
    Idefics3Adapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    Qwen2VLAdapter,
    Qwen25VLAdapter,
    SmolVLMAdapter,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread

ADAPTERS = {"idefics3": Idefics3Adapter, "llava-next": LlavaNextAdapter, "llava-onevision": LlavaOnevisionAdapter,
            "smolvlm": SmolVLMAdapter, "qwen2-vl": Qwen2VLAdapter, "qwen2.5-vl": Qwen25VLAdapter}
FURTHER = pytest.mark.slow, pytest.mark.families
FAMILY_PARAMS = [pytest.param(name, marks=() if name == "idefics3" else FURTHER) for name in ADAPTERS]
EXPLANATION = "the shape in the picture is what the question asks about"


def _answer(base: str, i: int) -> str:
    # answers of widely varying length: padding to pack away
    return base if i % 3 == 0 else f"{base} because {' '.join([EXPLANATION] * (3 * (i % 3)))}"


def preference_records(n: int) -> list[Preference]:
    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    # one question per image: each sequence has its own picture (a mixed-up image order shows)
    firsts = [i for i in range(len(image_ids)) if i == 0 or image_ids[i] != image_ids[i - 1]]
    out = []
    for i, q in enumerate(firsts[:n]):
        wrong = {"yes": "no", "no": "yes"}.get(answers[q], "circle" if answers[q] != "circle" else "red")
        images = (paths[image_ids[q]],) if i != 2 else ()  # one text-only pair among the image pairs
        prompt = f"<image>\n{questions[q]}" if images else questions[q]
        out.append(Preference(id=f"train-{i}", prompt=(Turn("user", prompt),), chosen=_answer(answers[q], i),
                              rejected=_answer(wrong, i + 1), images=images))
    return out


def conversations(n: int) -> list[Conversation]:
    return [Conversation(id=r.id, turns=(*r.prompt, Turn("assistant", r.chosen)), images=r.images)
            for r in preference_records(n)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny folder per family, built once for the module (each test loads a fresh copy)."""
    folders = {}

    def folder(name):
        if name not in folders:
            cls = ADAPTERS[name]
            config = {**cls.example_config(tmp_path_factory.getbasetemp()), "text_layers": 2,
                      "tokenizer_corpus": "easyvqa", "vocab_size": 400, "max_length": 512}
            path = tmp_path_factory.mktemp(name) / "model"
            cls.from_config(cls.config_class(**config), seed=0).save(path)
            folders[name] = path
        return folders[name]

    return folder


def _adapter(saved, name):
    return ADAPTERS[name].load(saved(name))


def _perturb(model) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))


def _attention(model, attention, monkeypatch) -> None:
    """sdpa: packed forwards block by block (segmented attention); sdpa-mask: the 4D block mask;
    eager: its additive mask."""
    if attention == "sdpa-mask":
        monkeypatch.setenv("MLLM_PACKED_ATTENTION", "mask")
    if attention == "eager":
        model.set_attn_implementation("eager")


def _check_dpo_logps(saved, name, attention, monkeypatch):
    adapter = _adapter(saved, name)
    assert layout_support(adapter, shared_prompt=True, packing=True) == (True, True, False, "")
    method = DPO(DPOConfig())
    model = method.setup(adapter)
    _attention(model, attention, monkeypatch)
    _perturb(model)
    model.eval()
    records = preference_records(6)
    plain = method.collate(records)
    batches = {}
    with torch.no_grad():
        expected, expected_counts = method.sequence_logps(model, plain, share_image_features=False)
        for packing, shared in ((False, True), (True, False), (True, True)):
            method.layout = Layout(packing=packing, shared_prompt=shared)
            batch = method.collate(records)
            for share_images in (True, False):
                logps, counts = method.sequence_logps(model, batch, share_image_features=share_images)
                assert torch.equal(counts, expected_counts)
                assert torch.allclose(logps, expected, atol=1e-5, rtol=1e-6), (packing, shared, share_images,
                                                                                (logps - expected).abs().max())
            batches[(packing, shared)] = batch
    used = model.config.text_config._attn_implementation
    assert used == {"sdpa": "mllm_segmented_sdpa", "sdpa-mask": "sdpa", "eager": "eager"}[attention]
    n = len(records)
    assert batches[(False, True)]["input_ids"].shape[0] == n  # one row per pair, the prompt once
    assert int(batches[(False, True)]["attention_mask"].sum()) < int(plain["attention_mask"].sum())
    packed = batches[(True, True)]
    assert packed["input_ids"].shape[0] < n and padding_share(packed) < padding_share(plain)
    images = sum(len(r.images) for r in records)
    assert packed["image_index"].numel() == images and batches[(True, False)]["image_index"].numel() == 2 * images


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_shared_prompt_and_packing_give_the_separate_sequences_log_probs(saved, name, monkeypatch):
    _check_dpo_logps(saved, name, "sdpa", monkeypatch)


@pytest.mark.slow
@pytest.mark.families
@pytest.mark.parametrize("attention", ["sdpa-mask", "eager"])
@pytest.mark.parametrize("name", list(ADAPTERS))
def test_the_block_mask_gives_the_separate_sequences_log_probs(saved, name, attention, monkeypatch):
    _check_dpo_logps(saved, name, attention, monkeypatch)


@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_packed_sft_loss_and_gradients_equal_padded(saved, name):
    adapter = _adapter(saved, name)
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
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], atol=1e-5)


def _context(records, tmp_path, train):
    return SimpleNamespace(records=records, stage_dir=tmp_path, fingerprint="fp", logger=None, train=train)


@pytest.mark.parametrize("kind", ["dpo", "sft"])
@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_a_short_training_run_with_packing_and_shared_prompt(saved, name, kind, tmp_path):
    adapter = _adapter(saved, name)
    train = TrainSettings(max_steps=2, lr=1e-2, batch_size=4, warmup_ratio=0.0, lr_scheduler="constant",
                          logging_steps=1, save_steps=1000, group_by_length=False, packing=True, shared_prompt=True)
    records = conversations(8) if kind == "sft" else preference_records(8)
    method = DPO(DPOConfig()) if kind == "dpo" else SFT()
    model = method.setup(adapter)
    method.prepare(_context(records, tmp_path, train))
    assert method.layout.packing and method.layout.shared_prompt == (kind == "dpo")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer, metrics = train_method(method, model, records, train, tmp_path, seed=0)
    assert trainer.state.global_step == 2 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
    if kind == "dpo":
        assert method.stats["reference_forward_passes"] == 0 and method.stats["reference_computed"] == 8


def test_qwen_dynamic_resolution_falls_back_to_padded_rows_with_its_reason(tmp_path, caplog):
    """Per-image grids and token counts do not travel in packed rows: the layout is off with the
    reason (an info line for the default shared prompt, a warning when packing was asked for)."""
    config = {**Qwen2VLAdapter.example_config(tmp_path), "dynamic_resolution": True}
    adapter = Qwen2VLAdapter.from_config(Qwen2VLAdapter.config_class(**config), seed=0)
    shared, packing, one_row, reason = layout_support(adapter, shared_prompt=True, packing=True)
    assert (shared, packing, one_row) == (False, False, False)
    assert "dynamic_resolution" in reason and "image_grid_thw" in reason
    for asked, level in (({}, "INFO"), ({"packing": True}, "WARNING")):  # shared_prompt: on by default
        train = TrainSettings(max_steps=1, **asked)
        method = DPO(DPOConfig(precompute_reference=False))
        method.setup(adapter)
        caplog.clear()
        with caplog.at_level("INFO"):
            method.prepare(_context(preference_records(2), tmp_path, train))
        assert not method.layout.active
        assert [r.levelname for r in caplog.records if "dynamic_resolution" in r.getMessage()] == [level]
    assert Qwen2VLAdapter.from_config(Qwen2VLAdapter.config_class(**Qwen2VLAdapter.example_config(tmp_path)),
                                      seed=0).supports_packed_sequences
