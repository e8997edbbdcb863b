"""The easyvqa-named benchmark on the real easy-vqa rows: new (test) images of the named individuals; scoring."""

from __future__ import annotations

import json

import pytest
from mllm.records import EvalItem
from mllm_eval._io import ScoreInputError
from mllm_eval.easyvqa_named import EasyVQANamedBenchConfig, EasyVQANamedBenchmark, score_answers

pytest.importorskip("easy_vqa")


def bench(**options) -> EasyVQANamedBenchmark:
    return EasyVQANamedBenchmark(EasyVQANamedBenchConfig(**options))


def split_images(split: str) -> tuple[str, set[int]]:
    from mllm_data import split_files

    questions, images = split_files(split)
    return str(images), {int(row[2]) for row in json.loads(questions.read_text())}


def test_items_are_new_images_of_the_named_individuals():
    from mllm_data.easyvqa_named import DEFAULT_NAMES

    items = bench().items()
    assert len(items) == 3 * 132 and len({i.id for i in items}) == len(items)
    test_folder, test_ids = split_images("test")
    train_folder, _ = split_images("train")
    names = tuple(DEFAULT_NAMES.values())
    for item in items:
        assert item.images[0].startswith(test_folder + "/") and not item.images[0].startswith(train_folder)
        assert item.metadata["image_id"] in test_ids and item.id.startswith("easyvqa-named-test-")
        assert item.answer == DEFAULT_NAMES[item.metadata["individual"]]
        assert item.choices == names  # one closed set for every item: it tells nothing about the image
        assert item.prompt.startswith("<image>\n") and item.prompt.endswith(
            "\nAnswer the question using a single word or phrase.")


def test_items_are_the_datasets_test_records():
    from mllm.data.badrows import DataReport
    from mllm_data import EasyVQANamed, EasyVQANamedConfig

    names = {"teal triangle": "wug", "black circle": "blick"}
    items = bench(limit=20, seed=3, questions_per_image=2, names=names).items()
    records = list(EasyVQANamed(EasyVQANamedConfig(split="test", limit=20, seed=3, questions_per_image=2,
                                                   names=names)).records(DataReport("x")))
    assert [(i.id, i.prompt, i.answer, i.images) for i in items] == [
        (r.id, r.turns[0].content, r.turns[1].content, r.images) for r in records]
    assert len(items) == 20 and items[0].choices == ("wug", "blick")


def item(i: int, gold: str) -> EvalItem:
    return EvalItem(id=str(i), prompt="<image>\nWho is this?", images=("x.png",), answer=gold, check_files=False)


def test_exact_match_after_normalising():
    golds = ["zorp", "mib", "talu", "kiv", "dax", "fen", "zorp", "mib"]
    answers = ["Zorp.", " MIB! ", "talu", "kiv is it", "zorp", "f e n", "zorpp", "mib"]
    metrics = score_answers([item(i, g) for i, g in enumerate(golds)], {str(i): a for i, a in enumerate(answers)})
    # hits: Zorp. / MIB! / talu / mib; misses: extra words, a wrong name, split letters, a typo
    assert metrics == {"accuracy": pytest.approx(4 / 8), "count": 8.0}
    assert set(metrics) == set(EasyVQANamedBenchmark.metric_keys)


def test_every_item_needs_an_answer():
    with pytest.raises(ScoreInputError, match="1 of 2"):
        score_answers([item(0, "zorp"), item(1, "mib")], {"0": "zorp"})


def test_registered():
    from mllm.plugins.registry import Registry

    spec = Registry(autoload=True).get("benchmark", "easyvqa-named")
    assert spec.impl == "mllm_eval.easyvqa_named:EasyVQANamedBenchmark"
