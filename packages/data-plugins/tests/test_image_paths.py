"""Image paths that leave the image folder (issue 19, item 9): ``../``, absolute and
symlinked-out paths are read (LLaVA's data uses them) but counted and listed in
``data_report.json``; ``image_paths: contained`` makes each a bad row under ``on_bad_row``."""

from __future__ import annotations

import json

import pytest
from mllm.data.badrows import BadRowError
from mllm_data.image_qa_folder import ImageQAFolder, ImageQAFolderConfig
from mllm_data.llava_json import LlavaJson, LlavaJsonConfig
from mllm_data.preference import MllmDpoJson, MllmDpoJsonConfig


def row(rid: str, image: str) -> dict:
    return {"id": rid, "image": image, "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                          {"from": "gpt", "value": "red"}]}


@pytest.fixture
def layout(tmp_path, make_image):
    """``images/`` (the image folder) with one image inside and a symlink pointing out of it;
    ``elsewhere/`` beside it holding the images the other rows reach."""
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    make_image(images / "inside.png")
    outside = make_image(elsewhere / "outside.png")
    (images / "link.png").symlink_to(outside)
    rows = [row("in", "inside.png"), row("up", "../elsewhere/outside.png"), row("abs", str(outside)),
            row("link", "link.png")]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, images, outside


def test_paths_leaving_the_image_folder_are_read_but_counted_and_listed(layout, load):
    data, images, outside = layout
    records, report = load(LlavaJson(LlavaJsonConfig(path=str(data), image_folder=str(images))))
    assert [r.id for r in records] == ["in", "up", "abs", "link"]
    summary = report.to_dict()  # what data_report.json holds
    assert summary["images_outside_folder"] == 3
    assert summary["images_outside_folder_first"] == [str(images / "../elsewhere/outside.png"), str(outside),
                                                      str(images / "link.png")]


def test_image_paths_contained_refuses_them_as_bad_rows(layout, load):
    data, images, _ = layout
    config = dict(path=str(data), image_folder=str(images), image_paths="contained")
    with pytest.raises(BadRowError, match=r"line 2: ValueError: image .*outside.png' is outside the image folder "
                                          r".*\(image_paths: contained\)"):
        load(LlavaJson(LlavaJsonConfig(**config)))
    records, report = load(LlavaJson(LlavaJsonConfig(**config, on_bad_row="skip", max_bad_fraction=0.9)))
    assert [r.id for r in records] == ["in"]
    assert [(s.index, s.id) for s in report.skipped] == [(1, "up"), (2, "abs"), (3, "link")]
    assert all("image_paths: contained" in s.reason for s in report.skipped)


def test_every_file_dataset_counts_paths_out_of_its_folder(tmp_path, make_image, load):
    make_image(tmp_path / "images" / "a.png")
    make_image(tmp_path / "b.png")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question_id": i, "image": name, "text": "colour?", "answer": "red"}) + "\n"
                          for i, name in enumerate(["a.png", "../b.png"])))
    _, report = load(ImageQAFolder(ImageQAFolderConfig(path=str(qa), image_folder=str(tmp_path / "images"))))
    assert report.images_outside_folder == 1
    dpo = tmp_path / "dpo.json"
    dpo.write_text(json.dumps([{"id": i, "image": name, "question": "colour?", "chosen": "red", "rejected": "blue"}
                               for i, name in enumerate(["a.png", "../b.png"])]))
    records, report = load(MllmDpoJson(MllmDpoJsonConfig(path=str(dpo), image_folder=str(tmp_path / "images"),
                                                         image_paths="contained", on_bad_row="skip",
                                                         max_bad_fraction=0.5)))
    assert len(records) == 1 and report.images_outside_folder == 1 and report.skipped[0].row == "row 1"
