"""The dpo method on a tiny LLaVA and real easy-VQA images: the speed-up paths give the
plain path's log-probs, the loss variants follow their formulas, training logs the reward
metrics (full and LoRA), the reference cache is reused, and (with TRL installed) loss and
reward metrics equal TRL's DPOTrainer on the same model and batch."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

easy_vqa = pytest.importorskip("easy_vqa")

from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig  # noqa: E402
from mllm.records import Preference, Turn  # noqa: E402
from mllm.training.trainer import TrainSettings, train_method  # noqa: E402
from mllm_align.dpo import DPO, REFERENCE_CACHE, DPOConfig, dpo_losses, record_key  # noqa: E402

TINY = dict(init="tiny", tokenizer_corpus="easyvqa", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
            vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
            heads=2, vocab_size=300)


def preference_records(n: int) -> list[Preference]:
    """easy-VQA questions: chosen = the gold answer, rejected = another answer."""
    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    out = []
    for i in range(n):
        wrong = {"yes": "no", "no": "yes"}.get(answers[i], "circle" if answers[i] != "circle" else "red")
        out.append(Preference(id=f"train-{i}", prompt=(Turn("user", f"<image>\n{questions[i]}"),),
                              chosen=answers[i], rejected=wrong, images=(paths[image_ids[i]],)))
    return out


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
    return preference_records(8)


def context(records, tmp_path, fingerprint="fp"):
    return SimpleNamespace(records=records, stage_dir=tmp_path, fingerprint=fingerprint, logger=None)


def settings(**overrides) -> TrainSettings:
    values = dict(max_steps=2, lr=1e-2, batch_size=4, warmup_ratio=0.0, lr_scheduler="constant",
                  logging_steps=1, save_steps=1000, group_by_length=False)
    values.update(overrides)
    return TrainSettings(**values)


@pytest.mark.parametrize("lora", [False, True])
def test_speedups_give_the_plain_log_probs(adapter, records, tmp_path, lora):
    method = DPO(DPOConfig(lora=lora, lora_dropout=0.0))
    model = method.setup(adapter)
    # move the weights away from the start so that LoRA's reference (adapters off) differs from the policy
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    batch = method.collate(records)
    model.eval()
    with torch.no_grad():
        shared, counts = method.sequence_logps(model, batch, share_image_features=True)
        plain, plain_counts = method.sequence_logps(model, batch, share_image_features=False)
    assert torch.equal(counts, plain_counts)
    assert torch.allclose(shared, plain, atol=1e-5, rtol=0)
    # the one-pass-per-image path encodes each image once, not twice
    assert batch["pixel_values"].shape[0] == len(records)

    # the reference: precomputed once in prepare (batched) == computed every step (plain path)
    method.config.reference_batch_size = 3
    if not lora:
        method.reference_model = DPO._frozen_copy(model)  # the "start model" of this test
    method.prepare(context(records, tmp_path))
    assert (tmp_path / REFERENCE_CACHE).is_file()
    batch = method.collate(records)
    assert bool(batch["reference_known"].all())
    method.config.share_image_features = False
    with torch.no_grad():
        chosen, rejected = method.reference_logps_now(model, batch)
    assert torch.allclose(batch["reference_logps"][:, 0], chosen, atol=1e-5, rtol=0)
    assert torch.allclose(batch["reference_logps"][:, 1], rejected, atol=1e-5, rtol=0)
    if lora:  # the LoRA reference is the base (adapters disabled), not the policy
        assert not torch.allclose(chosen, shared[: len(records)], atol=1e-3)


def test_loss_variants_follow_their_formulas():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5) * 3 for _ in range(4))
    lc, lr_ = torch.tensor([3.0, 4, 5, 2, 1]), torch.tensor([2.0, 2, 6, 3, 1])
    beta, eps = 0.3, 0.2
    d = (pc - rc) - (pr - rr)
    cases = {
        ("sigmoid", 0.0): -F.logsigmoid(beta * d),
        ("sigmoid", eps): -(1 - eps) * F.logsigmoid(beta * d) - eps * F.logsigmoid(-beta * d),
        ("hinge", 0.0): torch.relu(1 - beta * d),
        ("robust", eps): (-(1 - eps) * F.logsigmoid(beta * d) + eps * F.logsigmoid(-beta * d)) / (1 - 2 * eps),
        ("ipo", 0.0): ((pc - rc) / lc - (pr - rr) / lr_ - 1 / (2 * beta)) ** 2,
    }
    for (loss_type, smoothing), expected in cases.items():
        losses, chosen_rewards, rejected_rewards = dpo_losses(
            pc, pr, rc, rr, beta=beta, loss_type=loss_type, label_smoothing=smoothing,
            chosen_lengths=lc, rejected_lengths=lr_)
        assert torch.allclose(losses, expected, atol=1e-6), loss_type
        assert torch.allclose(chosen_rewards, beta * (pc - rc))
        assert torch.allclose(rejected_rewards, beta * (pr - rr))


def test_sft_term_and_record_reference_logps(adapter, records, tmp_path):
    given = [Preference(id=r.id, prompt=r.prompt, chosen=r.chosen, rejected=r.rejected, images=r.images,
                        reference_logps=(-20.0 - i, -10.0)) for i, r in enumerate(records[:4])]
    method = DPO(DPOConfig(sft_weight=0.5, dpo_weight=2.0))
    model = method.setup(adapter)
    method.prepare(context(given, tmp_path))
    assert method.stats["reference_computed"] == 0  # the records carried them
    batch = method.collate(given)
    assert batch["reference_logps"][:, 0].tolist() == [-20.0, -21.0, -22.0, -23.0]
    loss, metrics = method.loss(model, batch)
    with torch.no_grad():
        logps, counts = method.sequence_logps(model, batch)
    sft = -logps[:4].sum() / counts[:4].sum()
    losses, _, _ = dpo_losses(logps[:4], logps[4:], batch["reference_logps"][:, 0], batch["reference_logps"][:, 1],
                              beta=0.1)
    assert math.isclose(float(loss.detach()), float(2.0 * losses.mean() + 0.5 * sft), rel_tol=1e-5)
    assert math.isclose(metrics["loss/sft"], float(sft), rel_tol=1e-5)
    assert metrics["logps/chosen"] == pytest.approx(float(logps[:4].mean()), rel=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_training_logs_reward_metrics_and_reuses_the_reference_cache(adapter, records, tmp_path, lora):
    method = DPO(DPOConfig(lora=lora, beta=0.5))
    model = method.setup(adapter)
    assert method.reference_model is None  # precomputed reference (full) or adapters off (LoRA): no copy
    method.prepare(context(records, tmp_path))
    assert method.stats["reference_computed"] == len(records)
    trainer, metrics = train_method(method, model, records, settings(), tmp_path)
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert key in metrics, key
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert sum("rewards/margins" in entry for entry in log) == 2
    assert method.stats["reference_forward_passes"] == 0  # no reference pass while training

    # a resumed stage (same fingerprint) reads the cache; another fingerprint recomputes
    again = DPO(DPOConfig(lora=lora))
    again.setup(LlavaAdapter.load(adapter.base_path or tmp_path))
    again.prepare(context(records, tmp_path))
    assert again.stats["reference_computed"] == 0 and again.reference == method.reference
    other = DPO(DPOConfig(lora=lora))
    other.setup(LlavaAdapter.load(adapter.base_path or tmp_path))
    other.prepare(context(records, tmp_path, fingerprint="changed"))
    assert other.stats["reference_computed"] == len(records)
    assert set(other.reference) == {record_key(r) for r in records}


def test_plain_full_fine_tuning_keeps_a_frozen_reference(adapter, records, tmp_path):
    method = DPO(DPOConfig(precompute_reference=False, share_image_features=False))
    model = method.setup(adapter)
    assert method.reference_model is not None and method.reference_model is not model
    trainer, metrics = train_method(method, model, records, settings(max_steps=3), tmp_path)
    assert method.stats["reference_forward_passes"] == 3
    # the reference stayed the start model while the policy moved
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), method.reference_model.parameters()))


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_and_rewards_equal_trl(adapter, records, tmp_path, loss_type):
    """Same model, same batch, a few steps in: TRL's DPOTrainer.compute_loss and ours agree.

    LoRA (the HA-DPO setup): TRL's reference is then the same model with adapters
    disabled, as ours. TRL gets our token layout (prompt + completion, completion_mask =
    our labels) and the images given twice (its vision collator's layout)."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    beta = 0.1 if loss_type == "sigmoid" else 0.5
    method = DPO(DPOConfig(lora=True, lora_dropout=0.0, beta=beta, loss_type=loss_type))
    model = method.setup(adapter)
    method.prepare(context(records, tmp_path))
    rows = [{"images": [Image.open(r.images[0]).convert("RGB")], "prompt": r.prompt[0].content, "chosen": r.chosen,
             "rejected": r.rejected} for r in records]
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(records), report_to=[],
                         beta=beta, loss_type=[loss_type], max_length=None, use_cpu=True)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=adapter.processor)
    batch = method.collate(records)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(3):
        loss, _ = method.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trl_inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "pixel_values": torch.cat([batch["pixel_values"]] * 2),
                  "completion_mask": (batch["labels"] != -100).long()}
    with torch.no_grad():
        ours, metrics = method.loss(model, batch)
        theirs = trainer.compute_loss(trainer.model, trl_inputs)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert float(ours) > 0 and metrics["rewards/margins"] != 0  # a few steps in: not the trivial start
    assert float(ours) == pytest.approx(float(theirs), abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert metrics[key] == pytest.approx(logged[key], abs=1e-5), key
