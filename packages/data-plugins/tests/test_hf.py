"""hf: a Hugging Face datasets dataset saved with save_to_disk."""

from __future__ import annotations

import sys

import pytest
from mllm.data.badrows import BadRowError
from mllm.records import EvalItem

datasets = pytest.importorskip("datasets", reason="the hf dataset needs the optional extra mllm-data[hf]")

from mllm_data.hf import HFDataset, HFDatasetConfig  # noqa: E402


@pytest.fixture
def qa_disk(tmp_path):
    from PIL import Image

    images = [Image.new("RGB", (20, 12), c) for c in ("red", "green", "blue")]
    data = datasets.Dataset.from_dict({
        "qid": ["q0", "q1", "q2"], "image": images, "question": ["What colour?", "What colour?", "Shape?"],
        "answer": ["red", "green", "square"], "category": ["colour", "colour", "shape"],
    }).cast_column("image", datasets.Image())
    path = tmp_path / "qa"
    datasets.DatasetDict({"train": data, "test": data.select([2])}).save_to_disk(str(path))
    return path


def test_question_answer_columns_with_decoded_images(qa_disk, tmp_path, load):
    config = HFDatasetConfig(path=str(qa_disk), split="train", columns={"id": "qid"}, metadata=["category"],
                             image_cache=str(tmp_path / "cache"))
    records, report = load(HFDataset(config))
    assert report.kept == 3
    first = records[0]
    assert first.id == "q0" and first.turns[0].content == "<image>\nWhat colour?" and first.turns[1].content == "red"
    assert first.metadata["category"] == "colour"
    from PIL import Image

    with Image.open(first.images[0]) as image:
        assert image.size == (20, 12) and image.getpixel((0, 0)) == (255, 0, 0)
    test, _ = load(HFDataset(HFDatasetConfig(path=str(qa_disk), split="test", columns={"id": "qid"},
                                             image_cache=str(tmp_path / "cache2"), **{"as": "eval_item"})))
    assert isinstance(test[0], EvalItem) and test[0].answer == "square"
    assert HFDataset.data_files(config) == [qa_disk]


def test_llava_shaped_rows_with_image_paths(tmp_path, make_image, load):
    make_image(tmp_path / "imgs" / "a.png")
    data = datasets.Dataset.from_list([
        {"id": "a", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                        {"from": "gpt", "value": "ans"}]},
        {"id": "b", "image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                              {"from": "gpt", "value": "ans"}]},
    ])
    data.save_to_disk(str(tmp_path / "ds"))
    config = HFDatasetConfig(path=str(tmp_path / "ds"), image_folder=str(tmp_path / "imgs"))
    with pytest.raises(BadRowError, match=r"ds, row row 1: .*missing.png"):
        load(HFDataset(config))
    records, report = load(HFDataset(config.model_copy(update={"on_bad_row": "skip", "max_bad_fraction": 0.5})))
    assert [r.id for r in records] == ["a"] and records[0].images == (str(tmp_path / "imgs" / "a.png"),)
    assert report.skipped[0].row == "row 1" and "missing.png" in report.skipped[0].reason


def test_missing_columns_and_split_are_explained(qa_disk, load):
    with pytest.raises(ValueError, match="split 'validation' not found; splits are"):
        load(HFDataset(HFDatasetConfig(path=str(qa_disk), split="validation")))
    with pytest.raises(ValueError, match="needs a 'conversations' column"):
        load(HFDataset(HFDatasetConfig(path=str(qa_disk), split="train", columns={"question": "nope"})))


def test_missing_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the library were not installed
    with pytest.raises(ImportError, match=r"mllm-data\[hf\]"):
        HFDataset(HFDatasetConfig(path=str(tmp_path)))
