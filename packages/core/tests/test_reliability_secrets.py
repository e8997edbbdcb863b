"""Secrets (docs/reliability.md, round two, items 5 and 10): secret keys are matched as
whole words, key-shaped values are redacted wherever they appear, a pipeline holding a
key is refused by ``validate`` and ``run`` alike, and no error echoes a key."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner
from mllm.cli.main import main
from mllm.pipeline.config import validate_model
from mllm.pipeline.runfolder import REDACTED, StageFolder, redact
from mllm.pipeline.runner import PipelineRunner
from mllm.pipeline.secrets import SECRET_HINT, RedactingFilter, is_secret_key, redact_text
from pydantic import BaseModel

SENTINEL = "sk-SENTINEL-3c1f9e-never-written"


@pytest.mark.parametrize("key, secret", [
    ("max_new_tokens", False), ("pad_token", False), ("image_token", False), ("num_tokens", False),
    ("tokenizer", False), ("answer_key", False), ("api_key_env", False), ("hf_token_env", False),
    ("api_key", True), ("api-key", True), ("apiKey", True), ("apikey", True), ("token", True), ("hf_token", True),
    ("access_token", True), ("password", True), ("client_secret", True), ("Authorization", True),
    ("aws_secret_access_key", True), ("credentials", True),
])
def test_secret_keys_are_whole_words_or_a_known_pair(key, secret):
    assert is_secret_key(key) is secret


def test_max_new_tokens_is_kept_named_on_a_change_and_shown_in_errors(tmp_path):
    folder = StageFolder(tmp_path, "gen")
    folder.start("0" * 64, {"max_new_tokens": 7, "api_key": "x"})
    stored = yaml.safe_load((folder.path / "resolved_config.yaml").read_text())
    assert stored == {"max_new_tokens": 7, "api_key": REDACTED}
    stage = SimpleNamespace(config=SimpleNamespace(model_dump=lambda **_: {"max_new_tokens": 9, "api_key": "x"}))
    assert "max_new_tokens: 7 -> 9" in PipelineRunner._what_changed(folder, stage)

    class Generate(BaseModel):
        max_new_tokens: int

    with pytest.raises(ValueError, match=r"max_new_tokens: .*\(got 'lots'\)"):
        validate_model(Generate, {"max_new_tokens": "lots"}, "p.yaml: stages.gen")


def test_key_shaped_values_are_redacted_wherever_they_appear():
    config = {"judge": {"base_url": f"https://judge.example/v1?api-version=2&key={SENTINEL[3:]}&x=1",
                        "api_key_env": SENTINEL},
              "proxy": "https://user:hunter2pass@proxy.example:8080/",
              "note": f"Authorization: Bearer {SENTINEL[3:]}", "max_new_tokens": 64,
              "hf": "hf_" + "a1B2" * 9}
    text = yaml.safe_dump(redact(config))
    for leaked in (SENTINEL, SENTINEL[3:], "hunter2pass", "a1B2a1B2"):
        assert leaked not in text
    redacted = redact(config)
    assert redacted["judge"]["base_url"] == f"https://judge.example/v1?api-version=2&key={REDACTED}&x=1"
    assert redacted["proxy"] == f"https://user:{REDACTED}@proxy.example:8080/"
    assert redacted["max_new_tokens"] == 64 and redact({"api_key_env": "OPENAI_API_KEY"}) == {
        "api_key_env": "OPENAI_API_KEY"}
    assert redact_text("the path /data/disk-images-of-the-first-batch stays") == \
        "the path /data/disk-images-of-the-first-batch stays"


BENCHMARK_JUDGE = """
name: judged
model: {name: llava, init: tiny}
stages:
  - id: eval
    kind: eval
    benchmarks:
      - name: llava-bench
        judge: JUDGE
"""


@pytest.mark.parametrize("judge, why", [
    ({"name": "openai", "model": "j", "api_key": SENTINEL}, "api_key holds a secret"),
    ({"name": "openai", "model": "j", "api_key_env": SENTINEL}, "api_key_env holds what looks like a key itself"),
    ({"name": "openai", "model": "j", "base_url": f"https://j.example/v1?key={SENTINEL}"}, "URL with a key"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_key_in_a_pipeline_is_refused_by_validate_and_run_and_never_echoed(tmp_path, judge, why, command):
    path = tmp_path / "judged.yaml"
    path.write_text(BENCHMARK_JUDGE.replace("JUDGE", yaml.safe_dump(judge, default_flow_style=True).strip()))
    args = [command, str(path)] + (["--runs-dir", str(tmp_path / "runs")] if command == "run" else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and SENTINEL not in result.output and SENTINEL[3:] not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]  # one line per problem of the file
    assert all(ln.startswith("error: ") for ln in lines)
    assert any("stages.eval.benchmarks[0].judge." in ln and why in ln and SECRET_HINT in ln for ln in lines)
    assert not (tmp_path / "runs").exists()


def test_an_override_with_a_key_is_refused_too(tmp_path):
    path = tmp_path / "judged.yaml"
    path.write_text(BENCHMARK_JUDGE.replace("JUDGE", "{name: openai, model: j}"))
    result = CliRunner().invoke(main, ["validate", str(path), f"model.api_key={SENTINEL}"])
    assert result.exit_code == 2 and SENTINEL not in result.output and "api_key holds a secret" in result.output


def test_no_error_message_echoes_a_key(tmp_path):
    missing = tmp_path / SENTINEL / "pipeline.yaml"
    result = CliRunner().invoke(main, ["validate", str(missing)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and SENTINEL not in result.output
    assert REDACTED in result.output


def test_stage_log_lines_are_redacted(caplog):
    logger = logging.getLogger("mllm.stage.test-redaction")
    logger.addFilter(RedactingFilter())
    caplog.set_level("INFO", logger="mllm.stage.test-redaction")
    logger.info("judge replied 401 for key %s", SENTINEL)
    assert SENTINEL not in caplog.text and REDACTED in caplog.text
