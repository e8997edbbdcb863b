"""docs/pipelines.md's reference tables are generated from the pydantic models."""

from __future__ import annotations

from pathlib import Path

from mllm.pipeline.schema_docs import BEGIN, END, render

DOC = Path(__file__).resolve().parents[3] / "docs" / "pipelines.md"


def test_pipeline_reference_is_up_to_date():
    text = DOC.read_text()
    current = text[text.index(BEGIN): text.index(END) + len(END)]
    assert current == render(), "run: python -m mllm.pipeline.schema_docs docs/pipelines.md"


def test_reference_documents_every_builtin_stage_kind_and_the_train_block():
    text = render()
    for kind in ("train", "eval", "generate", "transform", "report"):
        assert f"### `kind: {kind}`" in text
    assert "#### `train:` block of `kind: train`" in text and "| `lr` |" in text
