"""A hub id given as ``model.path`` gets one line saying how to download it (mllm reads local folders)."""

from __future__ import annotations

import pytest
from mllm.errors import ConfigError
from mllm.pipeline.validation import validate_file
from mllm.plugins.registry import Registry

PIPELINE = """name: hub
model: {{name: llava, path: {path}}}
stages:
  - {{id: eval, kind: eval, models: [init], benchmarks: [{{name: easyvqa, limit: 2}}]}}
"""


def test_a_hub_id_as_model_path_gets_the_download_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(PIPELINE.format(path="llava-hf/llava-1.5-7b-hf"))
    with pytest.raises(ConfigError) as error:
        validate_file(tmp_path / "p.yaml", Registry(autoload=True))
    message = str(error.value)
    assert "hf download llava-hf/llava-1.5-7b-hf --local-dir models/llava-1.5-7b-hf" in message
    assert len(message.splitlines()) == 1


def test_a_missing_local_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(PIPELINE.format(path="./models/missing"))
    with pytest.raises(ConfigError, match="does not exist") as error:
        validate_file(tmp_path / "p.yaml", Registry(autoload=True))
    assert "hf download" not in str(error.value)
