"""The request side of ``/v1/chat/completions``: the accepted JSON, and OpenAI-style errors.

A request body is validated by :class:`ChatCompletionRequest` (pydantic); whatever it
refuses becomes an :class:`ApiError`, which the app sends as OpenAI's error object::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": null}}

Fields the server cannot honour (tools, logprobs, penalties, JSON mode) are refused
with a 400 naming the field, never silently ignored: a client relying on them would
otherwise get answers that only look right.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOPS = 4


class ApiError(Exception):
    """An error answered with ``status`` and OpenAI's ``{"error": {...}}`` object."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    """``{"type": "text", "text": ...}``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    """``{"url": "data:image/png;base64,..." | "/path/under/image-root.png", "detail": ...}``."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model has one input size


class ImagePart(BaseModel):
    """``{"type": "image_url", "image_url": {"url": ...}}``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ImageUrl


Part = Union[TextPart, ImagePart]


class Message(BaseModel):
    """One chat message; ``developer`` is OpenAI's newer name for ``system``."""

    model_config = ConfigDict(extra="ignore")  # name, refusal, ...: carry no meaning here
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[Part], None] = None

    def parts(self) -> list[Part]:
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [TextPart(type="text", text=self.content)]
        return list(self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat-completions request this server answers (docs/serve.md)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    # refused when set: the server has no way to honour them
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: Any = None
    response_format: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else list(value)
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("a stop sequence is empty")
        return stops

    def unsupported(self) -> str | None:
        """The first field set that this server cannot honour, else ``None``."""
        for name in ("tools", "tool_choice", "functions", "function_call", "logit_bias", "top_logprobs"):
            if getattr(self, name) not in (None, [], {}):
                return name
        if self.logprobs:
            return "logprobs"
        if self.response_format not in (None, {"type": "text"}):
            return "response_format"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                return name
        return None


def parse_request(data: Any, *, max_n: int) -> ChatCompletionRequest:
    """A validated request, or an :class:`ApiError` (400) naming the first bad field."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], param=where) from None
    unsupported = request.unsupported()
    if unsupported:
        raise ApiError(400, f"{unsupported} is not supported by mllm serve (docs/serve.md lists the API subset)",
                       param=unsupported, code="unsupported_parameter")
    if request.n > max_n:
        raise ApiError(400, f"n is {request.n}; this server returns at most {max_n} choices per request", param="n")
    return request
