"""The OpenAI HTTP API as `forge serve` speaks it: requests validated with pydantic, the
responses, stream chunks and errors in the shapes the official clients read.

What is accepted: `model`, `messages` (system, developer, user, assistant; text content)
or `prompt`, `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `stop`,
`seed`, `stream` (with `stream_options.include_usage`), `response_format` (`json_object`,
`json_schema`), `logprobs` (the chosen token's; not streamed), and `n`, `user`, penalties
at their defaults. Anything else is refused with a message naming it, rather than
silently ignored.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from appliance.serving.pool import Completion, Params


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted; the chat template has no place for it

    def as_chat(self) -> dict:
        """The message as the pool's chat template takes it (developer is system)."""
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(_Strict):
    name: str = ""
    json_schema: dict = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=4)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    user: str | None = None
    presence_penalty: float = Field(0.0, ge=0, le=0, description="not supported: 0 only")
    frequency_penalty: float = Field(0.0, ge=0, le=0, description="not supported: 0 only")

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value):
        if value == "":
            raise ValueError("a stop sequence cannot be empty")
        return value

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def limit(self) -> int | None:
        """max_tokens as asked (None: up to the end of the context)."""
        return self.max_tokens

    def output_schema(self) -> dict | None:
        return None

    def wants_logprobs(self) -> bool:
        return False

    def params(self, room: int) -> Params:
        """The pool's parameters; `room` is what the context leaves after the prompt."""
        return Params(
            max_tokens=self.limit() or room,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=0,  # the OpenAI API has no top-k: the whole vocabulary, as top_p leaves it
            seed=self.seed,
            stop=self.stops(),
            json_schema=self.output_schema(),
            logprobs=self.wants_logprobs(),
        )

    @model_validator(mode="after")
    def _no_streamed_logprobs(self):
        if self.stream and self.wants_logprobs():
            raise ValueError("logprobs are given with stream false only")
        return self


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1, max_length=1000)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(
        None, ge=0, le=0, description="the chosen token's log-probability only: 0"
    )

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def output_schema(self) -> dict | None:
        if isinstance(self.response_format, JsonObjectFormat):
            return {"type": "object"}
        if isinstance(self.response_format, JsonSchemaFormat):
            return self.response_format.json_schema.json_schema
        return None

    def wants_logprobs(self) -> bool:
        return self.logprobs

    def chat(self) -> list[dict]:
        return [m.as_chat() for m in self.messages]


class CompletionRequest(_Request):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    logprobs: int | None = Field(
        None, ge=0, le=0, description="the chosen token's log-probability only: 0"
    )
    echo: bool = Field(False, description="not supported")
    suffix: None = None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def wants_logprobs(self) -> bool:
        return self.logprobs is not None


# --- responses ---------------------------------------------------------------------------

FINISH = {"stop": "stop", "length": "length"}


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _usage(done: Completion) -> dict:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def forge_facts(done: Completion) -> dict:
    """Which base and adapter answered, and the call log row: beside the OpenAI fields."""
    return {"base": done.base, "adapter": done.adapter, "call_id": done.call_id}


def chat_response(id_: str, model: str, done: Completion, pieces: list[str] | None) -> dict:
    logprobs = None
    if pieces is not None and done.token_logprobs is not None:
        logprobs = {
            "content": [
                {"token": piece, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": []}
                for piece, lp in zip(pieces, done.token_logprobs, strict=True)
            ]
        }
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done.text},
                "finish_reason": FINISH.get(done.finish_reason, "stop"),
                "logprobs": logprobs,
            }
        ],
        "usage": _usage(done),
        "forge": forge_facts(done),
    }


def completion_response(id_: str, model: str, done: Completion, pieces: list[str] | None) -> dict:
    logprobs = None
    if pieces is not None and done.token_logprobs is not None:
        offsets, at = [], 0
        for piece in pieces:
            offsets.append(at)
            at += len(piece)
        logprobs = {
            "tokens": pieces,
            "token_logprobs": list(done.token_logprobs),
            "top_logprobs": None,
            "text_offset": offsets,
        }
    return {
        "id": id_,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": done.text,
                "finish_reason": FINISH.get(done.finish_reason, "stop"),
                "logprobs": logprobs,
            }
        ],
        "usage": _usage(done),
        "forge": forge_facts(done),
    }


def chat_chunk(id_: str, model: str, created: int, delta: dict, finish: str | None = None) -> dict:
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def completion_chunk(
    id_: str, model: str, created: int, text: str, finish: str | None = None
) -> dict:
    return {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }


def usage_chunk(chunk: dict, done: Completion) -> dict:
    """The stream's last chunk when `stream_options.include_usage`: no choices, the usage."""
    return {**chunk, "choices": [], "usage": _usage(done), "forge": forge_facts(done)}
