"""rejection-sampling and steerlm on attribute-scored candidates; seeded sampling."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from mllm.records import Conversation, Turn
from mllm_align.rejection_sampling import RejectionSampling, RejectionSamplingConfig
from mllm_align.steerlm.attributes import split_steer
from mllm_align.steerlm.method import SteerLM, SteerLMConfig, steer_records

TINY = dict(tokenizer_corpus="easyvqa", image_size=16, patch_size=8, vision_hidden_size=16, vision_layers=1, vision_intermediate_size=32,
            text_hidden_size=32, text_layers=1, text_intermediate_size=64, heads=2, vocab_size=300)


def candidate(source, sample, aggregate, answer=None):
    attributes = None if aggregate is None else {"helpfulness": min(4, aggregate // 3), "correctness": 2,
                                                 "coherence": 1, "complexity": 0, "verbosity": 3}
    return Conversation(id=f"{source}-s{sample}",
                        turns=(Turn("user", "<image>\nDescribe the image in one sentence."),
                               Turn("assistant", answer or f"Answer {sample} of {source}.")),
                        images=("img.png",), check_files=False,
                        metadata={"source_id": source, "sample": sample, "gold": "The image shows a red circle.",
                                  "attributes": attributes, "aggregate": aggregate, "score": aggregate})


@pytest.fixture
def candidates():
    return [candidate("a", 0, 5), candidate("a", 1, 8, "Long answer here."), candidate("a", 2, 8, "Short."),
            candidate("b", 0, None), candidate("b", 1, 4), candidate("c", 0, None)]


def context_for(records, tmp_path):
    return SimpleNamespace(records=list(records), stage_dir=tmp_path, logger=logging.getLogger("test"))


@pytest.mark.parametrize("ties, min_score, expected", [
    ("first", None, ["a-s1", "b-s1"]),
    ("shortest", None, ["a-s2", "b-s1"]),
    ("longest", None, ["a-s1", "b-s1"]),
    ("all", None, ["a-s1", "a-s2", "b-s1"]),
    ("first", 5, ["a-s1"]),
    ("all", 8, ["a-s1", "a-s2"]),
])
def test_rejection_sampling_keeps_the_best(candidates, tmp_path, ties, min_score, expected):
    method = RejectionSampling(RejectionSamplingConfig(ties=ties, min_score=min_score))
    context = context_for(candidates, tmp_path)
    method.prepare(context)
    assert [r.id for r in context.records] == expected
    assert method.history[0]["prompts"] == 3 and method.history[0]["unscored"] == 2
    assert (tmp_path / "rounds.json").is_file()


def test_rejection_sampling_ranks_by_any_rules_score(tmp_path):
    """Candidates scored by a rule that writes no attributes (e.g. length) rank by metadata.score."""
    records = [Conversation(id=f"a-s{i}", turns=(Turn("user", "Q"), Turn("assistant", "x" * n)), check_files=False,
                            metadata={"source_id": "a", "sample": i, "score": float(n), "correct": True})
               for i, n in enumerate([3, 9, 5])]
    context = context_for(records, tmp_path)
    RejectionSampling(RejectionSamplingConfig()).prepare(context)
    assert [r.id for r in context.records] == ["a-s1"]


def test_rejection_sampling_with_nothing_kept_says_why(candidates, tmp_path):
    with pytest.raises(ValueError, match="no candidate kept"):
        RejectionSampling(RejectionSamplingConfig(min_score=11)).prepare(context_for(candidates, tmp_path))


def test_steerlm_conditions_each_candidate_on_its_attributes(candidates, tmp_path):
    records, counts = steer_records(candidates)
    assert counts == {"kept": 4, "unscored": 2, "below_min": 0, "gold": 0}
    for record, source in zip(records, [c for c in candidates if c.metadata["attributes"]]):
        user, attributes = split_steer(record.turns[0].content)
        assert user == source.turns[0].content and attributes == source.metadata["attributes"]
        assert record.turns[-1] == source.turns[-1]
    records, counts = steer_records(candidates, min_aggregate=6, include_gold=True)
    assert counts == {"kept": 2, "unscored": 2, "below_min": 2, "gold": 1}
    assert records[-1].turns[-1].content == "The image shows a red circle."
    assert split_steer(records[-1].turns[0].content)[1] == {k: 4 for k in records[-1].metadata["steer"]}
    method = SteerLM(SteerLMConfig())
    context = context_for([candidates[3]], tmp_path)
    with pytest.raises(ValueError, match="no scored candidates"):
        method.prepare(context)


def test_steerlm_collates_the_conditioned_prompt(candidates, tmp_path):
    from mllm.models.llava.adapter import LlavaAdapter
    from mllm.models.llava.config import LlavaModelConfig
    from PIL import Image

    image = tmp_path / "img.png"
    Image.new("RGB", (16, 16), "red").save(image)
    adapter = LlavaAdapter.from_config(LlavaModelConfig(**TINY), seed=0)
    method = SteerLM(SteerLMConfig())
    method.setup(adapter)
    scored = [Conversation(id=c.id, turns=c.turns, images=(str(image),), metadata=c.metadata, check_files=False)
              for c in candidates]
    context = context_for(scored, tmp_path)
    method.prepare(context)
    batch = method.collate(context.records[:2])
    text = adapter.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert "Likert scale" in text and "Verbosity: 3" in text
    # labels only on the answer: the steering text is prompt, not learned
    learned = batch["labels"][0][batch["labels"][0] != -100]
    assert "Likert" not in adapter.tokenizer.decode(learned)


def test_seeded_sampling_is_reproducible(tmp_path):
    from mllm.generation.sampling import Prompt, SampleGenerator
    from mllm.models.llava.adapter import LlavaAdapter
    from mllm.models.llava.config import LlavaModelConfig
    from PIL import Image

    prompts = []
    for i, colour in enumerate(["red", "blue", "green"]):
        image = tmp_path / f"{i}.png"
        Image.new("RGB", (16, 16), colour).save(image)
        prompts.append(Prompt(f"p{i}", (Turn("user", "<image>\nDescribe the image."),), (str(image),), None))
    adapter = LlavaAdapter.from_config(LlavaModelConfig(**TINY), seed=0)

    def sample(seed, cache=None, batch_size=3):
        return SampleGenerator(adapter, num_samples=3, temperature=1.0, seed=seed, max_new_tokens=6,
                               batch_size=batch_size, cache_path=cache).answer(prompts)

    first = sample(7)
    assert sample(7) == first  # same seed, same samples
    assert sample(8) != first  # another seed, other samples
    assert all(len(answers) == 3 for answers in first.values())
    cached = sample(7, cache=tmp_path / "cache.jsonl")
    assert cached == first and sample(7, cache=tmp_path / "cache.jsonl") == first
