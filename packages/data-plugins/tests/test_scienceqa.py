"""scienceqa: ScienceQA's problems.json + pid_splits.json, and LLaVA's converted files."""

from __future__ import annotations

import json

import pytest
from mllm.records import EvalItem
from mllm_data.scienceqa import ScienceQA, ScienceQAConfig, format_problem

# problems in the exact shape of ScienceQA's problems.json (ids and text from its test split)
PROBLEMS = {
    "11": {"question": "What is the name of the colony shown?", "choices": ["Maryland", "New Hampshire", "Rhode Island",
           "Vermont"], "answer": 1, "hint": "", "image": "image.png", "task": "closed choice", "grade": "grade5",
           "subject": "social science", "topic": "us-history", "category": "Colonial America",
           "skill": "Identify the Thirteen Colonies", "lecture": "", "solution": "The colony is New Hampshire.",
           "split": "test"},
    "26": {"question": "How long does it take to bake lasagna in the oven?", "choices": ["33 minutes", "33 hours"],
           "answer": 0, "hint": "Select the better estimate.", "image": None, "task": "closed choice",
           "grade": "grade4", "subject": "natural science", "topic": "units-and-measurement",
           "category": "Units and measurement", "skill": "Choose customary units of time",
           "lecture": "Measurements are written with both a number and a unit.",
           "solution": "The better estimate for how long it takes to bake lasagna in the oven is 33 minutes.",
           "split": "test"},
    "100": {"question": "Which word would you find on a dictionary page with the following guide words?\nshot - suit",
            "choices": ["service", "stockade"], "answer": 1, "hint": "", "image": None, "task": "closed choice",
            "grade": "grade2", "subject": "language science", "topic": "reference-skills", "category": "Reference skills",
            "skill": "Use guide words", "lecture": "Guide words appear on each page of a dictionary.",
            "solution": "Put the words in alphabetical order.", "split": "train"},
    "101": {"question": "Which animal's mouth is also adapted for bottom feeding?", "choices": ["sturgeon", "discus"],
            "answer": 0, "hint": "Sturgeons eat invertebrates.\nFigure: sturgeon.", "image": "image.png",
            "task": "closed choice", "grade": "grade4", "subject": "natural science", "topic": "biology",
            "category": "Adaptations", "skill": "Animal adaptations: beaks, mouths, and necks",
            "lecture": "An adaptation is an inherited trait.", "solution": "Look at the picture of the sturgeon.",
            "split": "train"},
}
SPLITS = {"train": ["100", "101"] + [str(i) for i in range(200, 230)], "test": ["11", "26"], "minitest": ["26"]}


@pytest.fixture
def root(tmp_path, make_image):
    problems = dict(PROBLEMS)
    for i in range(200, 230):  # more training problems for the subsample test
        problems[str(i)] = {**PROBLEMS["100"], "choices": [f"w{i}", "x"]}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps(SPLITS))
    make_image(tmp_path / "images" / "test" / "11" / "image.png")
    make_image(tmp_path / "images" / "train" / "101" / "image.png")
    return tmp_path


def test_qcm_lea_is_llavas_conversion(root, load):
    records, report = load(ScienceQA(ScienceQAConfig(root=str(root), split="train", limit=2, seed=0)))
    assert report.kept == 2
    records, _ = load(ScienceQA(ScienceQAConfig(root=str(root), split="test")))
    colony, lasagna = records
    assert colony.id == "scienceqa-11" and colony.images == (str(root / "images" / "test" / "11" / "image.png"),)
    assert colony.turns[0].content == ("<image>\nWhat is the name of the colony shown?\nContext: N/A\n"
                                       "Options: (A) Maryland (B) New Hampshire (C) Rhode Island (D) Vermont")
    assert colony.turns[1].content == "The colony is New Hampshire. The answer is B."  # empty lecture: no double space
    assert lasagna.images == ()
    assert lasagna.turns[0].content == ("How long does it take to bake lasagna in the oven?\n"
                                        "Context: Select the better estimate.\nOptions: (A) 33 minutes (B) 33 hours")
    assert lasagna.turns[1].content == ("Measurements are written with both a number and a unit. The better estimate "
                                        "for how long it takes to bake lasagna in the oven is 33 minutes. "
                                        "The answer is A.")
    assert lasagna.metadata["subject"] == "natural science" and lasagna.metadata["pid"] == "26"


def test_qcm_a_is_the_letter_and_eval_items(root, load):
    records, _ = load(ScienceQA(ScienceQAConfig(root=str(root), split="test", prompt_format="QCM-A")))
    assert [r.turns[1].content for r in records] == ["B", "A"]
    items, _ = load(ScienceQA(ScienceQAConfig(root=str(root), split="minitest", **{"as": "eval_item"})))
    (item,) = items
    assert isinstance(item, EvalItem) and item.answer == "A" and item.choices == ("A", "B")


def test_cqm_a_matches_llavas_question_file(root, cqm_a_file):
    """The CQM-A prompt is LLaVA's evaluation prompt, character for character."""
    upstream = {row["id"]: row for row in json.loads(cqm_a_file.read_text())}
    for pid in ("11", "26"):
        user, answer = format_problem(PROBLEMS[pid], "CQM-A")
        if PROBLEMS[pid]["image"]:
            user = "<image>\n" + user
        assert user == upstream[pid]["conversations"][0]["value"]
        assert answer == upstream[pid]["conversations"][1]["value"]


def test_seeded_mini_set(root, load):
    mini = [r.id for r in load(ScienceQA(ScienceQAConfig(root=str(root), limit=10, seed=0)))[0]]
    assert mini == [r.id for r in load(ScienceQA(ScienceQAConfig(root=str(root), limit=10, seed=0)))[0]]
    assert mini != [r.id for r in load(ScienceQA(ScienceQAConfig(root=str(root), limit=10, seed=1)))[0]]
    assert len(mini) == 10


def test_reads_a_converted_file(tmp_path, make_image, load):
    make_image(tmp_path / "train" / "101" / "image.png")
    converted = [{"id": "101", "image": "101/image.png", "conversations": [
        {"from": "human", "value": "Which animal's mouth is also adapted for bottom feeding?\nContext: Sturgeons eat "
                                   "invertebrates.\nFigure: sturgeon.\nOptions: (A) sturgeon (B) discus\n<image>"},
        {"from": "gpt", "value": "An adaptation is an inherited trait. Look at the picture of the sturgeon. "
                                 "The answer is A."}]}]
    path = tmp_path / "llava_train_QCM-LEA.json"
    path.write_text(json.dumps(converted, indent=2))
    (record,), _ = load(ScienceQA(ScienceQAConfig(path=str(path), image_folder=str(tmp_path / "train"))))
    assert record.id == "101" and record.turns[1].content.endswith("The answer is A.")
    assert record.images == (str(tmp_path / "train" / "101" / "image.png"),)
    assert ScienceQA.data_files(ScienceQAConfig(path=str(path))) == [path]


def test_config_needs_one_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        ScienceQAConfig()
    with pytest.raises(ValueError, match="exactly one"):
        ScienceQAConfig(root=str(tmp_path), path=str(tmp_path / "x.json"))


def test_unknown_split_names_the_file(root, load):
    with pytest.raises(ValueError, match="pid_splits.json: no split 'val'"):
        load(ScienceQA(ScienceQAConfig(root=str(root), split="val")))
