"""ORPO: the odds-ratio term prefers chosen answers; one vision pass serves both answers."""

import math

import torch
from mllm.testing import example_records, load_tiny_llava
from mllm_example.orpo import ORPO, ORPOConfig


def test_loss_is_nll_plus_weighted_odds_ratio_term(tmp_path):
    records = example_records("preference", tmp_path, count=2)
    without = ORPO(ORPOConfig(lambda_=0.0))
    with_term = ORPO(ORPOConfig(lambda_=0.5))
    adapter = load_tiny_llava()
    model = without.setup(adapter)
    with_term.setup(adapter)
    batch = without.collate(records)
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[0] == 2
    loss0, metrics0 = without.loss(model, batch)
    loss1, metrics1 = with_term.loss(model, batch)
    assert math.isclose(float(loss0.detach()), metrics0["nll"], rel_tol=1e-5)
    assert math.isclose(float(loss1.detach()), metrics1["nll"] + 0.5 * metrics1["odds_ratio_loss"], rel_tol=1e-5)


def test_training_raises_the_chosen_log_odds(tmp_path):
    torch.manual_seed(0)
    records = example_records("preference", tmp_path, count=2)
    method = ORPO(ORPOConfig(lambda_=1.0))
    model = method.setup(load_tiny_llava())
    batch = method.collate(records)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    first = None
    for _ in range(15):
        loss, metrics = method.loss(model, batch)
        first = metrics["log_odds_ratio"] if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert metrics["log_odds_ratio"] > first
