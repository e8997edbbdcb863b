"""``mllm serve PATH_OR_RUN_STAGE``: the OpenAI chat-completions API for a saved model (uvicorn)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click

from mllm.errors import ConfigError, MllmError


def _require_serve_extra() -> None:
    missing = []
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MllmError(f"mllm serve needs {' and '.join(missing)}: pip install 'mllm-core[serve]'")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.argument("target", metavar="PATH_OR_RUN_STAGE", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to bind; the default takes connections from this machine only")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--model-name", default=None,
              help="the model id clients send and /v1/models lists (default: <pipeline>/<stage>, or the folder name)")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="require 'Authorization: Bearer <key>', the key read from environment variable VAR")
@click.option("--image-root", type=click.Path(file_okay=False), default=None,
              help="allow image_url values that are file paths inside this folder (default: data URLs only)")
@click.option("--max-request-bytes", type=click.IntRange(min=1024), default=20 * 2**20, show_default=True)
@click.option("--max-image-bytes", type=click.IntRange(min=1), default=10 * 2**20, show_default=True)
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=4096 * 4096, show_default=True)
@click.option("--max-images", type=click.IntRange(min=0), default=8, show_default=True, help="images per request")
@click.option("--max-tokens", "default_max_tokens", type=click.IntRange(min=1), default=64, show_default=True,
              help="answer budget of a request that gives no max_tokens")
@click.option("--max-tokens-limit", type=click.IntRange(min=1), default=512, show_default=True,
              help="largest max_tokens a request may ask for")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="requests answered in one engine batch")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="how long a request waits for others to share its batch")
def serve(target: str, host: str, port: int, model_name: str | None, api_key_env: str | None,
          image_root: str | None, max_request_bytes: int, max_image_bytes: int, max_image_pixels: int,
          max_images: int, default_max_tokens: int, max_tokens_limit: int, max_batch: int,
          batch_wait_ms: float) -> None:
    """Serve PATH_OR_RUN_STAGE (a saved model folder, LoRA adapters included, or
    runs/<pipeline>/<stage>) as an OpenAI-compatible /v1/chat/completions endpoint."""
    _require_serve_extra()
    from mllm.serving.model import resolve_target

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {api_key_env}: the environment variable is not set or empty; "
                              f"export {api_key_env}=<key> first")
    root = None
    if image_root is not None:
        root = Path(image_root).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--image-root {image_root}: no such folder")
    served = resolve_target(target, model_name)
    if not _is_loopback(host) and api_key is None:
        click.echo(f"warning: serving on {host} without an API key: anyone who can reach this port can use the "
                   "model; set --api-key-env", err=True)

    import uvicorn

    from mllm.serving.app import ServerLimits, create_app
    from mllm.serving.batching import Batcher
    from mllm.serving.images import ImageStore

    click.echo(f"loading {served.folder} ...", err=True)
    adapter = served.load()
    batcher = Batcher(adapter, max_batch=max_batch, wait_ms=batch_wait_ms, default_max_tokens=default_max_tokens,
                      max_tokens_limit=max_tokens_limit)
    store = ImageStore(image_root=root, max_image_bytes=max_image_bytes, max_image_pixels=max_image_pixels)
    app = create_app(served.name, batcher, store, api_key=api_key,
                     limits=ServerLimits(max_request_bytes=max_request_bytes, max_images=max_images))
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {served.name!r} at http://{shown}:{port}/v1 (Ctrl+C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
