"""``mllm.answer_logprobs``: the answer-token log-probs preference losses are built from."""

from __future__ import annotations

import pytest
import torch
from mllm import Turn, answer_logprobs
from mllm.testing import example_records, load_tiny_llava

IGNORE = -100


def naive(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full log_softmax over every position, then the answer tokens: the textbook way."""
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = labels[:, 1:]
    mask = targets != IGNORE
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return picked.sum(-1), picked


def test_sums_counts_and_per_token_values_from_logits():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.tensor([[IGNORE, IGNORE, 4, 5, 6, IGNORE],
                           [IGNORE, IGNORE, IGNORE, 1, 2, 3],
                           [IGNORE, 7, IGNORE, IGNORE, IGNORE, IGNORE]])
    scored = answer_logprobs(logits, labels, per_token=True)
    sums, picked = naive(logits, labels)
    assert torch.allclose(scored.sums, sums, atol=1e-6)
    assert scored.counts.tolist() == [3, 3, 1]
    assert torch.allclose(scored.tokens, picked, atol=1e-6)
    assert torch.equal(scored.mask, labels[:, 1:] != IGNORE)
    assert torch.allclose(scored.means, sums / torch.tensor([3.0, 3.0, 1.0]))
    # logits kept only from position 1 on (logits_to_keep) give the same numbers for rows answered after it
    kept = answer_logprobs(logits[:2, 1:], {"labels": labels[:2]}, logits_start=1)
    assert torch.allclose(kept.sums, sums[:2], atol=1e-6)
    with pytest.raises(ValueError, match="cannot predict"):  # row 2's answer starts before the kept logits
        answer_logprobs(logits[:, 1:], labels, logits_start=1)


def test_from_the_model_sharing_image_features_equals_the_plain_forward(tmp_path):
    adapter = load_tiny_llava()
    records = example_records("preference", tmp_path, count=2)
    rows = []
    for answer_of in ("chosen", "rejected"):
        for record in records:
            encoded = adapter.encode_conversation(tuple(record.prompt) + (Turn("assistant", getattr(record, answer_of)),))
            prompt = len(adapter.encode_prompt(record.prompt))
            rows.append((encoded["input_ids"], [IGNORE] * prompt + encoded["labels"][prompt:]))
    longest = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [adapter.pad_token_id] * (longest - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [IGNORE] * (longest - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids, _ in rows])
    pixel_values = adapter.load_images([image for r in records for image in r.images])
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "pixel_values": pixel_values}
    with torch.no_grad():
        shared = answer_logprobs(adapter.model, batch, adapter=adapter, image_repeats=2)
        plain = answer_logprobs(adapter.model, batch, image_repeats=2, share_image_features=False)
        outputs = adapter.model(input_ids=input_ids, attention_mask=mask,
                                pixel_values=torch.cat([pixel_values, pixel_values]))
    assert torch.allclose(shared.sums, plain.sums, atol=1e-5)
    assert torch.allclose(shared.sums, naive(outputs.logits, labels)[0], atol=1e-5)
    assert (shared.counts > 0).all()
