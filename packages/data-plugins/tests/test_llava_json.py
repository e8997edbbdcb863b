"""llava-json: LLaVA's conversation files as they are distributed."""

from __future__ import annotations

import json

import pytest
from mllm.records import Conversation, EvalItem
from mllm_data.llava_json import LlavaJson, LlavaJsonConfig

# rows in the exact shape of llava_v1_5_mix665k.json (string image, text-only, multi-turn)
ROWS = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "oJ8AVAh_0", "model": "", "conversations": [
        {"from": "human", "value": "Write a haiku about rain."},
        {"from": "gpt", "value": "Soft rain on the roof"}]},
    {"id": "two-images", "image": ["a.png", "b.png"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhich one is red?"},
        {"from": "gpt", "value": "The first."}]},
]


@pytest.fixture
def folder(tmp_path, make_image):
    make_image(tmp_path / "images" / "coco" / "train2017" / "000000033471.jpg")
    make_image(tmp_path / "images" / "a.png")
    make_image(tmp_path / "images" / "b.png", colour="blue")
    return tmp_path


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_reads_llava_rows(folder, load, suffix):
    path = folder / f"data.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(ROWS, indent=2))
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    dataset = LlavaJson(LlavaJsonConfig(path=str(path), image_folder=str(folder / "images")))
    records, report = load(dataset)
    assert report.total == report.kept == 3 and not report.skipped
    bus, text_only, two = records
    assert isinstance(bus, Conversation) and bus.id == "000000033471"
    assert [t.role for t in bus.turns] == ["user", "assistant", "user", "assistant"]
    assert bus.turns[0].content == "<image>\nWhat are the colors of the bus in the image?"
    assert bus.images == (str(folder / "images" / "coco" / "train2017" / "000000033471.jpg"),)
    assert text_only.images == () and text_only.metadata["model"] == ""
    assert len(two.images) == 2 and two.images[1].endswith("b.png")
    assert LlavaJson.data_files(dataset.config) == [path]


def test_image_folder_defaults_to_the_files_folder(tmp_path, make_image, load):
    make_image(tmp_path / "x.png")
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": 1, "image": "x.png", "conversations": [
        {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}]))
    (record,), _ = load(LlavaJson(LlavaJsonConfig(path=str(path))))
    assert record.id == "1" and record.images == (str(tmp_path / "x.png"),)


def test_seeded_limit(folder, load):
    path = folder / "many.json"
    path.write_text(json.dumps([{"id": i, "conversations": [{"from": "human", "value": f"q{i}"},
                                                            {"from": "gpt", "value": f"a{i}"}]} for i in range(50)]))
    first, _ = load(LlavaJson(LlavaJsonConfig(path=str(path), limit=10, seed=3)))
    again, _ = load(LlavaJson(LlavaJsonConfig(path=str(path), limit=10, seed=3)))
    other, _ = load(LlavaJson(LlavaJsonConfig(path=str(path), limit=10, seed=4)))
    ids = [r.id for r in first]
    assert ids == [r.id for r in again] and ids != [r.id for r in other]
    assert len(ids) == 10 and ids == sorted(ids, key=int)  # file order kept


def test_llava_scienceqa_question_file_in_place(cqm_a_file, load):
    """LLaVA's llava_test_CQM-A.json (images are not shipped: check_images off)."""
    records, report = load(LlavaJson(LlavaJsonConfig(path=str(cqm_a_file), check_images=False)))
    assert len(records) == report.kept == 4241
    with_images = [r for r in records if r.images]
    assert len(with_images) == 2017
    first = records[0]
    assert first.id == "4" and first.turns[1].content == "B" and first.images == ()
    assert with_images[0].images == (str(cqm_a_file.parent / "5" / "image.png"),)
    items, _ = load(LlavaJson(LlavaJsonConfig(path=str(cqm_a_file), check_images=False, **{"as": "eval_item"})))
    assert all(isinstance(i, EvalItem) for i in items) and items[0].answer == "B"
    assert {i.answer for i in items} <= set("ABCDE")


def test_as_eval_item_and_images_checked(folder, load):
    path = folder / "d.json"
    path.write_text(json.dumps(ROWS[:1]))
    dataset = LlavaJson(LlavaJsonConfig(path=str(path), image_folder=str(folder / "images"), **{"as": "eval_item"}))
    assert dataset.record_kind == "eval_item"
    (item,), _ = load(dataset)
    assert item.prompt.startswith("<image>\nWhat are the colors") and item.answer.startswith("The bus")
