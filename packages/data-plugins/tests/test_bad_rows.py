"""Broken rows of each kind, in each file-format dataset: the error (on_bad_row: error) or the
data_report.json entry (on_bad_row: skip) names the file and the row."""

from __future__ import annotations

import json

import pytest
from mllm.data.badrows import BadRowError
from mllm_data.image_qa_folder import ImageQAFolder, ImageQAFolderConfig
from mllm_data.llava_json import LlavaJson, LlavaJsonConfig
from mllm_data.scienceqa import ScienceQA, ScienceQAConfig

GOOD = {"id": "good", "image": "ok.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                           {"from": "gpt", "value": "red"}]}

# kind -> (the bad JSON Lines line, words the reason must contain)
BROKEN = {
    "missing image": (json.dumps({**GOOD, "id": "b1", "image": "nowhere.png"}), "nowhere.png' does not exist"),
    "malformed JSON line": ('{"id": "b2", "conversations": [', "malformed JSON line"),
    "empty conversation": (json.dumps({"id": "b3", "conversations": []}), "empty conversation"),
    "wrong role order": (json.dumps({"id": "b4", "conversations": [{"from": "gpt", "value": "hi"},
                                                                   {"from": "human", "value": "q"}]}),
                         "turn 0 has role 'assistant' but 'user' was expected"),
    "image count mismatch": (json.dumps({**GOOD, "id": "b5", "conversations": [
        {"from": "human", "value": "<image>\n<image>\ntwo?"}, {"from": "gpt", "value": "a"}]}),
        "2 <image> placeholder(s) in the conversation but 1 image(s)"),
    "over-long row": (json.dumps({"id": "b6", "conversations": [{"from": "human", "value": "q" * 500},
                                                                {"from": "gpt", "value": "a"}]}),
                      "over-long: 501 characters"),
    "unreadable image": (json.dumps({**GOOD, "id": "b7", "image": "broken.png"}), "broken.png' cannot be read"),
}


@pytest.fixture
def data_dir(tmp_path, make_image):
    make_image(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    return tmp_path


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_llava_json_error_names_file_and_row(data_dir, load, kind):
    bad, reason = BROKEN[kind]
    path = write_lines(data_dir / "train.jsonl", [json.dumps(GOOD), bad, json.dumps(GOOD)])
    config = LlavaJsonConfig(path=str(path), max_chars=200)
    with pytest.raises(BadRowError) as caught:
        load(LlavaJson(config))
    message = str(caught.value)
    assert message.startswith(f"{path}, row line 2: ") and reason in message
    assert "on_bad_row: skip" in message  # says how to go on


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_llava_json_skip_lists_file_and_row(data_dir, load, kind):
    bad, reason = BROKEN[kind]
    path = write_lines(data_dir / "train.jsonl", [json.dumps(GOOD), bad, json.dumps(GOOD)])
    config = LlavaJsonConfig(path=str(path), max_chars=200, on_bad_row="skip", max_bad_fraction=0.5)
    records, report = load(LlavaJson(config))
    assert len(records) == 2 and report.total == 3
    (entry,) = report.skipped
    assert entry.file == str(path) and entry.row == "line 2" and reason in entry.reason
    written = data_dir / "data_report.json"
    report.write(written)
    record_id = json.loads(bad)["id"] if kind != "malformed JSON line" else None
    assert json.loads(written.read_text())["skipped"][0] == {"file": str(path), "row": "line 2", "index": 1,
                                                             "id": record_id, "reason": entry.reason}


def test_json_list_rows_are_numbered_and_bad_fraction_stops(data_dir, load):
    rows = [GOOD, {"id": "x", "conversations": []}, {"id": "y", "conversations": []}]
    path = data_dir / "train.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(BadRowError, match=r"train.json, row row 1: ValueError: empty conversation"):
        load(LlavaJson(LlavaJsonConfig(path=str(path))))
    with pytest.raises(BadRowError, match=r"2 of 3 rows are bad .* first: .*train.json, row row 1"):
        load(LlavaJson(LlavaJsonConfig(path=str(path), on_bad_row="skip", max_bad_fraction=0.5)))


def test_broken_json_file_names_file_and_position(data_dir, load):
    path = data_dir / "train.json"
    path.write_text('[{"id": 1,\n "conversations": [}]')
    with pytest.raises(ValueError, match=r"train.json: not valid JSON .* line 2"):
        load(LlavaJson(LlavaJsonConfig(path=str(path))))


def test_image_qa_folder_bad_rows(data_dir, load):
    path = write_lines(data_dir / "questions.jsonl", [
        json.dumps({"question_id": 0, "image": "ok.png", "text": "colour?", "answer": "red"}),
        json.dumps({"question_id": 1, "image": "gone.png", "text": "colour?", "answer": "red"}),
        "{not json",
        json.dumps({"question_id": 3, "image": "ok.png", "text": "<image> <image> two?", "answer": "a"}),
        json.dumps({"question_id": 4, "text": "x" * 300, "answer": "a"}),
    ])
    config = ImageQAFolderConfig(path=str(path), max_chars=100, on_bad_row="skip", max_bad_fraction=1.0)
    records, report = load(ImageQAFolder(config))
    assert [r.id for r in records] == ["0"]
    assert [(s.file, s.row) for s in report.skipped] == [(str(path), f"line {n}") for n in (2, 3, 4, 5)]
    reasons = [s.reason for s in report.skipped]
    assert "gone.png' does not exist" in reasons[0] and "malformed JSON line" in reasons[1]
    assert "2 <image> placeholder(s) in 'text' but 1 image(s)" in reasons[2] and "over-long" in reasons[3]


def test_scienceqa_bad_rows(tmp_path, load):
    problems = {
        "1": {"question": "q?", "choices": ["a", "b"], "answer": 0, "hint": "", "image": "image.png",
              "lecture": "", "solution": "", "split": "train"},
        "2": {"question": "q?" * 200, "choices": ["a", "b"], "answer": 1, "hint": "", "image": None,
              "lecture": "", "solution": "", "split": "train"},
        "3": {"question": "q?", "choices": ["a", "b"], "answer": 5, "hint": "", "image": None,
              "lecture": "", "solution": "", "split": "train"},
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"train": ["1", "2", "3", "4"]}))
    config = ScienceQAConfig(root=str(tmp_path), max_chars=100, on_bad_row="skip", max_bad_fraction=1.0)
    records, report = load(ScienceQA(config))
    assert records == []
    rows = {s.row: s for s in report.skipped}
    assert set(rows) == {"pid 1", "pid 2", "pid 3", "pid 4"}
    assert all(s.file == str(tmp_path / "problems.json") for s in report.skipped)
    assert "images/train/1/image.png' does not exist" in rows["pid 1"].reason
    assert "over-long" in rows["pid 2"].reason and "not an index" in rows["pid 3"].reason
    assert "is not in problems.json" in rows["pid 4"].reason


# -- files that are torn or not UTF-8 (issue 19, item 2) ---------------------------------------------------------


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_a_non_utf8_jsonl_line_costs_one_row_not_the_run(data_dir, load, policy):
    path = data_dir / "train.jsonl"
    latin1 = json.dumps({**GOOD, "id": "café"}, ensure_ascii=False).encode("latin-1")
    path.write_bytes(b"\n".join([json.dumps(GOOD).encode(), latin1, json.dumps(GOOD).encode()]) + b"\n")
    config = LlavaJsonConfig(path=str(path), on_bad_row=policy, max_bad_fraction=0.5)
    if policy == "error":
        with pytest.raises(BadRowError) as caught:
            load(LlavaJson(config))
        assert str(caught.value).startswith(f"{path}, row line 2: ") and "not UTF-8 text (byte 0xe9" in str(caught.value)
        return
    records, report = load(LlavaJson(config))
    assert len(records) == 2 and report.total == 3
    (entry,) = report.skipped
    assert entry.row == "line 2" and "not UTF-8 text" in entry.reason and "save the file as UTF-8" in entry.reason


_WITH_ACCENT = json.dumps([GOOD, {**GOOD, "id": "é"}], ensure_ascii=False).encode()
TORN_IN_A_CHARACTER = _WITH_ACCENT[:_WITH_ACCENT.index("é".encode()) + 1]


@pytest.mark.parametrize("content, words", [
    # a copy cut off inside a two-byte character: neither UTF-8 nor JSON
    (TORN_IN_A_CHARACTER, "not UTF-8 text (byte 0xc3"),
    (json.dumps([GOOD, {**GOOD, "id": "café"}], ensure_ascii=False).encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    (json.dumps([GOOD, GOOD]).encode()[:-30], "not valid JSON"),
])
def test_a_torn_or_non_utf8_json_file_is_an_error_naming_the_file(data_dir, load, content, words):
    from mllm import InputFileError

    path = data_dir / "train.json"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as caught:
        load(LlavaJson(LlavaJsonConfig(path=str(path), on_bad_row="skip", max_bad_fraction=1.0)))
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value)


# -- decompression bombs and row ids in data_report.json (issue 19, items 4 and 8) ------------------------------


def png_header(path, width: int, height: int):
    """A PNG that claims ``width x height`` pixels: only its header (a few dozen bytes), which is
    all PIL reads before refusing it as a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_a_decompression_bomb_image_is_a_bad_row(data_dir, load, policy):
    png_header(data_dir / "bomb.png", 20000, 20000)
    path = write_lines(data_dir / "train.jsonl", [json.dumps(GOOD), json.dumps({**GOOD, "id": "boom",
                                                                                "image": "bomb.png"})])
    config = LlavaJsonConfig(path=str(path), on_bad_row=policy, max_bad_fraction=0.5)
    if policy == "error":
        with pytest.raises(BadRowError, match=r"train.jsonl, row line 2: .*bomb.png' is too large to decode safely"):
            load(LlavaJson(config))
        return
    records, report = load(LlavaJson(config))
    assert [record.id for record in records] == ["good"]
    (entry,) = report.skipped
    assert entry.id == "boom" and "400000000 pixels" in entry.reason


def test_data_report_names_each_skipped_row_by_index_and_id(data_dir, load):
    rows = [GOOD, {"id": "no-turns", "conversations": []}, {"conversations": []}, {**GOOD, "id": "b7", "image": "x.png"}]
    path = data_dir / "train.json"
    path.write_text(json.dumps(rows))
    config = LlavaJsonConfig(path=str(path), on_bad_row="skip", max_bad_fraction=1.0)
    _, report = load(LlavaJson(config))
    written = data_dir / "data_report.json"
    report.write(written)
    listed = [(entry["index"], entry["id"], entry["row"]) for entry in json.loads(written.read_text())["skipped"]]
    # a row without an id of its own gets the one its record would have had (<file stem>-<index>)
    assert listed == [(1, "no-turns", "row 1"), (2, "train-2", "row 2"), (3, "b7", "row 3")]

    lines = write_lines(data_dir / "train.jsonl", [json.dumps(GOOD), "{torn", json.dumps({**GOOD, "id": "b7",
                                                                                          "image": "x.png"})])
    _, report = load(LlavaJson(LlavaJsonConfig(path=str(lines), on_bad_row="skip", max_bad_fraction=1.0)))
    # a line that is not JSON has no id to give
    assert [(entry.index, entry.id, entry.row) for entry in report.skipped] == [(1, None, "line 2"), (2, "b7", "line 3")]
