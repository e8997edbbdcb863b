"""The evaluation engine on a tiny LLaVA trained for a few seconds on easy-VQA.

The model is trained with a plain torch loop (not the project's trainer) so that its
answers are real: they differ between questions and mostly match the gold answer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("easy_vqa")

from mllm.data.badrows import DataReport  # noqa: E402
from mllm.generation.engine import AnswerEngine  # noqa: E402
from mllm.models.llava.adapter import LlavaAdapter, LlavaModelConfig  # noqa: E402
from mllm.records import EvalItem, Turn  # noqa: E402

TINY = dict(init="tiny", image_size=32, patch_size=8, vision_hidden_size=32, vision_intermediate_size=64,
            text_hidden_size=64, text_intermediate_size=128, heads=4, tokenizer_corpus="easyvqa")
TRAIN_STEPS, TRAIN_BATCH = 150, 12


def _batch(adapter, records):
    encoded = [adapter.encode_conversation(r) for r in records]
    width = max(len(e["input_ids"]) for e in encoded)
    ids = torch.full((len(records), width), adapter.pad_token_id)
    labels = torch.full((len(records), width), -100)
    mask = torch.zeros((len(records), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask,
            "pixel_values": adapter.load_images([r.images[0] for r in records])}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, two threads spin against other processes
    (10x slower here); the answers do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread):
    """A tiny LLaVA after a few seconds of plain-torch training on easy-VQA train questions."""
    from mllm_data.easyvqa import EasyVQA, EasyVQAConfig

    adapter = LlavaAdapter.from_config(LlavaModelConfig(**TINY), seed=0)
    records = list(EasyVQA(EasyVQAConfig(split="train", limit=TRAIN_STEPS * TRAIN_BATCH, seed=0))
                   .records(DataReport("easyvqa")))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(adapter.model.parameters(), lr=3e-3)
    adapter.model.train()
    for step in range(TRAIN_STEPS):
        loss = adapter.model(**_batch(adapter, records[step * TRAIN_BATCH:(step + 1) * TRAIN_BATCH])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    adapter.model.eval()
    return adapter


@pytest.fixture(scope="module")
def items():
    from mllm_eval.easyvqa import EasyVQABenchConfig, EasyVQABenchmark

    return EasyVQABenchmark(EasyVQABenchConfig(split="test", limit=48, seed=1)).items()


def test_batched_and_one_at_a_time_greedy_answers_are_identical(trained, items):
    single = AnswerEngine(trained, batch_size=1, max_new_tokens=6).answer(items)
    batched = AnswerEngine(trained, batch_size=16, max_new_tokens=6).answer(items)
    odd = AnswerEngine(trained, batch_size=7, max_new_tokens=6).answer(items)
    assert list(single) == [item.id for item in items]
    assert single == batched == odd
    # the answers are real: they differ between questions and are mostly right
    counts = Counter(single.values())
    assert len(counts) >= 3, counts
    assert {"yes", "no"} <= set(counts), counts
    accuracy = sum(single[item.id] == item.answer for item in items) / len(items)
    assert accuracy >= 0.6, (accuracy, counts)


def test_padding_does_not_change_the_numbers(trained, items):
    """Left padding, the mask and position ids are right: a padded row's scores equal its unpadded scores.

    What remains is rounding of differently shaped matrix products (~1e-6), far from
    anything that could flip a greedy answer."""
    engine = AnswerEngine(trained, batch_size=16)
    jobs = [engine.planner.choice_job(item.id, item) for item in items[:16]]
    assert len({len(job.prefix) for job in jobs}) > 1  # the batch really is padded
    with torch.inference_mode():
        together = engine.choices.scores_first_token(jobs)
        alone = [engine.choices.scores_first_token([job])[0] for job in jobs]
    for a, b in zip(together, alone):
        assert a == pytest.approx(b, abs=1e-4)


def _plain_generate(adapter, item, max_new_tokens):
    """Plain transformers: one question, pixel values, ``model.generate`` -- no engine, no caches."""
    ids = torch.tensor([adapter.encode_prompt(item.prompt)])
    with torch.inference_mode():
        out = adapter.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     pixel_values=adapter.load_images(list(item.images)),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=adapter.eos_token_id, pad_token_id=adapter.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if adapter.eos_token_id in new:
        new = new[:new.index(adapter.eos_token_id)]
    return adapter.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_prompt_caches_do_not_change_answers(trained):
    """Questions about the same image reuse its cached prompt start; the answers equal those
    without any cache and those of plain ``model.generate``."""
    from mllm_eval.easyvqa import EasyVQABenchConfig, EasyVQABenchmark

    same_images = EasyVQABenchmark(EasyVQABenchConfig(split="test")).items()[:30]  # file order: ~3 images
    engine = AnswerEngine(trained, batch_size=8, max_new_tokens=6)
    cached = engine.answer(same_images)
    images = len({item.images for item in same_images})
    assert engine.stats["prompt_prefixes_computed"] == images < len(same_images)
    assert engine.stats["images_encoded"] == images
    uncached = AnswerEngine(trained, batch_size=8, max_new_tokens=6, kv_cache_bytes=0).answer(same_images)
    assert cached == uncached
    assert cached == {item.id: _plain_generate(trained, item, 6) for item in same_images}
    chosen = AnswerEngine(trained, batch_size=8).answer(same_images, mode="choice")
    assert chosen == AnswerEngine(trained, batch_size=8, kv_cache_bytes=0).answer(same_images, mode="choice")


def test_choice_scoring_returns_a_choice_and_agrees_with_generation(trained, items):
    generated = AnswerEngine(trained, batch_size=16, max_new_tokens=6).answer(items)
    chosen = AnswerEngine(trained, batch_size=16).answer(items, mode="choice")
    chosen_single = AnswerEngine(trained, batch_size=1).answer(items, mode="choice")
    assert chosen == chosen_single
    for item in items:
        assert chosen[item.id] in item.choices
    agree = sum(chosen[i.id] == generated[i.id] for i in items) / len(items)
    assert agree >= 0.8, agree


def _naive_logprob(adapter, item, choice):
    """log P(answer tokens | prompt) from one plain forward pass over prompt + answer."""
    encoded = adapter.encode_conversation((Turn("user", item.prompt), Turn("assistant", choice)))
    ids = torch.tensor([encoded["input_ids"]])
    labels = torch.tensor(encoded["labels"][1:])
    with torch.inference_mode():
        logits = adapter.model(input_ids=ids, pixel_values=adapter.load_images(item.images)).logits[0, :-1]
    logprobs = torch.log_softmax(logits.float(), -1)
    keep = labels != -100
    return float(logprobs[keep].gather(-1, labels[keep][:, None]).sum())


def test_choices_sharing_a_first_token_are_scored_in_full(trained, items):
    """Choices that start alike need their whole continuation: the tree pass scores all of
    them in one forward pass, equal to scoring each sequence on its own."""
    base = [i for i in items if i.metadata["question_type"] == "open"][:3] + \
           [i for i in items if i.metadata["question_type"] == "yes/no"][:3]
    shared = [EvalItem(id=f"{i.id}-x", prompt=i.prompt, images=i.images, answer=i.answer,
                       choices=("blue", "blue shape", "yes", "yes it is", "red", "no")) for i in base]
    engine = AnswerEngine(trained, batch_size=4)
    jobs = [engine.planner.choice_job(item.id, item) for item in shared]
    assert not any(job.first_token_only for job in jobs)
    with torch.inference_mode():
        scores = engine.choices.scores_tree(jobs)
    for item, row in zip(shared, scores):
        naive = [_naive_logprob(trained, item, choice) for choice in item.choices]
        assert row == pytest.approx(naive, abs=1e-3)
    answers = engine.answer(shared, mode="choice")
    singles = AnswerEngine(trained, batch_size=1).answer(shared, mode="choice")
    assert answers == singles
    for item, row in zip(shared, scores):
        assert answers[item.id] == item.choices[max(range(len(row)), key=row.__getitem__)]


class _CountPrefill:
    """Counts the prompts the model reads: rows of multi-token forward calls that end with
    the prompt's last token (the assistant's cue). Decoding steps are single tokens, and
    cached prompt starts (shared text prefix, prefix through the image) end elsewhere."""

    def __init__(self, adapter, last_token):
        self.last_token = last_token
        self.rows = 0
        self.handle = adapter.model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            self.rows += int((ids[:, -1] == self.last_token).sum())

    def close(self):
        self.handle.remove()


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("mode", ["generate", "choice"])
def test_interrupted_evaluation_resumes_with_only_the_missing_items(trained, items, tmp_path, mode):
    cache = tmp_path / "answer_cache.jsonl"
    settings = dict(batch_size=4, max_new_tokens=6, cache_path=cache, model_fingerprint="fp-1")
    reference = AnswerEngine(trained, batch_size=8, max_new_tokens=6).answer(items, mode=mode)

    def stop_after_two_batches(done, total):
        if done >= 8:
            raise Interrupted

    counter = _CountPrefill(trained, trained.encode_prompt(items[0].prompt)[-1])
    try:
        with pytest.raises(Interrupted):
            AnswerEngine(trained, on_batch=stop_after_two_batches, **settings).answer(items, mode=mode)
        assert counter.rows == 8
        assert len(cache.read_text().splitlines()) == 8  # flushed as it went

        counter.rows = 0
        resumed = AnswerEngine(trained, **settings)
        answers = resumed.answer(items, mode=mode)
        assert counter.rows == len(items) - 8
        assert resumed.stats["cached"] == 8 and resumed.stats["computed"] == len(items) - 8
        assert answers == reference

        counter.rows = 0
        again = AnswerEngine(trained, **settings)
        assert again.answer(items, mode=mode) == reference
        assert counter.rows == 0 and again.stats["computed"] == 0

        # another model (fingerprint) or other generation settings are not served from the cache
        other = AnswerEngine(trained, **{**settings, "model_fingerprint": "fp-2"})
        other.answer(items[:5], mode=mode)
        assert other.stats["computed"] == 5
    finally:
        counter.close()


def test_cache_survives_a_line_cut_short(trained, items, tmp_path):
    cache = tmp_path / "answer_cache.jsonl"
    engine = AnswerEngine(trained, batch_size=8, max_new_tokens=4, cache_path=cache, model_fingerprint="fp")
    first = engine.answer(items[:8])
    with open(cache, "a") as handle:
        handle.write('{"key": "abc", "answ')  # killed mid-write
    later = AnswerEngine(trained, batch_size=8, max_new_tokens=4, cache_path=cache, model_fingerprint="fp")
    answers = later.answer(items[:12])
    assert later.stats["cached"] == 8 and later.stats["computed"] == 4
    assert {k: answers[k] for k in first} == first
    for line in cache.read_text().splitlines()[-4:]:
        assert json.loads(line)["answer"] == answers[json.loads(line)["id"]]


def test_greedy_sampling_decodes_as_the_engine_does(trained, items):
    """SampleGenerator at temperature 0 shares the engine's decoding (stops, padding, the cut),
    so it gives the engine's answers (without the engine's prompt caches)."""
    from mllm.generation.sampling import Prompt, SampleGenerator

    engine = AnswerEngine(trained, batch_size=5, max_new_tokens=6).answer(items[:12])
    prompts = [Prompt(item.id, (Turn("user", item.prompt),), tuple(item.images), item.answer) for item in items[:12]]
    sampled = SampleGenerator(trained, max_new_tokens=6, batch_size=5).answer(prompts)
    assert sampled == {k: [v] for k, v in engine.items()}


def test_no_stage_runs_its_own_decoding_loop():
    """One generation engine: stages call AnswerEngine or SampleGenerator, never ``model.generate``."""
    import mllm.stages

    stages = Path(mllm.stages.__file__).parent
    offenders = [f"{path.name}:{number}" for path in sorted(stages.glob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), start=1)
                 if ".generate(" in line or "GenerationConfig" in line]
    assert offenders == []


def test_max_new_tokens_changes_the_cache_key(trained, items, tmp_path):
    cache = tmp_path / "c.jsonl"
    AnswerEngine(trained, batch_size=8, max_new_tokens=4, cache_path=cache).answer(items[:4])
    engine = AnswerEngine(trained, batch_size=8, max_new_tokens=2, cache_path=cache)
    engine.answer(items[:4])
    assert engine.stats["computed"] == 4


def test_eval_stage_in_a_pipeline(tmp_path):
    """``kind: eval`` through the runner: answers.jsonl, metrics.json, and a re-run is skipped."""
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins.registry import Registry

    registry = Registry()
    data = {
        "name": "evaltest",
        "model": {"name": "llava", **TINY},
        "stages": [{"id": "eval", "kind": "eval", "batch_size": 8,
                    "benchmarks": [{"name": "easyvqa", "limit": 12},
                                   {"name": "easyvqa", "limit": 12, "answer_mode": "choice"}]}],
    }
    pipeline = load_pipeline(None, registry, data=data)
    assert pipeline.stage("eval").config.inputs() == ["init"]
    runner = PipelineRunner(pipeline, registry, runs_dir=tmp_path)
    runner.run()
    stage_dir = tmp_path / "evaltest" / "eval"
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert set(metrics) == {"init"} and set(metrics["init"]) == {"easyvqa", "easyvqa_2"}
    assert set(metrics["init"]["easyvqa"]) >= {"accuracy", "yesno_accuracy", "open_accuracy", "pope_f1"}
    lines = [json.loads(line) for line in (stage_dir / "init" / "easyvqa_2" / "answers.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and set(lines[0]) >= {"id", "prompt", "answer", "gold"}
    assert all(line["answer"] in ("yes", "no") or line["answer"][0].isalpha() for line in lines)

    plans = PipelineRunner(load_pipeline(None, registry, data=data), registry, runs_dir=tmp_path).run()
    assert [p.action for p in plans if p.stage_id == "eval"] == ["skip"]

    # an interrupted stage (no completion marker, half its answers cached) resumes: only
    # the missing answers are computed, and the results are the same
    cache = stage_dir / "init" / "easyvqa" / "answer_cache.jsonl"
    cached = cache.read_text().splitlines()
    cache.write_text("\n".join(cached[:5]) + "\n")
    (stage_dir / "COMPLETE").unlink()
    (stage_dir / "metrics.json").unlink()
    plans = PipelineRunner(load_pipeline(None, registry, data=data), registry, runs_dir=tmp_path).run()
    assert [p.action for p in plans if p.stage_id == "eval"] == ["resume"]
    assert json.loads((stage_dir / "metrics.json").read_text()) == metrics
    assert sorted(cache.read_text().splitlines()) == sorted(cached)  # 5 kept + 7 recomputed, none twice
    log = (stage_dir / "log.txt").read_text()
    assert "init on easyvqa: 12 answers (5 from the cache, 7 computed" in log


def test_eval_stage_config():
    from mllm.stages.evaluate import EvalStageConfig

    config = EvalStageConfig.model_validate({"id": "e", "kind": "eval", "from": "sft",
                                             "benchmarks": [{"name": "easyvqa"}]})
    assert config.inputs() == ["sft"] and config.batch_size == 32 and config.max_new_tokens is None
    config = EvalStageConfig.model_validate({"id": "e", "kind": "eval", "models": ["init", "sft"],
                                             "benchmarks": [{"name": "easyvqa"}]})
    assert config.inputs() == ["init", "sft"]
    with pytest.raises(ValueError):
        EvalStageConfig.model_validate({"id": "e", "kind": "eval", "benchmarks": []})
