"""The reliability and safety guarantees (docs/reliability.md), each run for real on a tiny
LLaVA: complete-or-ignored checkpoints, exact resume after SIGKILL, SIGTERM checkpoints,
changed-config re-runs, bad data, unsafe checkpoints and configs, secrets, output safety.

Processes are killed for real: ``mllm run`` runs in a subprocess through
``reliability_inject.py``, which arms a SIGKILL or SIGTERM at a given step (and records
the example order) without changing anything else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

easy_vqa = pytest.importorskip("easy_vqa")
pytest.importorskip("mllm_align")

from click.testing import CliRunner  # noqa: E402
from mllm.cli.main import main  # noqa: E402
from mllm.data.badrows import BadRowError  # noqa: E402
from mllm.data.recordio import write_records  # noqa: E402
from mllm.pipeline.config import ConfigError, load_pipeline  # noqa: E402
from mllm.pipeline.runfolder import RUN_MARKER  # noqa: E402
from mllm.pipeline.runner import PipelineRunner  # noqa: E402
from mllm.plugins.registry import Registry  # noqa: E402
from mllm.records import Conversation, Preference, Turn  # noqa: E402
from mllm.testing import ChatCompletionsServer  # noqa: E402
from mllm.training.checkpoints import (  # noqa: E402
    CHECKPOINT_MARKER,
    UnsafeCheckpointError,
    is_complete,
    last_checkpoint,
    mark_complete,
    rotate_checkpoints,
    verify_checkpoint,
)
from safetensors.torch import load_file  # noqa: E402

INJECT = Path(__file__).parent / "reliability_inject.py"
TINY_MODEL = dict(name="llava", init="tiny", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
                  vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
                  heads=2, vocab_size=300)
TRAIN = {"epochs": 2, "lr": 5e-3, "batch_size": 4, "logging_steps": 1, "save_steps": 2, "save_total_limit": 2,
         "warmup_ratio": 0.0}


# -- data and pipelines ---------------------------------------------------------------


def easyvqa_rows(n: int) -> list[tuple[str, str, str]]:
    questions, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    return [(questions[i], answers[i], paths[image_ids[i]]) for i in range(n)]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    """Conversations and preference pairs (records.jsonl) on easy-VQA images."""
    return write_data_files(tmp_path_factory.mktemp("data"))


def write_data_files(folder: Path) -> Path:
    """``sft.jsonl`` (12 Conversations) and ``dpo.jsonl`` (12 Preference pairs) in ``folder``."""
    rows = easyvqa_rows(12)
    write_records(folder / "sft.jsonl", [
        Conversation(id=f"c{i}", turns=(Turn("user", f"<image>\n{q}" + " please" * (i % 3)), Turn("assistant", a)),
                     images=(img,)) for i, (q, a, img) in enumerate(rows)])
    write_records(folder / "dpo.jsonl", [
        Preference(id=f"p{i}", prompt=(Turn("user", f"<image>\n{q}" + " now" * (i % 4)),), chosen=a,
                   rejected="no" if a == "yes" else "circle", images=(img,)) for i, (q, a, img) in enumerate(rows)])
    return folder


def two_stage_pipeline(data: Path, name: str = "exact") -> dict:
    return {
        "name": name,
        "model": dict(TINY_MODEL),
        "stages": [
            {"id": "sft", "kind": "train", "method": {"name": "sft"},
             "data": {"name": "records-jsonl", "path": str(data / "sft.jsonl")}, "train": dict(TRAIN)},
            {"id": "dpo", "kind": "train", "method": {"name": "dpo", "beta": 0.5},
             "data": {"name": "records-jsonl", "path": str(data / "dpo.jsonl"), "kind": "preference"},
             "train": dict(TRAIN)},
        ],
    }


def mllm_run(pipeline_file: Path, runs_dir: Path, order_dir: Path | None = None, timeout: int = 300,
             **arms: str) -> subprocess.CompletedProcess:
    """``mllm run`` in a subprocess (one torch thread), with faults armed by ``arms``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    for key in ("MLLM_TEST_KILL", "MLLM_TEST_TERM", "MLLM_TEST_ORDER"):
        env.pop(key, None)
    env.update({f"MLLM_TEST_{key.upper()}": value for key, value in arms.items()})
    if order_dir is not None:
        order_dir.mkdir(parents=True, exist_ok=True)
        env["MLLM_TEST_ORDER"] = str(order_dir)
    return subprocess.run([sys.executable, str(INJECT), "run", str(pipeline_file), "--runs-dir", str(runs_dir)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(stage_dir: Path) -> dict[int, tuple]:
    return {e["step"]: (e["loss"], e.get("grad_norm"), e["learning_rate"])
            for e in read_jsonl(stage_dir / "train_log.jsonl") if "loss" in e}


def weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(stage_dir / "model" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different[:5]}"


# -- 1. checkpoints complete or ignored ---------------------------------------------------


def test_rotation_sorts_numerically_and_never_deletes_the_newest_complete_checkpoint(tmp_path):
    def checkpoint(step: int, complete: bool = True) -> Path:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if complete:
            mark_complete(folder, step)
        return folder

    for step in (2, 9, 10):
        checkpoint(step)
    checkpoint(12, complete=False)  # a save cut short by a crash (every file but the marker)
    checkpoint(4, complete=False)  # an older partial save
    (tmp_path / "checkpoint-9" / "trainer_state.json").touch()  # mtime order != step order
    assert last_checkpoint(tmp_path).name == "checkpoint-10"
    removed = rotate_checkpoints(tmp_path, save_total_limit=1)
    assert sorted(p.name for p in removed) == ["checkpoint-2", "checkpoint-4", "checkpoint-9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-12"]
    # a file that changed after the marker was written makes the checkpoint incomplete
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    assert not is_complete(tmp_path / "checkpoint-10") and last_checkpoint(tmp_path) is None
    assert rotate_checkpoints(tmp_path, save_total_limit=1) == []  # nothing complete: nothing deleted


def test_a_crash_in_the_middle_of_a_save_is_ignored_on_resume(data_files, tmp_path, monkeypatch):
    """Training dies while checkpoint-4 is written (model and optimizer saved, RNG state
    not); the re-run resumes from checkpoint-2 and ends with the uninterrupted weights."""
    from mllm.training.trainer import MethodTrainer

    registry = Registry()
    data = two_stage_pipeline(data_files, "crash")
    data["stages"] = data["stages"][:1]
    data["stages"][0]["train"] = {**TRAIN, "save_total_limit": 1}
    straight = PipelineRunner(load_pipeline(None, registry, data=data), registry, tmp_path / "straight")
    straight.run()

    real = MethodTrainer._save_rng_state

    def dies_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise SystemExit("simulated crash in the middle of saving checkpoint-4")
        return real(self, output_dir)

    monkeypatch.setattr(MethodTrainer, "_save_rng_state", dies_at_step_4)
    crashed = PipelineRunner(load_pipeline(None, registry, data=data), registry, tmp_path / "crashed")
    with pytest.raises(SystemExit):
        crashed.run()
    checkpoints = tmp_path / "crashed" / "crash" / "sft" / "checkpoints"
    assert (checkpoints / "checkpoint-4" / "optimizer.pt").exists()  # half written ...
    assert not (checkpoints / "checkpoint-4" / CHECKPOINT_MARKER).exists()  # ... so not complete
    assert (checkpoints / "checkpoint-2" / CHECKPOINT_MARKER).exists()  # save_total_limit=1 kept it
    assert last_checkpoint(checkpoints).name == "checkpoint-2"

    monkeypatch.setattr(MethodTrainer, "_save_rng_state", real)
    plans = PipelineRunner(load_pipeline(None, registry, data=data), registry, tmp_path / "crashed").run()
    assert [p.action for p in plans] == ["skip", "resume"]
    stage = tmp_path / "crashed" / "crash" / "sft"
    assert "resuming from" in (stage / "log.txt").read_text() and "checkpoint-2" in (stage / "log.txt").read_text()
    assert_same_weights(stage, tmp_path / "straight" / "crash" / "sft")
    assert losses(stage) == losses(tmp_path / "straight" / "crash" / "sft")
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint-6"]  # rotation after the marker


# -- 2 and 3. exact resume after SIGKILL; SIGTERM ------------------------------------------


@pytest.fixture(scope="module")
def straight_run(data_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    pipeline = root / "exact.yaml"
    pipeline.write_text(yaml.safe_dump(two_stage_pipeline(data_files)))
    result = mllm_run(pipeline, root / "runs", order_dir=root / "order")
    assert result.returncode == 0, result.stderr[-3000:]
    return pipeline, root / "runs" / "exact", root / "order"


@pytest.mark.slow
def test_killed_and_preempted_runs_resume_exactly(straight_run, tmp_path):
    """SFT then DPO (2 epochs of 3 steps, checkpoints every 2 steps): SIGKILL inside SFT,
    SIGTERM (twice) inside the resumed SFT, SIGKILL inside DPO, then the same command
    again: the weights, the logged losses and the example order are those of one
    uninterrupted run."""
    pipeline, straight, straight_order = straight_run
    runs, order = tmp_path / "runs", tmp_path / "order"
    run_dir = runs / "exact"

    # SIGKILL after step 3 of SFT (mid-epoch 1; newest complete checkpoint: step 2)
    killed = mllm_run(pipeline, runs, order_dir=order, kill="sft:3")
    assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / "sft" / "COMPLETE").exists()
    assert last_checkpoint(run_dir / "sft" / "checkpoints").name == "checkpoint-2"

    # SIGTERM when step 5 starts, and again while its checkpoint is written
    (order / "SFT.jsonl").write_text("")
    termed = mllm_run(pipeline, runs, order_dir=order, term="sft:5")
    assert termed.returncode == 143, termed.stderr[-3000:]
    assert "stopped: training stopped by SIGTERM after step 5" in termed.stderr
    assert "Run the same command again to resume" in termed.stderr
    assert "SIGTERM again: already stopping" in (run_dir / "sft" / "log.txt").read_text()
    assert not (run_dir / "sft" / "COMPLETE").exists()
    assert last_checkpoint(run_dir / "sft" / "checkpoints").name == "checkpoint-5"
    assert verify_checkpoint(run_dir / "sft" / "checkpoints" / "checkpoint-5")  # the save was not cut short
    resumed_order = read_jsonl(order / "SFT.jsonl")
    assert resumed_order[:3] == read_jsonl(straight_order / "SFT.jsonl")[2:5]  # steps 3-5, resumed mid-epoch

    # SFT resumes from step 5 and finishes; SIGKILL after step 5 of DPO (epoch 2; checkpoint: step 4)
    killed = mllm_run(pipeline, runs, order_dir=order, kill="dpo:5")
    assert killed.returncode == -signal.SIGKILL
    assert (run_dir / "sft" / "COMPLETE").exists() and not (run_dir / "dpo" / "COMPLETE").exists()

    (order / "DPO.jsonl").write_text("")
    done = mllm_run(pipeline, runs, order_dir=order)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_jsonl(order / "DPO.jsonl")[:2] == read_jsonl(straight_order / "DPO.jsonl")[4:6]
    for stage in ("sft", "dpo"):
        assert_same_weights(run_dir / stage, straight / stage)
        assert losses(run_dir / stage) == losses(straight / stage), stage
        assert sorted(losses(run_dir / stage)) == [1, 2, 3, 4, 5, 6]
    # rotation kept save_total_limit=2 complete checkpoints, by step number
    assert sorted(p.name for p in (run_dir / "dpo" / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-6"]


# -- 4. changed config on resume ----------------------------------------------------------

TOUCH_PIPELINE = """
name: demo
model: {name: llava, init: tiny}
stages:
  - id: alone
    kind: touch
    message: independent
"""


def test_changed_config_reruns_with_history_and_names_the_changed_keys(tmp_path, testplug_registry, write_pipeline,
                                                                       caplog):
    path = write_pipeline(TOUCH_PIPELINE)
    runs = tmp_path / "runs"
    PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, runs).run()
    caplog.set_level("WARNING", logger="mllm")
    plans = PipelineRunner(load_pipeline(path, testplug_registry, ["stages.alone.message=changed"]),
                           testplug_registry, runs).run()
    assert [p.action for p in plans if p.stage_id == "alone"] == ["rerun"]
    assert 'changed config keys: message: "independent" -> "changed"' in caplog.text
    (kept,) = (runs / "demo" / ".history").iterdir()
    assert kept.name.startswith("alone-") and yaml.safe_load((kept / "resolved_config.yaml").read_text())[
        "message"] == "independent"
    assert "changed config keys: message" in (runs / "demo" / "alone" / "log.txt").read_text()


# -- 6. bad data never costs a run -------------------------------------------------------


def _png(path: Path, truncated: bool = False) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    if truncated:  # the header still reads fine; the pixel data does not decode
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def bad_data(tmp_path):
    _png(tmp_path / "ok.png")
    _png(tmp_path / "late.png", truncated=True)
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n")  # truncated file: no header to read
    good = {"image": "ok.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                 {"from": "gpt", "value": "red"}]}
    rows = [json.dumps({**good, "id": f"g{i}"}) for i in range(6)]
    rows += [
        json.dumps({**good, "id": "missing", "image": "nowhere.png"}),
        json.dumps({**good, "id": "cut", "image": "cut.png"}),
        '{"id": "malformed", "conversations": [',
        json.dumps({"id": "empty", "conversations": []}),
        json.dumps({"id": "roles", "conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "q"}]}),
        json.dumps({**good, "id": "count", "conversations": [{"from": "human", "value": "<image>\n<image>\nq"},
                                                             {"from": "gpt", "value": "a"}]}),
        json.dumps({"id": "long", "conversations": [{"from": "human", "value": "q" * 500},
                                                    {"from": "gpt", "value": "a"}]}),
        json.dumps({**good, "id": "late", "image": "late.png"}),
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def bad_data_pipeline(path: Path, **data) -> dict:
    return {"name": "bad", "model": dict(TINY_MODEL), "stages": [{
        "id": "sft", "kind": "train", "method": {"name": "sft"},
        "data": {"name": "llava-json", "path": str(path), "max_chars": 200, **data},
        "train": {**TRAIN, "epochs": 1, "batch_size": 2, "group_by_length": False}}]}


def test_bad_rows_are_found_before_training_and_a_late_decode_failure_follows_the_policy(bad_data, tmp_path):
    registry = Registry()
    data = bad_data_pipeline(bad_data, on_bad_row="skip", max_bad_fraction=0.6)
    runner = PipelineRunner(load_pipeline(None, registry, data=data), registry, tmp_path / "runs")
    runner.run()
    stage = runner.run_dir / "sft"
    assert (stage / "COMPLETE").exists()
    report = json.loads((stage / "data_report.json").read_text())
    reasons = {entry["row"]: entry["reason"] for entry in report["skipped"]}
    assert {row for row in reasons if row.startswith("line ")} == {f"line {n}" for n in range(7, 14)}
    for line, words in {7: "does not exist", 8: "cannot be read", 9: "malformed JSON line", 10: "empty conversation",
                        11: "role", 12: "<image> placeholder", 13: "over-long"}.items():
        assert words in reasons[f"line {line}"], (line, reasons[f"line {line}"])
    # the truncated PNG passed the header check and failed while its batch was built
    assert "id late" in reasons and "while training" in reasons["id late"] and "late.png" in reasons["id late"]
    assert next(e for e in report["skipped"] if e["row"] == "id late")["file"].endswith("late.png")
    assert report["total"] == 14 and report["kept"] == 6

    # with on_bad_row: error the same late failure stops the run with the image and the record named
    only_late = bad_data.parent / "late_only.jsonl"
    lines = bad_data.read_text().splitlines()
    only_late.write_text("\n".join(lines[:6] + lines[-1:]) + "\n")
    data = bad_data_pipeline(only_late)
    with pytest.raises(BadRowError, match=r"late\.png, row id late: .*while training: cannot read image"):
        PipelineRunner(load_pipeline(None, registry, data=data), registry, tmp_path / "runs2").run()
    assert not (tmp_path / "runs2" / "bad" / "sft" / "COMPLETE").exists()


# -- 7. safety ------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('payload ran')",))


@pytest.fixture(scope="module")
def interrupted_stage(data_files, tmp_path_factory):
    """A one-stage SFT run stopped after its step-2 checkpoint (a run to resume)."""
    root = tmp_path_factory.mktemp("interrupted")
    registry = Registry()
    data = two_stage_pipeline(data_files, "planted")
    data["stages"] = data["stages"][:1]
    data["stages"][0]["train"] = {**TRAIN, "epochs": 1}
    from mllm_align.sft import SFT
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("stopped after the first checkpoint")

    SFT.callbacks = lambda self: [Stop()]
    try:
        with pytest.raises(KeyboardInterrupt):
            PipelineRunner(load_pipeline(None, registry, data=data), registry, root).run()
    finally:
        del SFT.callbacks
        # isinstance() on a runtime Protocol caches its yes per class (ABCMeta): forget it
        from mllm.interfaces import HasTrainCallbacks

        HasTrainCallbacks._abc_caches_clear()
    return registry, data, root


@pytest.mark.parametrize("name", ["optimizer.pt", "rng_state.pth", "scheduler.pt"])
def test_a_planted_pickle_in_a_checkpoint_is_refused_and_never_runs(interrupted_stage, tmp_path, name):
    import shutil

    registry, data, root = interrupted_stage
    runs = tmp_path / "runs"
    shutil.copytree(root, runs)
    checkpoint = runs / "planted" / "sft" / "checkpoints" / "checkpoint-2"
    assert is_complete(checkpoint)
    ran = tmp_path / "PAYLOAD_RAN"
    original = torch.load(checkpoint / name, weights_only=True) if name != "rng_state.pth" else {}
    torch.save({"state": original, "evil": Payload(ran)}, checkpoint / name)
    mark_complete(checkpoint, 2)  # the marker cannot vouch for content: someone with write access planted it
    with pytest.raises(UnsafeCheckpointError, match=rf"{name} does not load with torch.load\(weights_only=True\)"):
        PipelineRunner(load_pipeline(None, registry, data=data), registry, runs).run()
    assert not ran.exists()
    # the Trainer itself would have been handed nothing: nothing in the folder was unpickled unsafely
    with pytest.raises(UnsafeCheckpointError):
        verify_checkpoint(checkpoint)
    assert not ran.exists()


def test_a_pipeline_yaml_with_a_python_object_tag_is_refused(tmp_path):
    ran = tmp_path / "YAML_RAN"
    (tmp_path / "evil.yaml").write_text(
        f"name: evil\nmodel: !!python/object/apply:os.system ['touch {ran}']\nstages: []\n")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "evil.yaml"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert "python/object/apply" in result.output and not ran.exists() and not (tmp_path / "runs").exists()


def test_code_in_a_model_folder_runs_only_with_trust_remote_code(tmp_path):
    """A folder whose config.json points at its own Python (auto_map) is not executed by
    default; ``trust_remote_code: true`` is the explicit opt-in (and then it does run)."""
    folder = tmp_path / "custom"
    folder.mkdir()
    ran = tmp_path / "REMOTE_CODE_RAN"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil-llava", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    (folder / "configuration_evil.py").write_text(
        f"open({str(ran)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil-llava'\n")
    script = f"""
import sys
from mllm.models.llava.adapter import LlavaAdapter
from mllm.models.llava.config import LlavaModelConfig
try:
    LlavaAdapter.load({str(folder)!r}, config=LlavaModelConfig(path={str(folder)!r}))
except Exception as error:
    print("DEFAULT:", error)
print("RAN BY DEFAULT:", __import__("os").path.exists({str(ran)!r}))
LlavaAdapter.load({str(folder)!r}, config=LlavaModelConfig(path={str(folder)!r}, trust_remote_code=True))
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "DEFAULT:" in result.stdout and "trust_remote_code" in result.stdout
    assert "RAN BY DEFAULT: False" in result.stdout
    assert ran.exists(), result.stderr[-2000:]  # the opt-in works (the model type is then refused)
    assert "not supported by the llava adapter" in result.stderr


# -- 8. output safety -------------------------------------------------------------------------


def _snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents}


def test_mllm_run_refuses_a_foreign_folder_and_never_touches_anything_outside_its_run_folder(
        tmp_path, testplug_registry, write_pipeline):
    runs = tmp_path / "runs"
    foreign = runs / "demo"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("years of work")
    path = write_pipeline(TOUCH_PIPELINE)
    with pytest.raises(ConfigError, match=r"is not empty and is not an mllm run folder \(it has no .mllm-run file\)"):
        PipelineRunner(load_pipeline(path, testplug_registry), testplug_registry, runs)
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "not an mllm run folder" in result.output
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]

    # a run folder of its own, beside other people's files: run, re-run on a change, --force
    (runs / "other-project").mkdir()
    (runs / "other-project" / "notes.txt").write_text("keep me")
    (tmp_path / "data.txt").write_text("q1|a1\n")
    before = _snapshot(tmp_path, runs / "mine")
    mine = {"pipeline": None}
    for overrides, force in ([], ()), (["stages.alone.message=changed"], ()), ([], ("alone",)):
        data = yaml.safe_load(TOUCH_PIPELINE.replace("name: demo", "name: mine"))
        mine["pipeline"] = load_pipeline(None, testplug_registry, list(overrides), data=data)
        PipelineRunner(mine["pipeline"], testplug_registry, runs, force=force).run()
    assert (runs / "mine" / RUN_MARKER).is_file()
    assert len(list((runs / "mine" / ".history").iterdir())) == 2
    after = _snapshot(tmp_path, runs / "mine")
    assert {k: v for k, v in after.items() if k != "pipeline.yaml"} == \
        {k: v for k, v in before.items() if k != "pipeline.yaml"}


# -- 5 and 7. judges: resume, retries, secrets ------------------------------------------------

SENTINEL = "sk-SENTINEL-3c1f9e-never-written"


def test_judge_verdicts_resume_and_failed_or_empty_answers_are_retried_not_cached(tmp_path, monkeypatch):
    pytest.importorskip("openai")
    from mllm_eval.judges import JudgeError, OpenAIJudge, OpenAIJudgeConfig

    monkeypatch.setenv("JUDGE_KEY", SENTINEL)
    prompts = [f"rate answer {i}" for i in range(6)]
    verdict = {p: f"{i % 3}" for i, p in enumerate(prompts)}

    def judge(server, cache):
        return OpenAIJudge(OpenAIJudgeConfig(model="j", base_url=server.url, api_key_env="JUDGE_KEY", max_retries=0,
                                             empty_retries=0, cache=str(cache)))

    behaviour = {"fail_at": None, "empty_at": None}

    def reply(prompt, n):
        if n == behaviour["fail_at"]:
            return 500
        if n == behaviour["empty_at"]:
            return ""
        return verdict.get(prompt, "2")

    with ChatCompletionsServer(reply) as server:  # one endpoint: the cache key includes base_url
        reference = [judge(server, tmp_path / "ref.jsonl").complete(p) for p in prompts]
        # killed after 3 of 6 verdicts: the 4th request fails (HTTP 500)
        del server.prompts[:]
        behaviour["fail_at"] = 4
        first = judge(server, tmp_path / "cache.jsonl")
        with pytest.raises(JudgeError) as failed:
            [first.complete(p) for p in prompts]
        assert SENTINEL not in str(failed.value) and "***" in str(failed.value)
        # the re-run asks only the 3 missing (the failed one included) and gets the same verdicts
        del server.prompts[:]
        behaviour["fail_at"] = None
        assert [judge(server, tmp_path / "cache.jsonl").complete(p) for p in prompts] == reference
        assert server.prompts == prompts[3:]
        # an empty answer is returned but not cached: the next run asks again
        del server.prompts[:]
        behaviour["empty_at"] = 1
        assert judge(server, tmp_path / "empty.jsonl").complete("again?") == ""
        assert judge(server, tmp_path / "empty.jsonl").complete("again?") == "2"
        assert judge(server, tmp_path / "empty.jsonl").complete("again?") == "2"
        assert len(server.prompts) == 2
        del server.prompts[:]
        behaviour["empty_at"] = 1  # empty_retries (default 1) asks again at once
        retrying = OpenAIJudge(OpenAIJudgeConfig(model="j", base_url=server.url, api_key_env="JUDGE_KEY"))
        assert retrying.complete("x") == "2" and len(server.prompts) == 2
    assert SENTINEL not in "".join(p.read_text() for p in tmp_path.glob("*.jsonl"))


def test_an_api_key_never_reaches_the_run_folder_logs_or_tracebacks(data_files, tmp_path):
    """A sentinel key in the environment (used by an ``openai`` judge of a ``realign``
    transform) and in the judge's config appears in no file under runs/ and in nothing
    ``mllm run`` prints, whether the run succeeds, the endpoint refuses, or the config
    is rejected."""
    pytest.importorskip("openai")
    runs = tmp_path / "runs"
    env = {**os.environ, "JUDGE_KEY": SENTINEL, "OMP_NUM_THREADS": "1"}

    def pipeline(url: str, name: str, instruction: str = "Explain step by step.", **judge) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": name, "model": dict(TINY_MODEL),
            "stages": [{"id": "realigned", "kind": "transform",
                        "data": {"name": "records-jsonl", "path": str(data_files / "sft.jsonl")},
                        "ops": [{"op": "realign", "instruction": instruction,
                                 "judge": {"name": "openai", "model": "j", "base_url": url,
                                                            "api_key_env": "JUDGE_KEY", "max_retries": 0, **judge}}]}],
        }))
        return path

    def mllm(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mllm", "run", str(path), "--runs-dir", str(runs)], env=env,
                              capture_output=True, text=True, timeout=120)

    with ChatCompletionsServer(lambda prompt, n: 401 if "refuse" in prompt else f"Step by step: {n}.") as server:
        ok = mllm(pipeline(server.url, "ok"))
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert (runs / "ok" / "realigned" / "records.jsonl").exists()
        refused = mllm(pipeline(server.url, "refused", instruction="refuse this"))
        secret_in_config = mllm(pipeline(server.url, "configured", api_key=SENTINEL))
    assert server.prompts  # the judge was really asked
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    assert secret_in_config.returncode != 0 and "api_key" in secret_in_config.stdout + secret_in_config.stderr
    for result in (ok, refused, secret_in_config):
        assert SENTINEL not in result.stdout + result.stderr
    files = [p for p in runs.rglob("*") if p.is_file()]
    assert any(p.name == "log.txt" for p in files)
    for file in files:
        assert SENTINEL.encode() not in file.read_bytes(), file
