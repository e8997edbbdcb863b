"""The answer engine, sampling and the eval stage on Qwen2-VL with ``dynamic_resolution: true``.

Two images of different sizes (6 and 4 image tokens) on a briefly trained tiny model:
batched greedy answers equal one-at-a-time answers and a plain greedy loop of full
forwards (so ``generate`` gets each image's grid and M-RoPE ids); each choice's score equals
the log-prob of its own plain forward; greedy sampling decodes as the engine does; an eval
stage runs end to end through the pipeline runner and writes its answers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mllm import Turn  # noqa: E402
from mllm.records import EvalItem  # noqa: E402
from mllm_models.adapter import Qwen2VLAdapter  # noqa: E402
from PIL import Image  # noqa: E402

SIZES = ((48, 32), (20, 70))  # (width, height): 6 and 4 image tokens (tiny patch 8, merge 2)
COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200)}
QUESTION = "<image>\nWhat colour is the square?"
PROMPTS = (QUESTION, "<image>\nName the colour.", "Look: <image>\nWhich colour?")
CHOICES = ("red", "blue", "red square", "blue square")  # shared first tokens: scored in full
DYNAMIC = {"dynamic_resolution": True, "min_pixels": 256, "max_pixels": 64 * 64}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


def _image(size, colour):
    width, height = size
    image = Image.new("RGB", size, (250, 250, 250))
    image.paste(Image.new("RGB", (width // 2, height // 2), colour), (width // 4, height // 4))
    return image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dynamic-resolution qwen2-vl trained briefly to name the colour, and image files."""
    from mllm_align import pad_encoded

    folder = tmp_path_factory.mktemp("dynamic_engine")
    cls = Qwen2VLAdapter
    adapter = cls.from_config(cls.config_class(**{**cls.example_config(folder), **DYNAMIC}), seed=0)
    paths = {}
    for size in SIZES:
        for name, colour in COLOURS.items():
            paths[(size, name)] = str(folder / f"{name}_{size[0]}x{size[1]}.png")
            _image(size, colour).save(paths[(size, name)])
    examples = [(path, name) for (_, name), path in paths.items()]
    encoded = [adapter.encode_conversation([Turn("user", QUESTION), Turn("assistant", name)], images=[path])
               for path, name in examples]
    batch = pad_encoded(encoded, adapter.pad_token_id)
    batch.update(adapter.image_inputs([path for path, _ in examples]))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(adapter.model.parameters(), lr=3e-3)
    adapter.model.train()
    for _ in range(40):
        adapter.model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    adapter.model.eval()
    return adapter, paths


def _items(paths, choices=CHOICES):
    return [EvalItem(id=f"{name}-{size[0]}x{size[1]}-{i}", prompt=prompt, images=(path,), answer=name,
                     choices=choices)
            for (size, name), path in paths.items() for i, prompt in enumerate(PROMPTS)]


def _greedy_loop(adapter, item, max_new_tokens):
    """Greedy decoding by hand: a full forward per token with the image's own inputs."""
    from mllm.generation.decoding import stop_ids

    ids = adapter.encode_prompt((Turn("user", item.prompt),), images=list(item.images))
    inputs = adapter.image_inputs(list(item.images))
    stops = stop_ids(adapter)
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = adapter.model(input_ids=torch.tensor([ids + new]), **inputs).logits[0, -1]
            token = int(logits.argmax())
            if token in stops:
                break
            new.append(token)
    return adapter.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_batched_answers_equal_one_at_a_time_and_a_plain_greedy_loop(trained, caplog):
    from mllm.generation.engine import AnswerEngine

    adapter, paths = trained
    items = _items(paths)
    with caplog.at_level("INFO", logger="mllm.generation.prefix_cache"):
        single_engine = AnswerEngine(adapter, batch_size=1, max_new_tokens=4)
    assert "per-image inputs" in caplog.text
    counts = {single_engine.planner.prompt_ids(item).count(adapter.image_token_id) for item in items}
    assert counts == {6, 4}  # the two sizes really take different token counts
    single = single_engine.answer(items)
    batched = AnswerEngine(adapter, batch_size=4, max_new_tokens=4).answer(items)  # mixed sizes per batch
    assert single == batched
    assert {single[item.id] for item in items if item.prompt == QUESTION} == {"red", "blue"}, single
    for item in items[::3]:
        assert single[item.id] == _greedy_loop(adapter, item, 4), item.id


def test_generate_gets_each_images_m_rope_ids(trained):
    """The engine's ``generate`` inputs (left-padded rows, ``image_inputs`` of images of two sizes):
    every step's logits equal a full forward of the row alone (M-RoPE ids from its own grid)."""
    from mllm.generation.decoding import generation_config, left_pad, per_image_inputs, stop_ids

    adapter, paths = trained
    items = [item for item in _items(paths) if item.prompt == PROMPTS[2]][1:3]  # 48x32 blue, 20x70 red
    rows = [adapter.encode_prompt((Turn("user", item.prompt),), images=list(item.images)) for item in items]
    assert len(rows[0]) != len(rows[1])  # so one row is padded
    ids, mask = left_pad(rows, adapter.pad_token_id, "cpu")
    stops = stop_ids(adapter)
    with torch.inference_mode():
        out = adapter.model.generate(input_ids=ids, attention_mask=mask, output_logits=True,
                                     return_dict_in_generate=True,
                                     generation_config=generation_config(adapter, stops, max_new_tokens=3),
                                     **per_image_inputs(adapter, [item.images[0] for item in items], "cpu"))
        for row, item in enumerate(items):
            new = out.sequences[row, ids.shape[1]:].tolist()
            inputs = adapter.image_inputs(list(item.images))
            for step in range(len(new)):
                alone = adapter.model(input_ids=torch.tensor([rows[row] + new[:step]]), **inputs).logits[0, -1]
                torch.testing.assert_close(out.logits[step][row], alone, rtol=0, atol=1e-4)
                if new[step] in stops:
                    break


def _own_logprob(adapter, item, choice):
    encoded = adapter.encode_conversation((Turn("user", item.prompt), Turn("assistant", choice)),
                                          images=list(item.images))
    ids = torch.tensor([encoded["input_ids"]])
    labels = torch.tensor(encoded["labels"][1:])
    with torch.inference_mode():
        logits = adapter.model(input_ids=ids, **adapter.image_inputs(list(item.images))).logits[0, :-1]
    logprobs = torch.log_softmax(logits.float(), -1)
    keep = labels != -100
    return logprobs[keep].gather(-1, labels[keep][:, None])[:, 0].tolist()


def test_each_choice_score_equals_its_own_forward(trained):
    from mllm.generation.engine import AnswerEngine

    adapter, paths = trained
    items = _items(paths)
    engine = AnswerEngine(adapter, batch_size=4)
    assert not engine.choices.tree_masks_supported()
    jobs = [engine.planner.choice_job(item.id, item) for item in items]
    with torch.inference_mode():
        full = engine.choices.scores_rows(jobs)
        first = engine.choices.scores_first_token(jobs)
    for item, row, first_row in zip(items, full, first):
        own = [_own_logprob(adapter, item, choice) for choice in item.choices]
        assert row == pytest.approx([sum(tokens) for tokens in own], abs=1e-4)
        assert first_row == pytest.approx([tokens[0] for tokens in own], abs=1e-4)
    # through answer(): one row per choice in batches of mixed sizes, and first-token jobs
    two = _items(paths, choices=("red", "blue"))
    for cases in (items, two):
        single = AnswerEngine(adapter, batch_size=1).answer(cases, mode="choice")
        assert single == AnswerEngine(adapter, batch_size=3).answer(cases, mode="choice")
    # first tokens decide ("red", "blue" differ in theirs): the trained colours come back
    assert {single[item.id] for item in two if item.prompt == QUESTION} == {"red", "blue"}, single


def test_greedy_sampling_decodes_as_the_engine_does(trained):
    from mllm.generation.engine import AnswerEngine
    from mllm.generation.sampling import Prompt, SampleGenerator

    adapter, paths = trained
    items = _items(paths)
    engine = AnswerEngine(adapter, batch_size=4, max_new_tokens=4).answer(items)
    prompts = [Prompt(item.id, (Turn("user", item.prompt),), item.images, None) for item in items]
    greedy = SampleGenerator(adapter, max_new_tokens=4, batch_size=4).answer(prompts)
    assert greedy == {item_id: [answer] for item_id, answer in engine.items()}
    sampled = SampleGenerator(adapter, num_samples=2, temperature=1.0, max_new_tokens=3, batch_size=3).answer(prompts)
    assert all(len(answers) == 2 for answers in sampled.values())


def test_eval_and_generate_stages_run_end_to_end(trained, tmp_path, answer_stages):
    """``kind: eval`` (generate and choice benchmarks) and ``kind: generate`` (greedy and sampled,
    one prompt multi-turn) through the pipeline runner with a dynamic-resolution model."""
    from mllm import Conversation

    _, paths = trained
    records = [Conversation(id=f"q{i}", turns=(Turn("user", QUESTION), Turn("assistant", name)), images=(path,))
               for i, ((_, name), path) in enumerate(paths.items())]
    records.append(Conversation(id="multi", images=(records[0].images[0],),
                                turns=(Turn("user", QUESTION), Turn("assistant", "red"), Turn("user", "Sure?"),
                                       Turn("assistant", "yes"))))
    answer_stages(tmp_path, {"name": "qwen2-vl", **Qwen2VLAdapter.example_config(tmp_path), **DYNAMIC}, records,
                  limit=6)


def test_serving_answers_as_the_engine_does(trained):
    """The server's batcher (greedy one-turn requests: the engine; multi-turn: the sampler) with
    images of two sizes in one batch: the eval engine's answers, prompt tokens counted per image."""
    from pathlib import Path

    from mllm.generation.engine import AnswerEngine
    from mllm.serving.batching import Batcher, Decoding
    from mllm.serving.prompts import ChatPrompt

    adapter, paths = trained
    items = [item for item in _items(paths) if item.prompt == QUESTION]
    expected = AnswerEngine(adapter, batch_size=4, max_new_tokens=4).answer(items)
    batcher = Batcher(adapter, max_batch=8, wait_ms=200)
    try:
        prompts = [ChatPrompt((Turn("user", item.prompt),), (Path(item.images[0]),)) for item in items]
        futures = [batcher.submit(prompt, Decoding(max_tokens=4)) for prompt in prompts]
        two_turns = ChatPrompt((Turn("user", "Hello."), Turn("assistant", "Hi."), Turn("user", QUESTION)),
                               (Path(items[0].images[0]),))
        futures.append(batcher.submit(two_turns, Decoding(max_tokens=3)))
        completions = [future.result(timeout=120) for future in futures]
    finally:
        batcher.close()
    assert [c.texts for c in completions[:-1]] == [[expected[item.id]] for item in items]
    assert [c.prompt_tokens for c in completions[:-1]] == [
        len(adapter.encode_prompt((Turn("user", item.prompt),), images=list(item.images))) for item in items]
    assert len({c.prompt_tokens for c in completions[:-1]}) == 2  # 6 and 4 image tokens
    assert len(completions[-1].texts) == 1
