"""Every built-in component passes the same conformance kit third-party plugins use.

The plugin modules checked are the ``mllm`` entry points of this repository's own
distributions (packages/*/pyproject.toml) plus the core's :mod:`mllm.plugins.builtin`, so a
component added to any of them is checked without editing this file. Components whose
configs need files get them from ``example_config`` classmethods or, for the score-only
benchmarks and the judges (which need a grader or an endpoint), from ``EXAMPLES`` below.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
from mllm.testing import TINY_LLAVA, ChatCompletionsServer, ScriptedJudge, parametrize_with_checks, write_image
from mllm.testing.checks import plugin_checks
from mllm.testing.tiny import save_tiny_causal_lm

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[3]
JUDGE_KEY_ENV = "MLLM_CONFORMANCE_JUDGE_KEY"


def repository_plugin_modules() -> list[tuple[str, str]]:
    """(distribution, plugin module) of mllm-core and every packages/* distribution's entry points."""
    found = [("mllm-core", "mllm.plugins.builtin")]
    for pyproject in sorted(REPO.glob("packages/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for module in project.get("entry-points", {}).get("mllm", {}).values():
            found.append((project["name"], module))
    return found


# -- example inputs of the built-ins that need files, a grader or an endpoint ----------------


def _images(folder: Path, *names: str) -> str:
    for index, name in enumerate(names):
        write_image(folder / name, ("red", "blue", "green")[index % 3])
    return str(folder)


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def scienceqa_example(tmp: Path) -> dict:
    rows = [{"id": str(i), "image": f"{i}/image.png", "conversations": [
        {"from": "human", "value": "<image>\nWhich colour is shown?\nA. red\nB. blue"},
        {"from": "gpt", "value": "AB"[i]}]} for i in range(2)]
    (tmp / "q.json").write_text(json.dumps(rows))
    return {"questions": str(tmp / "q.json"), "image_folder": _images(tmp / "img", "0/image.png", "1/image.png")}


def pope_example(tmp: Path) -> dict:
    questions = [{"question_id": i, "image": f"{i}.jpg", "text": f"Is there a {w} in the image?", "category": "random"}
                 for i, w in enumerate(("cat", "dog"))]
    (tmp / "labels").mkdir()
    _jsonl(tmp / "labels" / "coco_pope_random.json",
           [{"question_id": q["question_id"], "image": q["image"], "text": q["text"], "label": label}
            for q, label in zip(questions, ("yes", "no"))])
    return {"questions": _jsonl(tmp / "q.jsonl", questions), "labels": str(tmp / "labels"), "splits": ["random"],
            "image_folder": _images(tmp / "img", "0.jpg", "1.jpg")}


def mmvet_example(tmp: Path) -> dict:
    questions = [{"question_id": i, "image": f"v1_{i}.png", "text": "What colour is the square?"} for i in range(2)]
    (tmp / "mm-vet.json").write_text(json.dumps({f"v1_{i}": {"capability": ["rec"], "answer": "red"} for i in range(2)}))
    return {"questions": _jsonl(tmp / "q.jsonl", questions), "annotations": str(tmp / "mm-vet.json"),
            "image_folder": _images(tmp / "img", "v1_0.png", "v1_1.png")}


def llava_bench_example(tmp: Path) -> dict:
    questions = [{"question_id": i, "image": f"{i}.jpg", "text": "Describe the image.", "category": c}
                 for i, c in enumerate(("conv", "detail"))]
    (tmp / "rule.json").write_text(json.dumps({"default": {"role": "Assistant", "prompt": "Rate both answers 1-10."}}))
    return {"questions": _jsonl(tmp / "q.jsonl", questions), "rule": str(tmp / "rule.json"),
            "references": _jsonl(tmp / "ref.jsonl", [{"question_id": i, "text": "A red square."} for i in range(2)]),
            "image_folder": _images(tmp / "img", "0.jpg", "1.jpg")}


def mtbench_example(tmp: Path) -> dict:
    prompts = [{"name": "single-v1", "type": "single", "system_prompt": "You are a judge.",
                "prompt_template": "[Question]\n{question}\n[Answer]\n{answer}\nRate 1-10 as [[rating]]."}]
    questions = [{"question_id": 81 + i, "category": "writing", "turns": [f"Write line {i}."]} for i in range(2)]
    return {"questions": _jsonl(tmp / "q.jsonl", questions), "judge_prompts": _jsonl(tmp / "p.jsonl", prompts)}


def shr_example(tmp: Path) -> dict:
    rows = [{"image_id": 2339 + i, "image": f"{2339 + i}.jpg", "factual": [], "width": 16, "height": 16,
             "regions": [{"x": 0, "y": 0, "w": 8, "h": 8, "phrase": "a red square"}]} for i in range(2)]
    return {"questions": _jsonl(tmp / "shr.jsonl", rows), "image_folder": _images(tmp / "img", "2339.jpg", "2340.jpg")}


def _conversation_rows(tmp: Path) -> list[dict]:
    _images(tmp, "a.png", "b.png")
    return [{"id": f"row-{i}", "image": name, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is the square?"}, {"from": "gpt", "value": colour}]}
        for i, (name, colour) in enumerate((("a.png", "red"), ("b.png", "blue")))]


def llava_json_example(tmp: Path) -> dict:
    (tmp / "data.json").write_text(json.dumps(_conversation_rows(tmp)))
    return {"path": str(tmp / "data.json")}


def image_qa_folder_example(tmp: Path) -> dict:
    _images(tmp, "a.png", "b.png")
    rows = [{"question_id": i, "image": name, "text": "What colour is the square?", "answer": colour}
            for i, (name, colour) in enumerate((("a.png", "red"), ("b.png", "blue")))]
    return {"path": _jsonl(tmp / "questions.jsonl", rows)}


def hf_example(tmp: Path) -> dict:
    import datasets

    rows = _conversation_rows(tmp)
    table = datasets.Dataset.from_dict({
        "id": [r["id"] for r in rows], "image": [str(tmp / r["image"]) for r in rows],
        "conversations": [r["conversations"] for r in rows]})
    table.save_to_disk(str(tmp / "hf"))
    return {"path": str(tmp / "hf")}


def scienceqa_data_example(tmp: Path) -> dict:
    rows = _conversation_rows(tmp)
    (tmp / "llava_train_QCM-LEA.json").write_text(json.dumps(rows))
    return {"path": str(tmp / "llava_train_QCM-LEA.json")}


def _records_file(path: Path) -> str:
    from mllm.data.recordio import write_records
    from mllm.testing import example_records

    write_records(path, example_records("conversation", path.parent / "images"))
    return str(path)


def records_jsonl_example(tmp: Path) -> dict:
    return {"path": _records_file(tmp / "records.jsonl")}


def stage_records_example(tmp: Path) -> dict:
    from mllm.data.recordio import CURRENT_RUN_DIR, RECORDS_FILE

    _records_file(tmp / "run" / "mistakes" / RECORDS_FILE)
    CURRENT_RUN_DIR.set(tmp / "run")  # as while a pipeline runs; each check runs in its own context
    return {"stage": "mistakes"}


def stage_output_example(tmp: Path) -> dict:
    from mllm.data.recordio import CURRENT_RUN_DIR, RECORDS_FILE

    _records_file(tmp / "run" / "answers" / RECORDS_FILE)
    CURRENT_RUN_DIR.set(tmp / "run")
    return {"stage": "answers"}


def _pairs(tmp: Path) -> list[dict]:
    _images(tmp, "a.png", "b.png")
    return [{"image": name, "question": "What colour is the square?", "chosen": c, "rejected": r}
            for name, c, r in (("a.png", "red", "blue"), ("b.png", "blue", "red"))]


def mllm_dpo_json_example(tmp: Path) -> dict:
    (tmp / "pairs.json").write_text(json.dumps(_pairs(tmp)))
    return {"path": str(tmp / "pairs.json")}


def hf_preference_example(tmp: Path) -> dict:
    rows = [{"prompt": p["question"], "chosen": p["chosen"], "rejected": p["rejected"], "images": [p["image"]]}
            for p in _pairs(tmp)]
    return {"path": _jsonl(tmp / "pairs.jsonl", rows)}


def hadpo_example(tmp: Path) -> dict:
    _images(tmp / "vg", "1.jpg", "2.jpg")
    (tmp / "desc_data.json").write_text(json.dumps({
        "1": {"chosen": ["A red square on white."], "rejected": ["A blue circle on grass."]},
        "2": {"chosen": ["A blue square on white."], "rejected": ["A red dog."]}}))
    return {"desc_data": str(tmp / "desc_data.json"), "vg_images": str(tmp / "vg")}


@pytest.fixture(scope="module")
def chat_endpoint():
    """A local OpenAI-compatible endpoint: every chat completion answers "yes"."""
    with ChatCompletionsServer(lambda prompt, n: "yes") as server:
        yield server.url


def _tiny_causal_lm(folder: Path) -> str:
    return str(save_tiny_causal_lm(folder, corpus="is the sky blue? yes or no"))


ENDPOINT: dict[str, str | None] = {"url": None}


def examples_for() -> dict:
    return {
        "model:llava": TINY_LLAVA,
        "stage_kind:train": {"method": {"name": "sft"}, "data": {"name": "easyvqa", "limit": 4}},
        "stage_kind:eval": {"benchmarks": [{"name": "easyvqa", "limit": 4}]},
        "stage_kind:transform": {"data": {"name": "easyvqa", "limit": 4}, "ops": [{"op": "subsample", "n": 2}]},
        "dataset:easyvqa": {"limit": 4},
        "dataset:llava-json": llava_json_example,
        "dataset:image-qa-folder": image_qa_folder_example,
        "dataset:hf": hf_example,
        "dataset:scienceqa": scienceqa_data_example,
        "dataset:records-jsonl": records_jsonl_example,
        "dataset:stage-records": stage_records_example,
        "dataset:stage-output": stage_output_example,
        "dataset:mllm-dpo-json": mllm_dpo_json_example,
        "dataset:hf-preference": hf_preference_example,
        "dataset:hadpo": hadpo_example,
        "stage_kind:generate": {"data": {"name": "easyvqa", "limit": 2}},
        "benchmark:easyvqa": {"limit": 4},
        "benchmark:image-qa": image_qa_folder_example,
        "benchmark:scienceqa": scienceqa_example,
        "benchmark:pope": pope_example,
        "benchmark:mmvet": mmvet_example,
        "benchmark:llava-bench": llava_bench_example,
        "benchmark:mtbench": mtbench_example,
        "benchmark:shr": shr_example,
        "judge:openai": lambda tmp: {"base_url": ENDPOINT["url"], "api_key_env": JUDGE_KEY_ENV,
                                     "max_retries": 0, "timeout_s": 10, "model": "test-judge"},
        "judge:hf-local": lambda tmp: {"path": _tiny_causal_lm(tmp / "lm"), "max_new_tokens": 4},
    }


JUDGES = {
    "benchmark:mmvet": ScriptedJudge("0.5"),
    "benchmark:llava-bench": ScriptedJudge("7 8\nBoth answers are fine."),
    "benchmark:mtbench": ScriptedJudge("Good. Rating: [[7]]"),
    "benchmark:shr": ScriptedJudge("Judgement:\n1. correct: a red square"),
}


def _checks():
    found = []
    for distribution, module in repository_plugin_modules():
        try:
            checks = plugin_checks(module, distribution=distribution, examples=examples_for(), judges=JUDGES)
        except ImportError:  # a distribution of this repo that is not installed here
            continue
        found.extend(pytest.param(check, id=f"{distribution}-{check.id}") for check in checks)
    return found


@pytest.fixture(autouse=True)
def _judge_endpoint(request, monkeypatch):
    """The openai judge's check talks to a local endpoint (its URL is known only at run time)."""
    callspec = getattr(request.node, "callspec", None)
    check = callspec.params.get("check") if callspec else None
    if check is not None and check.id.endswith("[judge:openai]"):
        monkeypatch.setitem(ENDPOINT, "url", request.getfixturevalue("chat_endpoint"))
        monkeypatch.setenv(JUDGE_KEY_ENV, "sk-test-not-a-secret")


def test_every_repository_distribution_is_checked():
    installed = {dist.metadata["Name"] for dist in metadata.distributions()}
    for distribution, module in repository_plugin_modules():
        if distribution in installed:
            assert any(p.id.startswith(f"{distribution}-registers[{module}]") for p in _checks()), module


@pytest.mark.parametrize("check", _checks())
def test_builtin_component_conforms(check):
    check()


def test_parametrize_with_checks_gives_one_test_per_check():
    marker = parametrize_with_checks("mllm.plugins.builtin", distribution="mllm-core", examples={"model:llava": TINY_LLAVA})
    ids = marker.kwargs["ids"]
    assert "imports-without-torch[mllm.plugins.builtin]" in ids and "load[model:llava]" in ids
    assert "config[stage_kind:train]" in ids
