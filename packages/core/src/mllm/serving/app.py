"""The HTTP side: a FastAPI app with ``/v1/chat/completions``, ``/v1/models`` and ``/health``.

Every error a client can cause is answered with OpenAI's error object and a 4xx status
(:class:`~mllm.serving.schema.ApiError`); nothing a client sends reaches a traceback.
The body is read with a byte limit before it is parsed (413 past it), the API key (when
set) is compared in constant time, and a streamed answer is sent as server-sent events
(``data: {chunk}`` lines, then ``data: [DONE]``) once the batch holding it is answered.

Imports FastAPI: import this module only with the ``serve`` extra installed
(``pip install 'mllm-core[serve]'``); ``mllm serve`` checks first.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mllm.serving.batching import Batcher, Completion, Decoding
from mllm.serving.images import ImageStore
from mllm.serving.prompts import build_prompt
from mllm.serving.schema import ApiError, ChatCompletionRequest, parse_request

logger = logging.getLogger("mllm.serving")


@dataclass(frozen=True)
class ServerLimits:
    """What one request may hold."""

    max_request_bytes: int = 20 * 2**20
    max_images: int = 8
    max_n: int = 8


def create_app(model_name: str, batcher: Batcher, store: ImageStore, *, api_key: str | None = None,
               limits: ServerLimits = ServerLimits()) -> FastAPI:
    """The FastAPI app serving ``model_name`` through ``batcher``; closes both when the server stops."""
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            batcher.close()
            store.close()

    app = FastAPI(title="mllm serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        return JSONResponse(ApiError(error.status_code, f"{request.method} {request.url.path}: {error.detail}",
                                     code=code).body(), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        logger.error("request %s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse(ApiError(500, "internal server error; the server log has the details",
                                     type="server_error").body(), status_code=500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key; send it as 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "mllm"}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, **batcher.stats}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        check_key(request)
        if model_id != model_name:
            raise ApiError(404, f"model {model_id!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        check_key(request)
        body = await _read_body(request, limits.max_request_bytes)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ApiError(400, f"the request body is not valid JSON ({error})") from None
        chat = parse_request(data, max_n=limits.max_n)
        if chat.model != model_name:
            raise ApiError(404, f"model {chat.model!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        prompt = await run_in_threadpool(build_prompt, chat.messages, store, max_images=limits.max_images)
        try:
            future = batcher.submit(prompt, _decoding(chat))
        except BaseException:
            store.release(prompt.owned)
            raise
        # released when the worker is done with them, even if the client went away first
        future.add_done_callback(lambda _: store.release(prompt.owned))
        completion: Completion = await asyncio.wrap_future(future)
        answer_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return StreamingResponse(_events(answer_id, model_name, completion, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return {
            "id": answer_id, "object": "chat.completion", "created": int(time.time()), "model": model_name,
            "system_fingerprint": None,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": reason}
                        for i, (text, reason) in enumerate(zip(completion.texts, completion.finish_reasons))],
            "usage": _usage(completion),
        }

    return app


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused (413) past ``limit`` bytes, whether or not the client sent Content-Length."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the request is {size}+ bytes; this server takes at most {limit} bytes per request "
                         "(--max-request-bytes)", code="request_too_large")


def _decoding(chat: ChatCompletionRequest) -> Decoding:
    return Decoding(max_tokens=chat.max_completion_tokens or chat.max_tokens,
                    temperature=chat.temperature if chat.temperature is not None else 0.0,
                    top_p=chat.top_p if chat.top_p is not None else 1.0, n=chat.n, seed=chat.seed,
                    stops=tuple(chat.stop or ()))


def _usage(completion: Completion) -> dict[str, int]:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def _pieces(text: str) -> list[str]:
    """The text in word-sized pieces that join back to it exactly."""
    return [piece for piece in re.split(r"(?<=\S)(?=\s)", text) if piece]


async def _events(answer_id: str, model_name: str, completion: Completion, include_usage: bool) -> AsyncIterator[str]:
    created = int(time.time())

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {"id": answer_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                 "system_fingerprint": None, "choices": choices, **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    for index, (text, reason) in enumerate(zip(completion.texts, completion.finish_reasons)):
        yield event([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}])
        for piece in _pieces(text):
            yield event([{"index": index, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        yield event([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])
    if include_usage:
        yield event([], usage=_usage(completion))
    yield "data: [DONE]\n\n"
