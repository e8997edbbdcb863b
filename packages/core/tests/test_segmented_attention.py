"""mllm.training.segmented_attention: block-by-block attention over packed rows equals sdpa
with the 4D block mask (forward and gradients, shared-prompt pairs and grouped-query
heads included), is transformers' sdpa itself without a layout, and leaves no trace in a
saved model's config."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from mllm.testing import load_tiny_llava
from mllm.training.packing import block_attention_mask, packed_model_inputs
from mllm.training.segmented_attention import (
    IMPLEMENTATION,
    LAYOUT_KEYWORD,
    Block,
    blocks_of,
    segmented_attention,
    use_segmented_attention,
)

# two rows: row 0 = a shared-prompt pair (prompt 3, chosen 2, rejected 2), then a 3-token
# sequence, then padding; row 1 = one 5-token sequence, a prompt-less pair side, padding
DOCS = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1],
                     [0, 0, 0, 0, 0, 1, 1, 1, -1, -1, -1, -1]])
BRANCHES = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])


# two shared-prompt pairs of different lengths (their batched rejected blocks are padded)
DOCS_2 = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1],
                       [0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1]])
BRANCHES_2 = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 0],
                           [0, 0, 1, 2, 2, 2, 2, 2, 0, 0, 0, 0]])


def test_blocks_follow_documents_and_branches():
    assert blocks_of(DOCS, BRANCHES) == (
        Block(0, 0, 5), Block(0, 5, 7, prefix=(0, 3)), Block(0, 7, 10), Block(1, 0, 5), Block(1, 5, 8))


def _masked_reference(query, key, value, heads_per_group, docs, branches):
    mask = block_attention_mask(docs, branches)
    key, value = (t.repeat_interleave(heads_per_group, dim=1) for t in (key, value))
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("docs, branches", [(DOCS, BRANCHES), (DOCS_2, BRANCHES_2)])
def test_segmented_equals_the_block_mask_forward_and_backward(docs, branches):
    torch.manual_seed(0)
    module = SimpleNamespace(training=False)
    for kv_heads in (4, 2):  # plain and grouped-query heads
        query = torch.randn(2, 4, 12, 8, requires_grad=True)
        key = torch.randn(2, kv_heads, 12, 8, requires_grad=True)
        value = torch.randn(2, kv_heads, 12, 8, requires_grad=True)
        ours, _ = segmented_attention(module, query, key, value, None,
                                      **{LAYOUT_KEYWORD: blocks_of(docs, branches)})
        reference = _masked_reference(query, key, value, 4 // kv_heads, docs, branches)
        real = (docs >= 0)[:, :, None, None]  # padding rows: zeros here, never read by a label
        assert torch.allclose(ours * real, reference * real, atol=1e-6)
        weights = torch.randn_like(reference) * real
        grads = torch.autograd.grad((ours * weights).sum(), (query, key, value))
        expected = torch.autograd.grad((reference * weights).sum(), (query, key, value))
        for got, want in zip(grads, expected, strict=True):
            assert torch.allclose(got, want, atol=1e-5)


def test_without_a_layout_it_is_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(1)
    module = SimpleNamespace(training=False, is_causal=True)
    query, key, value = (torch.randn(2, 2, 6, 8) for _ in range(3))
    ours, _ = segmented_attention(module, query, key, value, None)
    theirs, _ = sdpa_attention_forward(module, query, key, value, None)
    assert torch.equal(ours, theirs)


def test_a_packed_forward_switches_the_language_model_and_saving_forgets_it(tmp_path, monkeypatch):
    adapter = load_tiny_llava()
    model = adapter.model
    batch = {"input_ids": torch.zeros(1, 4, dtype=torch.long), "position_ids": torch.arange(4)[None],
             "doc_ids": torch.tensor([[0, 0, 1, 1]]), "branch_ids": torch.zeros(1, 4, dtype=torch.long)}
    monkeypatch.setenv("MLLM_PACKED_ATTENTION", "mask")
    assert packed_model_inputs(model, batch, pixel_values=False)["attention_mask"].shape == (1, 1, 4, 4)
    assert model.config.text_config._attn_implementation == "sdpa"
    monkeypatch.delenv("MLLM_PACKED_ATTENTION")
    inputs = packed_model_inputs(model, batch, pixel_values=False)
    assert inputs["attention_mask"] is None and inputs[LAYOUT_KEYWORD] == (Block(0, 0, 2), Block(0, 2, 4))
    assert model.config.text_config._attn_implementation == IMPLEMENTATION
    assert model.config.vision_config._attn_implementation == "sdpa"  # images are never packed
    assert use_segmented_attention(model)  # idempotent
    model.save_pretrained(tmp_path)
    assert IMPLEMENTATION not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
