"""DPO on a tiny Idefics3: loss and reward metrics equal TRL's DPOTrainer on the same model and batch.

As the core's LLaVA check (packages/align-plugins/tests/test_dpo.py): TRL is built with the
family's processor and its dataset; its ``compute_loss`` gets our token layout (prompt +
completion, ``completion_mask`` = our labels) and the images given twice (its vision
collator's layout). LoRA, so TRL's reference is the model with adapters disabled, as ours."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from mllm.records import Preference, Turn  # noqa: E402
from mllm.testing import write_image  # noqa: E402
from mllm_align import DPO, DPOConfig  # noqa: E402
from mllm_models.adapter import Idefics3Adapter  # noqa: E402
from mllm_models.config import Idefics3ModelConfig  # noqa: E402


def _records(tmp_path):
    out = []
    for index, (colour, other) in enumerate((("red", "blue"), ("blue", "green"), ("green", "red"), ("red", "green"))):
        image = str(write_image(tmp_path / f"{index}.png", colour))
        out.append(Preference(id=f"p{index}", prompt=(Turn("user", "<image>\nWhat colour is the square?"),),
                              chosen=colour, rejected=f"a {other} one", images=(image,)))
    return out


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_idefics3_dpo_loss_and_rewards_equal_trl(tmp_path, loss_type):
    from PIL import Image

    adapter = Idefics3Adapter.from_config(Idefics3ModelConfig(**Idefics3Adapter.example_config(tmp_path)), seed=0)
    records = _records(tmp_path)
    beta = 0.1 if loss_type == "sigmoid" else 0.5
    method = DPO(DPOConfig(lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, beta=beta, loss_type=loss_type))
    model = method.setup(adapter)
    method.prepare(SimpleNamespace(records=records, stage_dir=tmp_path, fingerprint="fp", logger=None))
    rows = [{"images": [Image.open(r.images[0]).convert("RGB")], "prompt": r.prompt[0].content, "chosen": r.chosen,
             "rejected": r.rejected} for r in records]
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(records), report_to=[],
                         beta=beta, loss_type=[loss_type], max_length=None, use_cpu=True)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=adapter.processor)
    batch = method.collate(records)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(3):  # a few steps in, so the policy differs from the reference
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
    assert float(ours) > 0 and metrics["rewards/margins"] != 0
    assert float(ours) == pytest.approx(float(theirs), abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert metrics[key] == pytest.approx(logged[key], abs=1e-5), key
