"""Pipeline config: validation errors that name the key, overrides, safe YAML."""

from __future__ import annotations

import pytest
from mllm.pipeline.config import ConfigError, apply_overrides, load_pipeline, parse_override

BASE = """
name: demo
model: {name: llava, init: tiny}
stages:
  - id: count
    kind: touch
    data: {name: lines, path: DATA}
  - id: again
    kind: touch
    from: init
    reads: [count]
"""


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("what colour?|red\nwhat shape?|circle\n")
    return path


def load(write_pipeline, registry, text, overrides=(), data_file=None):
    return load_pipeline(write_pipeline(text.replace("DATA", str(data_file))), registry, list(overrides))


def test_valid_pipeline_loads(testplug_registry, write_pipeline, data_file):
    pipeline = load(write_pipeline, testplug_registry, BASE, data_file=data_file)
    assert [s.id for s in pipeline.stages] == ["count", "again"]
    assert pipeline.stage("count").components["data"].spec.distribution == "mllm-testplug"


def test_unknown_top_level_key_is_named_with_suggestion(testplug_registry, write_pipeline, data_file):
    with pytest.raises(ConfigError, match=r"pipeline.yaml.stagse: unknown key 'stagse'; did you mean 'stages'"):
        load(write_pipeline, testplug_registry, BASE.replace("stages:", "stagse:"), data_file=data_file)


def test_misspelt_key_in_a_stage_names_stage_and_key(testplug_registry, write_pipeline, data_file):
    text = BASE.replace("    reads: [count]", "    reads: [count]\n    mesage: hi")
    with pytest.raises(ConfigError, match=r"stages.again.mesage: unknown key 'mesage'; did you mean 'message'"):
        load(write_pipeline, testplug_registry, text, data_file=data_file)


def test_misspelt_key_in_a_component_names_it(testplug_registry, write_pipeline, data_file):
    text = BASE.replace("path: DATA", "pth: DATA")
    with pytest.raises(ConfigError) as error:
        load(write_pipeline, testplug_registry, text, data_file=data_file)
    assert "stages.count.data.pth: unknown key 'pth'; did you mean 'path'" in str(error.value)
    # one problem, one line: the missing `path` is the misspelt `pth`
    assert len(error.value.lines()) == 1 and "required key is missing" not in str(error.value)


def test_unknown_component_name_has_did_you_mean(testplug_registry, write_pipeline, data_file):
    with pytest.raises(ConfigError, match=r"stages.count.data.name: unknown dataset 'line'; did you mean 'lines'"):
        load(write_pipeline, testplug_registry, BASE.replace("name: lines", "name: line"), data_file=data_file)


def test_unknown_stage_kind_has_did_you_mean(testplug_registry, write_pipeline, data_file):
    with pytest.raises(ConfigError, match=r"stages.again.kind: unknown stage_kind 'tuch'; did you mean 'touch'"):
        load(write_pipeline, testplug_registry, BASE.replace("kind: touch\n    from", "kind: tuch\n    from"),
             data_file=data_file)


def test_reference_to_a_later_or_missing_stage_is_an_error(testplug_registry, write_pipeline, data_file):
    with pytest.raises(ConfigError, match="refers to stage 'nope'"):
        load(write_pipeline, testplug_registry, BASE.replace("from: init", "from: nope"), data_file=data_file)


def test_duplicate_stage_id(testplug_registry, write_pipeline, data_file):
    with pytest.raises(ConfigError, match="used twice"):
        load(write_pipeline, testplug_registry, BASE.replace("id: again", "id: count"), data_file=data_file)


def test_overrides_address_stages_by_id(testplug_registry, write_pipeline, data_file):
    pipeline = load(write_pipeline, testplug_registry, BASE,
                    ["stages.again.message=bye", "stages.count.data.max_bad_fraction=0.5", "seed=7"],
                    data_file=data_file)
    assert pipeline.stage("again").config.message == "bye"
    assert pipeline.stage("count").components["data"].config.max_bad_fraction == 0.5
    assert pipeline.config.seed == 7


def test_override_errors(testplug_registry, write_pipeline, data_file):
    with pytest.raises(ConfigError, match="no stage with id 'sft'"):
        load(write_pipeline, testplug_registry, BASE, ["stages.sft.train.lr=1"], data_file=data_file)
    with pytest.raises(ConfigError, match="key=value"):
        load(write_pipeline, testplug_registry, BASE, ["stages.count"], data_file=data_file)


def test_parse_override_values():
    assert parse_override("stages.sft.train.lr=1e-4") == (["stages", "sft", "train", "lr"], 1e-4)
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=hello") == (["a"], "hello")


def test_apply_overrides_creates_nested_keys():
    data = {"stages": [{"id": "sft", "kind": "train"}]}
    apply_overrides(data, ["stages.sft.train.lr=0.001"])
    assert data["stages"][0]["train"] == {"lr": 0.001}


def test_yaml_is_read_safely(testplug_registry, write_pipeline):
    path = write_pipeline("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(path, testplug_registry)


def test_missing_file_is_named(testplug_registry, tmp_path):
    with pytest.raises(ConfigError, match="cannot read pipeline file .*missing.yaml"):
        load_pipeline(tmp_path / "missing.yaml", testplug_registry)
