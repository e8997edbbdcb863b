"""Registers the test components (specs only)."""

from mllm import hookimpl
from mllm.plugins.specs import ComponentSpec


@hookimpl
def mllm_register_datasets(register):
    register(ComponentSpec(name="lines", impl="mllm_testplug.components:LinesDataset",
                           config="mllm_testplug.components:LinesConfig", aliases=("text-lines",),
                           description="one conversation per line of a text file"))


@hookimpl
def mllm_register_stage_kinds(register):
    register(ComponentSpec(name="touch", impl="mllm_testplug.components:TouchStage",
                           config="mllm_testplug.components:TouchConfig",
                           description="counts a dataset's records into the stage folder"))
