"""The easyvqa dataset on the real easy-vqa package rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mllm.data.badrows import BadRowError, DataReport
from mllm.records import Conversation
from mllm_data.easyvqa import EasyVQA, EasyVQAConfig, format_prompt

pytest.importorskip("easy_vqa")


def load(**options) -> tuple[list[Conversation], DataReport]:
    config = EasyVQAConfig(**options)
    report = DataReport(source="easyvqa", on_bad_row=config.on_bad_row, max_bad_fraction=config.max_bad_fraction)
    records = list(EasyVQA(config).records(report))
    report.finish()
    return records, report


@pytest.mark.parametrize(("split", "count"), [("train", 38_575), ("test", 9_673)])
def test_full_split_counts(split, count):
    records, report = load(split=split)
    assert len(records) == count
    assert report.total == report.kept == count and not report.skipped
    assert len({r.id for r in records}) == count


def test_records_are_valid_conversations():
    records, _ = load(split="test", limit=50)
    for record in records:
        assert isinstance(record, Conversation)
        assert [t.role for t in record.turns] == ["user", "assistant"]
        question = record.metadata["question"]
        assert record.turns[0].content == f"<image>\n{question}\nAnswer the question using a single word or phrase."
        assert record.turns[1].content == record.metadata["answer"]
        assert len(record.images) == 1 and Path(record.images[0]).is_file()
        assert Path(record.images[0]).name == f"{record.metadata['image_id']}.png"
    # the first test question, read straight from the package
    first, _ = load(split="test", limit=None)
    questions_file = EasyVQA.data_files(EasyVQAConfig(split="test"))[0]
    question, answer, image_id = json.loads(questions_file.read_text())[0]
    assert first[0].turns[0].content == format_prompt(question)
    assert first[0].turns[1].content == answer
    assert first[0].images[0].endswith(f"test/images/{image_id}.png")


def test_seeded_limit_is_reproducible():
    a, _ = load(split="train", limit=100, seed=3)
    b, _ = load(split="train", limit=100, seed=3)
    c, _ = load(split="train", limit=100, seed=4)
    assert [r.id for r in a] == [r.id for r in b]
    assert [r.id for r in a] != [r.id for r in c]
    assert len(a) == 100
    indices = [int(r.id.rsplit("-", 1)[1]) for r in a]
    assert indices == sorted(indices)  # file order kept


def test_data_files_exist_and_are_fingerprinted():
    questions, images = EasyVQA.data_files(EasyVQAConfig(split="test"))
    assert questions.name == "questions.json" and questions.is_file()
    assert images.is_dir() and len(list(images.glob("*.png"))) == 1000


def test_config_rejects_unknown_keys_and_splits():
    with pytest.raises(ValueError):
        EasyVQAConfig(split="validation")
    with pytest.raises(ValueError):
        EasyVQAConfig(limt=3)


def test_bad_row_follows_policy(tmp_path, monkeypatch):
    import mllm_data.easyvqa as module

    questions, images = module.split_files("test")
    rows = json.loads(questions.read_text())[:5]
    rows[2] = ["is there a shape?", "yes", 99_999]  # an image that does not exist
    bad = tmp_path / "questions.json"
    bad.write_text(json.dumps(rows))
    monkeypatch.setattr(module, "split_files", lambda split: (bad, images))
    with pytest.raises(BadRowError, match="row 2"):
        load(split="test")
    records, report = load(split="test", on_bad_row="skip", max_bad_fraction=0.5)
    assert len(records) == 4 and report.skipped[0].row == "2"


def test_registered_through_the_plugin():
    from mllm.plugins.registry import Registry

    spec = Registry().get("dataset", "easyvqa")
    assert spec.load() is EasyVQA and spec.load_config() is EasyVQAConfig
