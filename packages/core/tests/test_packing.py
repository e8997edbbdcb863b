"""mllm.training.packing: the block mask's rules, rows that hold several sequences, and
answer log-probs of packed and shared-prompt rows equal to those of separate padded rows."""

from __future__ import annotations

import torch
from mllm import Turn, answer_logprobs
from mllm.testing import example_records, load_tiny_llava
from mllm.training.packing import (
    IGNORE_INDEX,
    arrange_rows,
    block_attention_mask,
    collate_units,
    shared_prompt_unit,
    single_unit,
)


def test_the_block_mask_keeps_sequences_and_branches_apart():
    # one row: doc 0 = prompt (0, 1), chosen (2, 3), rejected (4); doc 1 = two tokens; one pad
    docs = torch.tensor([[0, 0, 0, 0, 0, 1, 1, -1]])
    branches = torch.tensor([[0, 0, 1, 1, 2, 0, 0, 0]])
    mask = block_attention_mask(docs, branches)[0, 0]
    assert mask[4].tolist() == [True, True, False, False, True, False, False, False]  # rejected: prompt + itself
    assert mask[3].tolist() == [True, True, True, True, False, False, False, False]  # chosen: prompt + chosen
    assert mask[6].tolist() == [False] * 5 + [True, True, False]  # doc 1 sees only doc 1
    assert mask[7].tolist() == [False] * 7 + [True]  # padding sees only itself (no empty rows)
    additive = block_attention_mask(docs, branches, implementation="eager")[0, 0]
    assert additive[4, 2] == torch.finfo(torch.float32).min and additive[4, 1] == 0


def test_shared_prompt_unit_positions_and_predictors():
    first = {"input_ids": [1, 5, 6, 7, 8], "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7, 8]}
    second = {"input_ids": [1, 5, 6, 9], "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 9]}
    unit = shared_prompt_unit(first, second, (0, 1), prompt_length=3)
    assert unit.input_ids == [1, 5, 6, 7, 8, 9]
    assert unit.positions == [0, 1, 2, 3, 4, 3]  # the rejected answer continues from the prompt
    assert unit.predictors == [-1, -1, -1, 2, 3, 2]  # its first token is predicted by the prompt's last
    assert unit.sequences == [-1, -1, -1, 0, 0, 1]


def test_rows_pack_first_fit_and_never_split_a_sequence():
    rows = arrange_rows([10, 3, 4, 9, 2], pack=True)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert all(sum([10, 3, 4, 9, 2][i] for i in row) <= 20 for row in rows) and len(rows) < 5
    assert arrange_rows([3, 4], pack=False) == [[0], [1]]


def test_packed_and_shared_rows_give_the_separate_rows_log_probs(tmp_path):
    adapter = load_tiny_llava()
    records = example_records("preference", tmp_path, count=3)
    encoded, prompts = [], []
    for answer_of in ("chosen", "rejected"):
        for record in records:
            item = adapter.encode_conversation(tuple(record.prompt) + (Turn("assistant", getattr(record, answer_of)),))
            prompt = len(adapter.encode_prompt(record.prompt))
            encoded.append({"input_ids": item["input_ids"],
                            "labels": [IGNORE_INDEX] * prompt + item["labels"][prompt:]})
            prompts.append(prompt)
    n = len(records)
    longest = max(len(e["input_ids"]) for e in encoded)
    pad = adapter.pad_token_id
    batch = {"input_ids": torch.tensor([e["input_ids"] + [pad] * (longest - len(e["input_ids"])) for e in encoded]),
             "labels": torch.tensor([e["labels"] + [IGNORE_INDEX] * (longest - len(e["labels"])) for e in encoded]),
             "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (longest - len(e["input_ids"]))
                                             for e in encoded]),
             "pixel_values": adapter.load_images([image for r in records for image in r.images])}
    counts = [len(r.images) for r in records]
    firsts = [sum(counts[:i]) for i in range(n)]
    images = [list(range(firsts[i], firsts[i] + counts[i])) for i in range(n)]
    with torch.no_grad():
        expected = answer_logprobs(adapter.model, batch, adapter=adapter, image_repeats=2)
        packed_units = [single_unit(encoded[j], j, images[j % n]) for j in range(2 * n)]
        shared_units = [shared_prompt_unit(encoded[i], encoded[n + i], (i, n + i), images[i], prompt_length=prompts[i])
                        for i in range(n)]
        for units, pack in ((packed_units, True), (shared_units, False), (shared_units, True)):
            rows = collate_units(units, pad, pack=pack, num_sequences=2 * n)
            rows["pixel_values"] = batch["pixel_values"]
            scored = answer_logprobs(adapter.model, rows, adapter=adapter)
            assert torch.equal(scored.counts, expected.counts)
            assert torch.allclose(scored.sums, expected.sums, atol=1e-5, rtol=1e-6)
