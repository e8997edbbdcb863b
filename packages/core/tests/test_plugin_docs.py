"""Meta-tests: the authoring guide documents every hook, Protocol and kit check."""

from __future__ import annotations

from pathlib import Path

from mllm import interfaces
from mllm.plugins import hookspecs
from mllm.testing.checks import BEHAVIOUR_CHECKS, PROTOCOLS

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"


def test_every_hook_is_documented_in_the_authoring_guide():
    text = GUIDE.read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("mllm_register_")]
    assert hooks
    missing = [hook for hook in hooks if f"`{hook}`" not in text]
    assert not missing, f"docs/plugins.md does not mention {missing}"


def test_every_protocol_and_check_is_documented():
    text = GUIDE.read_text()
    for protocol in PROTOCOLS.values():
        assert f"`{protocol.__name__}`" in text and hasattr(interfaces, protocol.__name__)
    checks = ["imports-without-torch", "registers", "resolves", "protocol", "config"]
    checks += [name for pairs in BEHAVIOUR_CHECKS.values() for name, _ in pairs]
    for check in checks:
        assert f"`{check}`" in text, check
    for fixture in ("tiny_llava", "plugin_registry", "run_pipeline", "example_config"):
        assert f"`{fixture}`" in text, fixture
