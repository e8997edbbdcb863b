"""Records validate themselves; the bad-row policy."""

from __future__ import annotations

import pytest
from mllm.data.badrows import BadRowError, DataReport
from mllm.records import Conversation, EvalItem, Preference, RecordError, Turn


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


def test_valid_conversation(image):
    record = Conversation("r1", [Turn("user", "<image>\nWhat?"), Turn("assistant", "A circle.")], [image])
    assert record.turns[1].content == "A circle."


def test_no_turns():
    with pytest.raises(RecordError, match="'r1': no turns"):
        Conversation("r1", [])


def test_wrong_role_order():
    with pytest.raises(RecordError, match="'r2': turn 1 has role 'user' but 'assistant'"):
        Conversation("r2", [Turn("user", "a"), Turn("user", "b")])


def test_conversation_must_end_with_an_answer():
    with pytest.raises(RecordError, match="last turn must be the assistant"):
        Conversation("r3", [Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")])


def test_placeholder_count_must_match_images(image):
    with pytest.raises(RecordError, match="'r4': 0 <image> placeholder.* but 1 image"):
        Conversation("r4", [Turn("user", "What?"), Turn("assistant", "x")], [image])
    with pytest.raises(RecordError, match="2 <image> placeholder"):
        EvalItem("r5", "<image><image> What?", images=[image])


def test_missing_image_file(tmp_path):
    with pytest.raises(RecordError, match="image file .*nope.png.* does not exist"):
        EvalItem("r6", "<image> What?", images=[tmp_path / "nope.png"])


def test_preference_needs_both_answers():
    with pytest.raises(RecordError, match="'rejected' answer is empty"):
        Preference("p1", [Turn("user", "q")], chosen="yes", rejected=" ")


def test_eval_item_choices():
    item = EvalItem("e1", "Is it red?", answer="yes", choices=["yes", "no"])
    assert item.choices == ("yes", "no")
    with pytest.raises(RecordError, match="empty choices"):
        EvalItem("e2", "q", choices=[])


def test_data_report_error_policy_names_file_and_row():
    report = DataReport(source="demo")
    with pytest.raises(BadRowError, match=r"rows.json, row 7: RecordError: record 'x': no turns.*on_bad_row: skip"):
        with report.row(file="rows.json", row=7):
            Conversation("x", [])


def test_data_report_skip_policy_and_fraction():
    report = DataReport(source="demo", on_bad_row="skip", max_bad_fraction=0.5)
    for index in range(4):
        with report.row(file="rows.json", row=index):
            if index == 1:
                raise KeyError("conversations")
    report.finish()
    assert (report.total, report.kept, len(report.skipped)) == (4, 3, 1)
    assert report.skipped[0].reason == "KeyError: 'conversations'"
    report.skip(file="rows.json", row=2, reason="image fails to decode")
    assert (report.total, report.kept, len(report.skipped)) == (4, 2, 2)
    report.finish()
    report.skip(file="rows.json", row=3, reason="image fails to decode")
    with pytest.raises(BadRowError, match="3 of 4 rows are bad"):
        report.finish()
