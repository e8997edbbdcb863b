"""Every component's keys are in reach: docs/keys.md is generated from the config models (and
fresh), `mllm plugins [KIND] NAME` prints one component's keys, and `mllm plugins` never cuts
the names users type, not even piped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from mllm.cli.main import main
from mllm.plugins.keys import BEGIN, END, missing_distributions, render

DOC = Path(__file__).resolve().parents[3] / "docs" / "keys.md"
needs_first_party = pytest.mark.skipif(bool(missing_distributions()),
                                       reason=f"not installed: {', '.join(missing_distributions())}")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@needs_first_party
def test_key_reference_is_up_to_date():
    text = DOC.read_text()
    assert text[text.index(BEGIN): text.index(END) + len(END)] == render(), \
        "run: python -m mllm.plugins.keys docs/keys.md"


@needs_first_party
def test_key_reference_documents_method_keys():
    text = render()
    dpo = text[text.index("### `dpo` (mllm-align)"):]
    dpo = dpo[:dpo.index("\n### ")]
    for key, default in (("beta", "0.1"), ("loss_type", "'sigmoid'"), ("label_smoothing", "0.0"),
                         ("sft_weight", "0.0"), ("lora_r", "16"), ("projector_lr", "None")):
        assert re.search(rf"\| `{key}` \| `[^`]+` \| `{re.escape(default)}` \|", dpo), key
    assert "#### `train:` block" in text and "| `lr` |" in text  # the train stage's block


@needs_first_party
def test_plugins_method_dpo_lists_its_keys_with_defaults():
    result = invoke("plugins", "method", "dpo")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("method dpo (mllm-align")
    for line in ("beta: float = 0.1", "loss_type: 'sigmoid' | 'ipo' | 'hinge' | 'robust' = 'sigmoid'",
                 "label_smoothing: float = 0.0", "sft_weight: float = 0.0"):
        assert f"  {line}" in lines, line
    assert any("strength of the KL penalty" in line for line in lines)  # the description, below its key


@needs_first_party
def test_the_kind_picks_one_of_two_components_with_one_name():
    both = invoke("plugins", "scienceqa").output
    assert "dataset scienceqa" in both and "benchmark scienceqa" in both
    one = invoke("plugins", "benchmark", "scienceqa").output
    assert "benchmark scienceqa" in one and "dataset scienceqa" not in one
    listed = json.loads(invoke("plugins", "benchmark", "scienceqa", "--json").output)
    assert [entry["kind"] for entry in listed] == ["benchmark"]


def test_plugins_train_stage_lists_the_train_block(testplug_registry):
    output = invoke("plugins", "stage", "train").output
    assert "stage_kind train (mllm-core" in output
    assert "  train:" in output and "    lr: float = 2e-05" in output


def test_an_unknown_name_is_one_error_line(testplug_registry):
    result = invoke("plugins", "method", "dpoo")
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown method 'dpoo'")
    result = invoke("plugins", "methd", "dpo")
    assert result.exit_code == 2 and "'methd' is not a component kind" in result.stderr


def test_plugins_piped_shows_every_name_whole(testplug_registry):
    result = invoke("plugins")  # CliRunner's output is not a terminal: what `mllm plugins | cat` gets
    assert result.exit_code == 0
    names = [spec.name for spec in testplug_registry.specs()]
    assert "stage-records" in names
    cells = {cell.strip() for line in result.output.splitlines() for cell in line.split("│")}
    missing = [name for name in names if name not in cells]
    assert missing == [] and "…" not in result.output
