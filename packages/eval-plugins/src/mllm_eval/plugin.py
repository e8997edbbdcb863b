"""Entry-point module: registers this distribution's components (specs only, no torch)."""

from __future__ import annotations

from mllm import hookimpl
from mllm.hookspecs import Register
from mllm.specs import ComponentSpec
