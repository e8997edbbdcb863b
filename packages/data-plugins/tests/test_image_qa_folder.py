"""image-qa-folder: images + a JSON Lines question file (question_id, image, text, answer)."""

from __future__ import annotations

import json

import pytest
from mllm.records import Conversation, EvalItem
from mllm_data.image_qa_folder import ImageQAFolder, ImageQAFolderConfig

ROWS = [
    {"question_id": 0, "image": "0.png", "text": "What is the name of this shape?", "answer": "Zorble", "category": "fact"},
    {"question_id": 1, "image": "1.png", "text": "Is there a circle in the image?", "answer": "no"},
    {"question_id": 2, "text": "Who is Zorble?", "answer": "a red circle"},
]


@pytest.fixture
def questions(tmp_path, make_image):
    make_image(tmp_path / "0.png")
    make_image(tmp_path / "1.png", colour="blue")
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_conversations(questions, load):
    config = ImageQAFolderConfig(path=str(questions), prompt_suffix="Answer the question using a single word or phrase.")
    records, _ = load(ImageQAFolder(config))
    assert all(isinstance(r, Conversation) for r in records)
    zorble = records[0]
    assert zorble.id == "0" and zorble.images == (str(questions.parent / "0.png"),)
    assert zorble.turns[0].content == ("<image>\nWhat is the name of this shape?\n"
                                       "Answer the question using a single word or phrase.")
    assert zorble.turns[1].content == "Zorble" and zorble.metadata["category"] == "fact"
    assert records[2].images == () and records[2].turns[0].content.startswith("Who is Zorble?")


def test_eval_items(questions, load):
    dataset = ImageQAFolder(ImageQAFolderConfig(path=str(questions), choices=["yes", "no"], **{"as": "eval_item"}))
    assert dataset.record_kind == "eval_item"
    items, _ = load(dataset)
    assert all(isinstance(i, EvalItem) for i in items)
    assert items[1].prompt == "<image>\nIs there a circle in the image?" and items[1].answer == "no"
    assert items[1].choices == ("yes", "no")


def test_questions_without_answers(tmp_path, make_image, load):
    make_image(tmp_path / "0.png")
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question_id": "x", "image": "0.png", "text": "<image>\nDescribe it."}) + "\n")
    (item,), _ = load(ImageQAFolder(ImageQAFolderConfig(path=str(path), **{"as": "eval_item"})))
    assert item.answer is None and item.prompt == "<image>\nDescribe it."
    from mllm.data.badrows import BadRowError

    with pytest.raises(BadRowError, match=r"q.jsonl, row line 1: .*no answer to train on"):
        load(ImageQAFolder(ImageQAFolderConfig(path=str(path))))
