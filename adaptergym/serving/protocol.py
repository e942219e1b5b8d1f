"""The OpenAI-compatible wire format as vLLM speaks it: request parsing, replies, stream chunks, errors.

Only what a benchmark client looks at is modelled: lengths, streaming, usage, and vLLM's error shape
(``{"error": {"message", "type", "param", "code"}}``). Tokens are placeholders (``TOKEN_TEXT`` each).

Prompt length rule: a ``prompt`` given as a list of token ids has exactly that many tokens (what a benchmark
with exact lengths sends); text counts ``ceil(characters / 4)`` tokens, OpenAI's rule of thumb for English,
at least 1. A chat request counts its messages' text the same way plus ``CHAT_TOKENS_PER_MESSAGE`` per message
and ``CHAT_TOKENS_REPLY`` for the assistant header (what Llama-3-style chat templates add).
Output length is ``max_tokens`` exactly (vLLM's benchmark sends ``ignore_eos``); when a request leaves it out,
vLLM's defaults apply: 16 for completions, the rest of the context window for chat.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

TOKEN_TEXT = " t"
CHARS_PER_TOKEN = 4
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_TOKENS_REPLY = 3
COMPLETION_DEFAULT_MAX_TOKENS = 16


class APIError(Exception):
    """An error reply in vLLM's shape; the HTTP layer turns it into a JSON response."""

    def __init__(self, status: HTTPStatus, message: str, err_type: str = "BadRequestError",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.err_type, "param": self.param,
                          "code": int(self.status)}}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(HTTPStatus.BAD_REQUEST, message, "BadRequestError", param)


def text_tokens(text: str) -> int:
    """Tokens of a text under the documented rule (ceil(characters / 4), at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What the twin needs from a completion or chat request."""

    model: str
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    chat: bool


def parse_request(body: Any, chat: bool, max_model_len: int) -> GenerationRequest:
    """Validate a ``/v1/completions`` (``chat=False``) or ``/v1/chat/completions`` body."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    prompt_tokens = _chat_tokens(body.get("messages")) if chat else _prompt_tokens(body.get("prompt"))
    if body.get("n", 1) != 1:
        raise bad_request("n: the twin server generates one choice per request; send n=1", "n")
    limit = body.get("max_completion_tokens") if chat and body.get("max_tokens") is None else body.get("max_tokens")
    if limit is None:
        limit = max_model_len - prompt_tokens if chat else COMPLETION_DEFAULT_MAX_TOKENS
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise bad_request(f"max_tokens: {limit!r} must be an integer", "max_tokens")
    if limit < 1:
        raise bad_request(f"max_tokens must be at least 1, got {limit}.", "max_tokens")
    if prompt_tokens + limit > max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + limit} tokens ({prompt_tokens} in the messages, {limit} in the completion). "
            "Please reduce the length of the messages or completion.", "max_tokens")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options: must be an object", "stream_options")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request(f"model: {model!r} must be a string", "model")
    return GenerationRequest(model or "", prompt_tokens, limit, bool(body.get("stream", False)),
                             bool(options.get("include_usage", False)), chat)


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return text_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        raise bad_request("prompt: batched prompts are not supported by the twin server; send one prompt "
                          "per request", "prompt")
    raise bad_request("prompt: must be a non-empty string or a non-empty list of token ids", "prompt")


def _chat_tokens(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: must be a non-empty list of {role, content} objects", "messages")
    total = CHAT_TOKENS_REPLY
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise bad_request(f"messages[{i}]: must be an object with a role", "messages")
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: count the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise bad_request(f"messages[{i}].content: must be a string or a list of parts", "messages")
        total += CHAT_TOKENS_PER_MESSAGE + (text_tokens(content) if content else 0)
    return total


class Reply:
    """Builds the JSON bytes of one request's reply, streamed or whole, in vLLM's format."""

    def __init__(self, request: GenerationRequest, model: str) -> None:
        self.request = request
        self.chat = request.chat
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self._chunk = self._event(self._choice(TOKEN_TEXT, None))
        self._last = self._event(self._choice(TOKEN_TEXT, "length"))

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _choice(self, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

    def _event(self, choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
        body = {**self._head(True), "choices": [choice] if choice else []}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def usage(self, completion_tokens: int) -> dict[str, int]:
        prompt = self.request.prompt_tokens
        return {"prompt_tokens": prompt, "total_tokens": prompt + completion_tokens,
                "completion_tokens": completion_tokens}

    def tokens(self, first: int, upto: int) -> bytes:
        """SSE events for tokens ``first..upto-1`` (one event per token, as vLLM streams them)."""
        if upto <= first:
            return b""
        out = []
        if first == 0 and self.chat:  # vLLM opens a chat stream with the assistant role
            out.append(self._event({"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}))
        final = upto == self.request.max_tokens
        out.append(self._chunk * (upto - first - final))
        if final:
            out.append(self._last)
        return b"".join(out)

    def stream_end(self, completion_tokens: int) -> bytes:
        usage = self._event(None, self.usage(completion_tokens)) if self.request.include_usage else b""
        return usage + b"data: [DONE]\n\n"

    def whole(self, completion_tokens: int) -> dict[str, Any]:
        """The non-streamed reply."""
        text = TOKEN_TEXT * completion_tokens
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None}
        return {**self._head(False), "choices": [choice], "usage": self.usage(completion_tokens)}
