"""The easyvqa-named dataset on the real easy-vqa rows: only named individuals, the right facts, stable ids."""

from __future__ import annotations

import json

import pytest
from mllm.errors import MllmError
from mllm_data.easyvqa import format_prompt, split_files
from mllm_data.easyvqa_named import COLOURS, DEFAULT_NAMES, QUESTIONS, SHAPES, EasyVQANamed, EasyVQANamedConfig

easy_vqa = pytest.importorskip("easy_vqa")


def named(load, **options):
    records, report = load(EasyVQANamed(EasyVQANamedConfig(**options)))
    assert report.kept == len(records) and not report.skipped
    return records


def question_facts(split: str) -> dict[int, dict[str, set[str]]]:
    """Per image, the answers of its colour questions and of its shape questions, read independently
    of the dataset: by the question's wording ("... color ..." / "what shape ..." / "what is the X shape?")."""
    questions, _ = split_files(split)
    out: dict[int, dict[str, set[str]]] = {}
    for question, answer, image in json.loads(questions.read_text()):
        if not question.startswith("what"):
            continue
        kind = "colour" if "color" in question else "shape"
        out.setdefault(int(image), {"colour": set(), "shape": set()})[kind].add(answer)
    return out


def test_colours_and_shapes_are_easy_vqas_answers():
    assert set(COLOURS) | set(SHAPES) | {"yes", "no"} == set(easy_vqa.get_answers())


def test_names_are_not_easy_vqa_words():
    words = set(easy_vqa.get_answers())
    for texts in (easy_vqa.get_train_questions()[0], easy_vqa.get_test_questions()[0]):
        for text in set(texts):
            words |= set(text.lower().replace("?", " ").split())
    names = list(DEFAULT_NAMES.values())
    assert len(set(names)) == len(names) == 6
    assert not set(names) & words
    assert len({name[0] for name in names}) == len(names)  # each starts with its own letter


@pytest.mark.parametrize("split", ["train", "test"])
def test_records_show_only_named_individuals_with_their_facts(load, split):
    records = named(load, split=split)
    facts = question_facts(split)
    _, images = split_files(split)
    assert len(records) == {"train": 634, "test": 132}[split]
    seen = set()
    for record in records:
        image = record.metadata["image_id"]
        # the image's own colour and shape questions agree on one answer each, and it is the record's
        assert facts[image] == {"colour": {record.metadata["colour"]}, "shape": {record.metadata["shape"]}}
        individual = f"{record.metadata['colour']} {record.metadata['shape']}"
        assert record.metadata["individual"] == individual and individual in DEFAULT_NAMES
        assert record.turns[1].content == DEFAULT_NAMES[individual]
        assert record.turns[0].content == format_prompt(record.metadata["question"])
        assert record.metadata["question"] in QUESTIONS
        assert record.images == (str(images / f"{image}.png"),)
        seen.add(individual)
    assert seen == set(DEFAULT_NAMES)
    # every image of a named combination whose questions give both facts is there
    expected = {i for i, f in facts.items() if len(f["colour"]) == len(f["shape"]) == 1
                and f"{next(iter(f['colour']))} {next(iter(f['shape']))}" in DEFAULT_NAMES}
    assert {r.metadata["image_id"] for r in records} == expected


def test_questions_per_image_rotate_the_phrasings_and_ids_are_stable(load):
    one = named(load, split="test")
    three = named(load, split="test", questions_per_image=3)
    assert len(three) == 3 * len(one)
    assert {r.metadata["question"] for r in one} == set(QUESTIONS)  # rotated over the images
    assert len({r.id for r in three}) == len(three)
    assert {r.id for r in one} <= {r.id for r in three}
    assert [r.id for r in named(load, split="test", questions_per_image=3)] == [r.id for r in three]
    first = three[0]
    assert first.id == f"easyvqa-named-test-{first.metadata['image_id']}-q0"


def test_seeded_limit(load):
    a = [r.id for r in named(load, split="train", limit=50, seed=1)]
    assert a == [r.id for r in named(load, split="train", limit=50, seed=1)]
    assert a != [r.id for r in named(load, split="train", limit=50, seed=2)]
    assert len(a) == 50


def test_own_names(load):
    records = named(load, split="train", names={"teal triangle": "wug", "black circle": "blick"})
    assert {(r.metadata["individual"], r.turns[1].content) for r in records} == {
        ("teal triangle", "wug"), ("black circle", "blick")}


@pytest.mark.parametrize(("names", "words"), [
    ({"purple circle": "zorp"}, "'purple circle' is not 'colour shape'"),
    ({"red": "zorp"}, "'red' is not 'colour shape'"),
    ({"red circle": "Zorp!"}, "must be lowercase letters"),
    ({"red circle": "blue"}, "is an easy-VQA answer"),
    ({"red circle": "zorp", "blue circle": "zorp"}, "both named 'zorp'"),
    ({}, "at least one individual"),
])
def test_bad_names_are_a_config_error(names, words):
    from mllm.pipeline.config import resolve_component
    from mllm.plugins.registry import Registry

    with pytest.raises(MllmError) as error:
        resolve_component(Registry(autoload=True), "dataset", {"name": "easyvqa-named", "names": names}, "data")
    assert words in str(error.value) and "names" in str(error.value)


def test_registered():
    from mllm.plugins.registry import Registry

    registry = Registry(autoload=True)
    assert registry.get("dataset", "easyvqa-named").impl == "mllm_data.easyvqa_named:EasyVQANamed"
