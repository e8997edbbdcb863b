"""pipelines/examples/: one ready pipeline per model family, each passing ``mllm validate``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mllm.pipeline.validation import validate_file
from mllm.plugins.registry import Registry

EXAMPLES = Path(__file__).resolve().parents[3] / "pipelines" / "examples"
FAMILIES = ("llava-next", "idefics3", "llava-onevision", "smolvlm", "qwen2-vl", "qwen2.5-vl")


def test_every_family_has_an_example_pipeline():
    named = {yaml.safe_load(path.read_text())["model"]["name"] for path in EXAMPLES.glob("*.yaml")}
    assert set(FAMILIES) <= named


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_pipeline_validates(path):
    assert path.read_text().startswith(f"# mllm run pipelines/examples/{path.name}")
    pipeline = validate_file(path, Registry(autoload=True))
    assert pipeline.model.spec.distribution == "mllm-models"


def test_docs_models_lists_every_family_and_key():
    from mllm_models.config import (
        Idefics3ModelConfig,
        LlavaNextModelConfig,
        LlavaOnevisionModelConfig,
        Qwen2VLModelConfig,
    )

    text = (EXAMPLES.parents[1] / "docs" / "models.md").read_text()
    for family in FAMILIES:
        assert f"| `{family}` |" in text, family
    for config in (LlavaNextModelConfig, Idefics3ModelConfig, LlavaOnevisionModelConfig, Qwen2VLModelConfig):
        for key in config.model_fields:
            assert f"`{key}`" in text, (config.__name__, key)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_kit_names_a_missing_adapter_member(family, monkeypatch):
    from mllm.testing.checks import check_protocol, specs_of
    from mllm_models.adapter import VisionLanguageAdapter

    spec = next(s for s in specs_of("mllm_models.plugin", "mllm-models") if s.name == family)
    check_protocol(spec)
    monkeypatch.delattr(VisionLanguageAdapter, "embed_inputs")
    with pytest.raises(Exception, match="does not satisfy mllm.interfaces.ModelAdapter: missing embed_inputs"):
        check_protocol(spec)
