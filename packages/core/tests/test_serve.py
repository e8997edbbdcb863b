"""``mllm serve``: a real server process on a trained tiny model, called with the official
``openai`` client. Its answers are the eval stage's; /v1/models, stop, seeded sampling,
the API key, the size limits, a LoRA stage, concurrent requests, OpenAI error objects,
``--image-root``, and an ``openai`` judge of another pipeline pointed at it.

The request parsing, image and prompt rules also have fast in-process tests (no server).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from mllm.serving.images import ImageStore  # noqa: E402
from mllm.serving.prompts import build_prompt  # noqa: E402
from mllm.serving.schema import ApiError, parse_request  # noqa: E402
from PIL import Image  # noqa: E402

KEY_ENV = "MLLM_TEST_SERVE_KEY"
KEY = "sk-serve-test-7c1d"
CONTEXT = 2560  # positions: the MM-Vet grading prompt is ~2,000 tokens of this tiny tokenizer
TINY_MODEL = dict(name="llava", init="tiny", image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
                  vision_intermediate_size=64, text_hidden_size=32, text_layers=1, text_intermediate_size=64,
                  heads=2, vocab_size=300, tokenizer_corpus="easyvqa", max_length=CONTEXT)
TRAIN = {"lr": 3e-3, "batch_size": 8, "logging_steps": 1, "warmup_ratio": 0.0, "group_by_length": False}
MAX_NEW_TOKENS = 8


def png_bytes(size: int = 16, color: str = "red", noise: bool = False) -> bytes:
    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)) if noise else \
        Image.new("RGB", (size, size), color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


# -- fast: no model, no server ----------------------------------------------------------------


def test_a_bad_field_is_a_400_naming_it():
    with pytest.raises(ApiError) as caught:
        parse_request({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, max_n=4)
    assert caught.value.status == 400 and caught.value.param.startswith("messages.0")
    with pytest.raises(ApiError, match="tools is not supported"):
        parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "tools": [{"type": "function"}]}, max_n=4)
    with pytest.raises(ApiError, match="at most 4 choices"):
        parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 5}, max_n=4)
    body = ApiError(400, "x", param="n").body()
    assert body == {"error": {"message": "x", "type": "invalid_request_error", "param": "n", "code": None}}


def test_messages_become_the_eval_prompt(tmp_path):
    store = ImageStore(image_root=None, max_image_bytes=10_000, max_image_pixels=64 * 64)
    request = parse_request({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}},
                                     {"type": "text", "text": "What colour?"}]}]}, max_n=1)
    prompt = build_prompt(request.messages, store, max_images=2)
    assert [t.content for t in prompt.turns] == ["Be brief.\n<image>\nWhat colour?"]
    assert len(prompt.images) == 1 and prompt.images[0].read_bytes() == png_bytes()
    store.release(prompt.owned)
    assert not prompt.images[0].exists()  # the last user removes the temporary copy
    store.close()


def test_image_rules(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "in.png").write_bytes(png_bytes())
    (tmp_path / "out.png").write_bytes(png_bytes())
    (root / "link.png").symlink_to(tmp_path / "out.png")
    store = ImageStore(image_root=root, max_image_bytes=2_000, max_image_pixels=32 * 32)
    assert store.resolve(str(root / "in.png"), "p") == ((root / "in.png").resolve(), False)
    assert store.resolve("in.png", "p")[0] == (root / "in.png").resolve()
    for outside in (str(tmp_path / "out.png"), "../out.png", "link.png", f"file://{tmp_path / 'out.png'}"):
        with pytest.raises(ApiError, match="outside the image root") as caught:
            store.resolve(outside, "p")
        assert caught.value.code == "image_path_not_allowed"
    with pytest.raises(ApiError, match="not fetched"):
        store.resolve("https://example.com/cat.png", "p")
    with pytest.raises(ApiError, match="--max-image-pixels"):
        store.resolve(data_url(png_bytes(size=64)), "p")
    with pytest.raises(ApiError, match="--max-image-bytes"):
        store.resolve(data_url(png_bytes(size=30, noise=True)), "p")
    with pytest.raises(ApiError, match="malformed"):
        store.resolve("data:image/png;base64,@@@", "p")
    no_paths = ImageStore(image_root=None, max_image_bytes=2_000, max_image_pixels=1024)
    with pytest.raises(ApiError, match="--image-root"):
        no_paths.resolve(str(root / "in.png"), "p")
    store.close()
    no_paths.close()


# -- a trained run and servers on it ---------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny LLaVA trained a few steps on easy-VQA (``sft``), a LoRA stage on it, an eval of both, a report."""
    pytest.importorskip("mllm_align")
    pytest.importorskip("mllm_data")
    pytest.importorskip("mllm_eval")
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins.registry import Registry

    data = {"name": "serve-tiny", "model": dict(TINY_MODEL), "stages": [
        {"id": "sft", "kind": "train", "method": {"name": "sft", "freeze_vision_tower": False},
         "data": {"name": "easyvqa", "split": "train", "limit": 64}, "train": {"max_steps": 6, **TRAIN}},
        {"id": "lora", "kind": "train", "from": "sft",
         "method": {"name": "sft", "lora": True, "lora_r": 4, "lora_alpha": 16, "lora_dropout": 0.0},
         "data": {"name": "easyvqa", "split": "train", "limit": 32, "seed": 3},
         "train": {"max_steps": 3, **TRAIN, "lr": 2e-2}},
        {"id": "eval", "kind": "eval", "models": ["sft", "lora"], "max_new_tokens": MAX_NEW_TOKENS,
         "benchmarks": [{"name": "easyvqa", "split": "test", "limit": 6}]},
        {"id": "report", "kind": "report"}]}
    registry = Registry()
    runs = tmp_path_factory.mktemp("runs")
    PipelineRunner(load_pipeline(None, registry, data=data), registry, runs).run()
    return runs / "serve-tiny"


def eval_rows(run_dir: Path, model: str) -> list[dict]:
    path = run_dir / "eval" / model / "easyvqa" / "answers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def item_messages(row: dict) -> list[dict]:
    """The chat message asking an eval item: its image as a data URL, then its question."""
    assert row["prompt"].startswith("<image>\n")
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(Path(row["images"][0]).read_bytes())}},
        {"type": "text", "text": row["prompt"][len("<image>\n"):]}]}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(target: Path, *args: str, key: str | None = None):
    """``mllm serve`` as a subprocess on a free port; yields its base URL; stopped at the end."""
    port = free_port()
    env = {**os.environ, KEY_ENV: key} if key else dict(os.environ)
    log = open(target.parent / f"serve-{port}.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "mllm", "serve", str(target), "--port", str(port), *args],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"mllm serve exited with {process.returncode}: {log.read()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mllm serve did not answer /health within 180 s")
                time.sleep(0.25)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return tmp_path_factory.mktemp("image-root")


@pytest.fixture(scope="module")
def server(trained_run, image_root):
    """The sft stage served with an API key, an image root, small size limits and a 50 ms batch window."""
    with serving(trained_run / "sft", "--api-key-env", KEY_ENV, "--image-root", str(image_root),
                 "--max-request-bytes", "300000", "--max-image-bytes", "60000", "--batch-wait-ms", "50",
                 key=KEY) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


MODEL = "serve-tiny/sft"


def post(url: str, body: bytes, key: str | None = KEY) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_answers_are_the_eval_stages_streamed_or_not(trained_run, client):
    rows = eval_rows(trained_run, "sft")
    for row in rows:
        reply = client.chat.completions.create(model=MODEL, messages=item_messages(row), max_tokens=MAX_NEW_TOKENS,
                                               temperature=0)
        assert reply.choices[0].message.content == row["answer"], row["id"]
        assert reply.model == MODEL and reply.usage.prompt_tokens > 0
        stream = client.chat.completions.create(model=MODEL, messages=item_messages(row), max_tokens=MAX_NEW_TOKENS,
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == row["answer"], row["id"]
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == reply.usage.prompt_tokens


@pytest.mark.slow
def test_models_lists_the_served_stage(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "mllm"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.slow
def test_stop_cuts_the_answer(trained_run, client):
    row = eval_rows(trained_run, "sft")[0]
    full = client.chat.completions.create(model=MODEL, messages=item_messages(row), max_tokens=MAX_NEW_TOKENS)
    text = full.choices[0].message.content
    assert len(text) >= 2, f"the trained model's answer {text!r} is too short to cut"
    stop = text[1]
    cut = client.chat.completions.create(model=MODEL, messages=item_messages(row), max_tokens=MAX_NEW_TOKENS,
                                         stop=[stop])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_seeded_sampling_repeats_and_seeds_differ(client):
    def sample(seed: int) -> list[str]:
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Is there a circle?"}],
                                               temperature=1.5, seed=seed, n=3, max_tokens=6)
        return [choice.message.content for choice in reply.choices]

    first = sample(11)
    assert len(first) == 3
    assert sample(11) == first
    assert any(sample(seed) != first for seed in (12, 13, 14))


@pytest.mark.slow
def test_the_api_key_is_required(server):
    wrong = openai.OpenAI(base_url=server + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.status_code == 401
    status, body = post(server + "/v1/chat/completions", b"{}", key=None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    with urllib.request.urlopen(server + "/health", timeout=5) as reply:  # liveness needs no key
        assert json.loads(reply.read())["status"] == "ok"


@pytest.mark.slow
def test_size_limits(client):
    too_big_image = data_url(png_bytes(size=160, noise=True))  # ~77 kB > --max-image-bytes 60000, request < 300 kB
    with pytest.raises(openai.BadRequestError, match="max-image-bytes"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": too_big_image}}, {"type": "text", "text": "colour?"}]}])
    huge = "word " * 70_000  # 350 kB > --max-request-bytes 300000
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": huge}])
    assert caught.value.status_code == 413 and "max-request-bytes" in caught.value.message
    long_prompt = "is there a circle " * 1500  # fits the request limit, not the model's positions
    with pytest.raises(openai.BadRequestError, match=f"at most {CONTEXT} tokens"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": long_prompt}])


@pytest.mark.slow
def test_a_lora_stage_is_served_without_merging(trained_run):
    assert (trained_run / "lora" / "model" / "adapter_config.json").is_file()
    with serving(trained_run / "lora") as base:
        lora = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in lora.models.list().data] == ["serve-tiny/lora"]
        rows = eval_rows(trained_run, "lora")
        for row in rows:
            reply = lora.chat.completions.create(model="serve-tiny/lora", messages=item_messages(row),
                                                 max_tokens=MAX_NEW_TOKENS)
            assert reply.choices[0].message.content == row["answer"], row["id"]


@pytest.mark.slow
def test_ten_concurrent_requests_are_batched(trained_run, client, server):
    rows = eval_rows(trained_run, "sft")
    asked = [rows[i % len(rows)] for i in range(10)]

    def ask(row: dict) -> str:
        reply = client.chat.completions.create(model=MODEL, messages=item_messages(row), max_tokens=MAX_NEW_TOKENS)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(ask, asked))
    assert answers == [row["answer"] for row in asked]
    with urllib.request.urlopen(server + "/health", timeout=5) as reply:
        assert json.loads(reply.read())["largest_batch"] >= 2


@pytest.mark.slow
def test_malformed_requests_get_400_error_objects(server):
    url = server + "/v1/chat/completions"
    for body in (b"{not json", json.dumps([1, 2]).encode(), json.dumps({"model": MODEL}).encode(),
                 json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "video"}]}]}).encode(),
                 json.dumps({"model": MODEL, "messages": [{"role": "assistant", "content": "hi"}]}).encode(),
                 json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                             "max_tokens": 0}).encode()):
        status, reply = post(url, body)
        assert status == 400, body
        assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["message"], body
    status, reply = post(server + "/v1/no-such-route", b"{}")
    assert status == 404 and "error" in reply
    status, reply = post(url, json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 2}).encode())
    assert status == 200  # the server survived every bad request


@pytest.mark.slow
def test_image_paths_only_under_the_image_root(trained_run, client, image_root):
    row = eval_rows(trained_run, "sft")[0]
    original = Path(row["images"][0])
    inside = image_root / original.name
    inside.write_bytes(original.read_bytes())
    question = {"type": "text", "text": row["prompt"][len("<image>\n"):]}
    reply = client.chat.completions.create(model=MODEL, max_tokens=MAX_NEW_TOKENS, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": original.name}}, question]}])
    assert reply.choices[0].message.content == row["answer"]
    for outside in (str(original), f"../{original.name}", f"file://{original}"):
        with pytest.raises(openai.BadRequestError, match="outside the image root"):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": outside}}, question]}])


@pytest.mark.slow
def test_an_openai_judge_pointed_at_mllm_serve_runs_an_eval_stage(trained_run, server, client, tmp_path, monkeypatch):
    """Another pipeline's MM-Vet eval stage, graded by the served model through the ``openai`` judge.

    The served easy-VQA model does not answer in MM-Vet's verdict format, so its grades
    are unreadable (scored as MM-Vet's grader scores them); the test checks the eval stage
    finished with metrics for both items, and that every grade request reached the
    server and its reply, from the served model, went to the judge cache."""
    from mllm.pipeline.config import load_pipeline
    from mllm.pipeline.runner import PipelineRunner
    from mllm.plugins.registry import Registry

    images = tmp_path / "images"
    images.mkdir()
    questions, annotations = [], {}
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (32, 32), colour).save(images / f"{i}.png")
        questions.append({"question_id": i, "image": f"{i}.png", "text": "What colour is it?"})
        annotations[f"v1_{i}"] = {"capability": ["rec"], "answer": colour}
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (tmp_path / "mm-vet.json").write_text(json.dumps(annotations))
    monkeypatch.setenv(KEY_ENV, KEY)
    judge = {"name": "openai", "model": MODEL, "base_url": server + "/v1", "api_key_env": KEY_ENV, "max_tokens": 4,
             "max_retries": 0, "empty_retries": 0, "cache": str(tmp_path / "judge_cache.jsonl")}
    data = {"name": "judged", "model": dict(TINY_MODEL), "stages": [
        {"id": "eval", "kind": "eval", "models": ["init"], "benchmarks": [
            {"name": "mmvet", "questions": str(tmp_path / "q.jsonl"), "annotations": str(tmp_path / "mm-vet.json"),
             "image_folder": str(images), "max_new_tokens": 3, "judge": judge,
             # the served easy-VQA model answers no grade; the test is about the path, not the grades
             "max_unparsed_fraction": None}]}]}

    def served_requests() -> int:
        with urllib.request.urlopen(server + "/health", timeout=5) as reply:
            return json.loads(reply.read())["requests"]

    before = served_requests()
    registry = Registry()
    runner = PipelineRunner(load_pipeline(None, registry, data=data), registry, tmp_path / "runs")
    runner.run()
    asked = served_requests() - before
    metrics = json.loads((runner.run_dir / "eval" / "metrics.json").read_text())["init"]["mmvet"]
    assert metrics["n"] == 2.0 and "total" in metrics
    cached = [json.loads(line) for line in (tmp_path / "judge_cache.jsonl").read_text().splitlines()]
    assert asked >= 2 and len(cached) == asked  # every grade request was answered by the server, and cached
    assert all(row["model"] == MODEL and row["reply"].strip() for row in cached)


@pytest.mark.slow
def test_the_report_stage_wrote_a_browsable_report(trained_run):
    html = (trained_run / "report" / "report.html").read_text()
    from html import escape

    for answer in {r["answer"] for r in eval_rows(trained_run, "sft")}:
        assert f'data-model="sft">{escape(answer)}</td>' in html
    assert html.count('<tr class="item"') == 6 and "data:image/" in html
