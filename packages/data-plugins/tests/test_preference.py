"""Preference datasets: mllm-dpo's JSON (with reference log-probs) and the HF / TRL format
(standard and conversational rows, JSON Lines and save_to_disk folders), bad rows."""

from __future__ import annotations

import json

import pytest
from mllm.data.badrows import BadRowError, DataReport
from mllm_data.preference import HFPreference, HFPreferenceConfig, MllmDpoJson, MllmDpoJsonConfig


def load(dataset, config):
    report = DataReport(source="t", on_bad_row=config.on_bad_row, max_bad_fraction=config.max_bad_fraction)
    records = list(dataset(config).records(report))
    report.finish()
    return records, report


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (8, 8), "red").save(folder / name)
    return folder


def test_mllm_dpo_json_rows_and_reference_logps(tmp_path, images):
    rows = [
        {"id": "x1", "image": "a.jpg", "question": "What colour is it?", "chosen": "Red.", "rejected": "Blue.",
         "ref_win_logp": -3.5, "ref_rej_logp": -7.25},
        {"image": "b.jpg", "question": "<image>\nIs it red?", "chosen": "Yes.", "rejected": "No."},
        {"question": "Text only?", "chosen": "Yes.", "rejected": "No.", "source": "x"},
    ]
    path = tmp_path / "dpo.json"
    path.write_text(json.dumps(rows))
    records, _ = load(MllmDpoJson, MllmDpoJsonConfig(path=str(path), image_folder=str(images)))
    assert [r.id for r in records] == ["x1", "1", "2"]
    assert records[0].prompt[0].content == "<image>\nWhat colour is it?"
    assert records[0].reference_logps == (-3.5, -7.25)
    assert records[1].prompt[0].content == "<image>\nIs it red?" and records[1].reference_logps is None
    assert records[2].images == () and records[2].metadata == {"source": "x"}
    ignored, _ = load(MllmDpoJson, MllmDpoJsonConfig(path=str(path), image_folder=str(images),
                                                     use_reference_logps=False))
    assert ignored[0].reference_logps is None


def test_mllm_dpo_json_bad_rows(tmp_path, images):
    rows = [
        {"image": "a.jpg", "question": "Q?", "chosen": "A", "rejected": "B"},
        {"image": "missing.jpg", "question": "Q?", "chosen": "A", "rejected": "B"},
        {"image": "a.jpg", "question": "Q?", "chosen": "  ", "rejected": "B"},
        {"image": "a.jpg", "question": "Q?", "chosen": "Same", "rejected": "Same"},
    ]
    path = tmp_path / "dpo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(BadRowError, match="line 2"):
        load(MllmDpoJson, MllmDpoJsonConfig(path=str(path), image_folder=str(images)))
    records, report = load(MllmDpoJson, MllmDpoJsonConfig(path=str(path), image_folder=str(images),
                                                          on_bad_row="skip", max_bad_fraction=0.8))
    assert len(records) == 1
    reasons = [s.reason for s in report.skipped]
    assert "does not exist" in reasons[0] and "empty" in reasons[1] and "same answer" in reasons[2]


def test_hf_preference_standard_and_conversational_jsonl(tmp_path, images):
    rows = [
        {"prompt": "What colour is it?", "chosen": "Red.", "rejected": "Blue.", "images": ["a.jpg"],
         "ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0},
        {"id": "conv", "images": ["b.jpg"],
         "prompt": [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is it red?"}]}],
         "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Yes."}]}],
         "rejected": [{"role": "assistant", "content": "No."}]},
    ]
    path = images / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records, _ = load(HFPreference, HFPreferenceConfig(path=str(path)))
    first, second = records
    assert first.prompt[0].content == "<image>\nWhat colour is it?" and first.reference_logps == (-1.0, -2.0)
    assert first.images[0].endswith("images/a.jpg")
    assert second.id == "conv" and second.prompt[0].content == "Be brief.\n<image>\nIs it red?"
    assert (second.chosen, second.rejected) == ("Yes.", "No.")


def test_hf_preference_save_to_disk_with_decoded_images_and_bad_rows(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    data = datasets.Dataset.from_dict({
        "prompt": ["Colour?", "Shape?", "Size?"],
        "chosen": ["Red.", "", "Big."],
        "rejected": ["Blue.", "Square.", "Big."],
        "images": [[Image.new("RGB", (8, 8), "red")], [Image.new("RGB", (8, 8), "blue")],
                   [Image.new("RGB", (8, 8), "green")]],
    }, features=datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Value("string"),
                                   "rejected": datasets.Value("string"),
                                   "images": datasets.Sequence(datasets.Image())}))
    folder = tmp_path / "ds"
    data.save_to_disk(str(folder))
    config = HFPreferenceConfig(path=str(folder), image_cache=str(tmp_path / "cache"), on_bad_row="skip",
                                max_bad_fraction=0.9)
    records, report = load(HFPreference, config)
    assert len(records) == 1 and len(report.skipped) == 2
    assert records[0].images[0].startswith(str(tmp_path / "cache"))
    with pytest.raises(BadRowError):
        load(HFPreference, HFPreferenceConfig(path=str(folder), image_cache=str(tmp_path / "cache")))
