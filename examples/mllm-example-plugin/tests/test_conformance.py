"""The example plugin passes mllm's conformance kit."""

from mllm.testing import parametrize_with_checks


@parametrize_with_checks("mllm_example.plugin", distribution="mllm-example-plugin")
def test_conformance(check):
    check()
