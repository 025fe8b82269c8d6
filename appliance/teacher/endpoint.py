"""The teacher's model calls: an OpenAI-compatible endpoint behind the part of ModelPool's
interface the stages use (`chat` with a JSON schema, `count_tokens`, `manifest`).

The prompts are sized for the student, not the teacher: `count_tokens` and `manifest`
are the student's (this box's models.toml, its own tokenizer), so every context package
is exactly the one Forge's own campaign would give the student. Only the answer comes
from the endpoint, constrained by `response_format` json_schema to the stage's schema.

The API key is read from the environment when the client is made and kept in memory
only: nothing here writes it anywhere, and no error message repeats it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import openai

from appliance.errors import ForgeError, UsageError
from appliance.serving.pool import Adapter, Completion, ModelPool, Params

NO_KEY = "none"  # --api-key-env none: a keyless local server
MAX_ERROR_CHARS = 300


class EndpointError(ForgeError):
    """The teacher's endpoint cannot be used (down, refused the key, no such model);
    the run stops, and what it finished is kept for the next run."""


class PromptRefused(ForgeError):
    """The endpoint refused one request (400/413/422: too long for its context, a schema
    it cannot follow); that sample is recorded as refused and the run goes on."""


def public_url(url: str) -> str:
    """`url` without user:password@ (the only form of it that may be written down)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--endpoint {public_url(url)!r} is not an http(s) URL",
            "give the base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1",
        )
    return url.rstrip("/")


def api_key(variable: str) -> str:
    """The key in environment variable `variable`; "none" for a keyless server."""
    if variable.lower() == NO_KEY:
        return NO_KEY
    key = os.environ.get(variable, "")
    if not key.strip():
        raise UsageError(
            f"the environment variable {variable} holding the API key is not set",
            f"export {variable}=…, name another with --api-key-env VAR, or --api-key-env "
            "none for a server that needs no key",
        )
    return key.strip()


class RateLimit:
    """At most `per_minute` call starts a minute, evenly spaced, across threads (0: none)."""

    def __init__(self, per_minute: float) -> None:
        self.spacing = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.spacing:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.spacing
        if start > now:
            time.sleep(start - now)


def _said(exc: Exception, key: str = NO_KEY) -> str:
    """What the endpoint said, on one line, shortened; the key never repeated."""
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    if key != NO_KEY:
        text = text.replace(key, "***")
    return text[:MAX_ERROR_CHARS]


@dataclass
class Call:
    """One stage call as the teacher answered it: what the rows are made of."""

    role: str
    messages: list[dict]
    text: str
    finish_reason: str


class Teacher:
    """The endpoint, the model, the student's tokenizer and window; thread-safe."""

    def __init__(
        self,
        url: str,
        model: str,
        key: str,
        student: ModelPool,
        *,
        max_tokens: int = 2048,
        rate: RateLimit | None = None,
        timeout_s: float = 600,
        retries: int = 2,
    ) -> None:
        self.url = check_url(url)
        self.model = model
        self.student = student
        self.max_tokens = max_tokens
        self.rate = rate or RateLimit(0)
        self._key = key
        self.client = openai.OpenAI(
            base_url=self.url, api_key=key, timeout=timeout_s, max_retries=retries
        )
        self.calls = 0
        self._count = threading.Lock()

    @property
    def where(self) -> str:
        return public_url(self.url)

    @property
    def manifest(self):
        """The student's models: the window each stage's context is sized for."""
        return self.student.manifest

    def count_tokens(self, role: str, text: str) -> int:
        """Tokens `text` takes for the student serving `role` (its own tokenizer)."""
        return self.student.count_tokens(role, text)

    def check(self) -> None:
        """Reach the endpoint once before any work: it answers, takes the key, and (when
        it lists its models) serves the model."""
        try:
            listed = [m.id for m in self.client.models.list()]
        except openai.NotFoundError:
            return  # no /models here: the first call will tell
        except openai.APIError as exc:
            raise self._error(exc) from None
        if listed and self.model not in listed:
            shown = ", ".join(listed[:12]) + (" …" if len(listed) > 12 else "")
            raise EndpointError(
                f"the endpoint {self.where} serves no model {self.model!r}",
                f"it serves: {shown}; name one with --model",
            )

    def session(self) -> Session:
        """A recorder of one sample's calls (the pipeline calls one stage at a time)."""
        return Session(self)

    def ask(self, role: str, messages: Sequence[dict], params: Params) -> Completion:
        request: dict = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": self.max_tokens,
            "temperature": params.temperature,
        }
        if params.seed is not None:
            request["seed"] = params.seed
        if params.json_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": params.json_schema},
            }
        self.rate.wait()
        started = time.monotonic()
        try:
            answer = self.client.chat.completions.create(**request)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            raise self._refused(role, exc) from None
        except openai.APIStatusError as exc:
            if exc.status_code == 413:
                raise self._refused(role, exc) from None
            raise self._error(exc) from None
        except openai.APIError as exc:
            raise self._error(exc) from None
        with self._count:
            self.calls += 1
        if not answer.choices:
            raise EndpointError(f"the endpoint {self.where} answered with no choices")
        choice = answer.choices[0]
        usage = answer.usage
        return Completion(
            text=choice.message.content or "",
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt=json.dumps(list(messages)),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            duration_s=time.monotonic() - started,
            base=self.model,
            base_sha256="",
            adapter=None,
        )

    def _refused(self, role: str, exc: Exception) -> PromptRefused:
        return PromptRefused(f"the endpoint refused a {role} prompt: {_said(exc, self._key)}")

    def _error(self, exc: Exception) -> EndpointError:
        said = _said(exc, self._key)
        if isinstance(exc, openai.APIConnectionError):
            return EndpointError(
                f"cannot reach the teacher at {self.where}: {said}",
                "check --endpoint and that the server is up; re-run to resume",
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return EndpointError(
                f"the endpoint {self.where} refused the API key ({said})",
                "check the key in the variable --api-key-env names",
            )
        if isinstance(exc, openai.NotFoundError):
            return EndpointError(
                f"the endpoint {self.where} has no model {self.model!r} ({said})",
                "name a model it serves with --model",
            )
        status = getattr(exc, "status_code", None)
        return EndpointError(
            f"the endpoint {self.where} failed{f' ({status})' if status else ''}: {said}",
            "re-run to resume; lower --concurrency or --rate if it is overloaded",
        )


class Session:
    """The pool a pipeline run is given: the teacher's answers, each call kept in order."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self.calls: list[Call] = []

    @property
    def manifest(self):
        return self.teacher.manifest

    def count_tokens(self, role: str, text: str) -> int:
        return self.teacher.count_tokens(role, text)

    def chat(
        self,
        role: str,
        messages: Sequence[dict],
        *,
        adapter: Adapter | None = None,
        params: Params | None = None,
        **overrides,
    ) -> Completion:
        if adapter is not None:
            raise UsageError("a teacher takes no adapter")
        done = self.teacher.ask(role, messages, params or Params())
        self.calls.append(Call(role, [dict(m) for m in messages], done.text, done.finish_reason))
        return done
