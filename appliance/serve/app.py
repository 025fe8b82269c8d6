"""The HTTP application of `forge serve` (Starlette): the OpenAI routes over the one pool.

A completion request goes: its API key (401 before anything else is read) → its JSON body
(400, 413) → its model name (404) → paused while forged runs a heavy job (503, with
`serve.yield_to_jobs`) → the base's queue (429 with Retry-After) → the prompt measured
against the base's context (400 with the numbers) → the pool, in a worker thread (the
event loop never decodes). A streamed answer's text comes from the pool as it is made; a
client that goes away sets the call's cancel flag, so the pool stops after the next token
and logs the call with finish_reason "cancelled". Every call is a `model_calls` row with
source "serve" (the pool's CallLog stamps it).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial

import anyio
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from appliance.clock import now_iso
from appliance.config import Config
from appliance.errors import ForgeError, UsageError, validation_problems
from appliance.serve import protocol
from appliance.serve.admission import Admission, QueueFull, Ticket
from appliance.serve.keys import KeyFileError, KeyRing
from appliance.serve.names import Resolved, UnknownModel, find, resolve, served_models
from appliance.serve.protocol import ChatRequest, CompletionRequest
from appliance.serve.state import ServeState, clear_state, heavy_job, write_state
from appliance.serving.pool import Completion, ModelPool, Params
from appliance.store import open_db

MAX_BODY_BYTES = 8 << 20  # a prompt fills a 4k-token context in well under 100 KiB
PAUSED_RETRY_S = 30
STATE_EVERY_S = 1.0  # serve.json follows the queue at most this late
STATE_HEARTBEAT_S = 30.0  # …and is rewritten this often when nothing changes


class ApiError(ForgeError):
    """An answer in the OpenAI error shape: {"error": {"message", "type", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.code = status, type_, code
        self.headers, self.param = headers or {}, param

    def response(self) -> JSONResponse:
        body = protocol.error_body(self.message, self.type, self.code, self.param)
        return JSONResponse(body, self.status, headers=self.headers)


class Service:
    """What the routes share: the settings, the one pool, the keys, the queue, counters."""

    def __init__(
        self, config: Config, pool: ModelPool, keys: KeyRing, *, url: str, loopback: bool
    ) -> None:
        self.config, self.pool, self.keys = config, pool, keys
        self.manifest = pool.manifest
        self.url, self.loopback = url, loopback
        settings = config.settings.serve
        self.yield_to_jobs = settings.yield_to_jobs
        self.admission = Admission(settings.queue)
        # Admission bounds the model calls in flight, so the pool's threads never queue.
        self.executor = ThreadPoolExecutor(
            max_workers=(settings.queue + 1) * len(self.manifest.bases),
            thread_name_prefix="forge-serve",
        )
        self.stopping = threading.Event()
        self.started, self.created, self.pid = now_iso(), int(time.time()), os.getpid()
        self.paused: str | None = None
        self._counts = {"served": 0, "refused": 0}
        self._count_lock = threading.Lock()
        self._local = threading.local()

    # --- shared state ------------------------------------------------------------------

    def db(self):
        """This thread's connection to the database (a connection belongs to one thread)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_db(self.config, migrate=False)
        return db

    def count(self, outcome: str) -> None:
        with self._count_lock:
            self._counts[outcome] += 1

    def state(self) -> ServeState:
        with self._count_lock:
            served, refused = self._counts["served"], self._counts["refused"]
        return ServeState(
            pid=self.pid, url=self.url, started=self.started, paused=self.paused,
            served=served, refused=refused, waiting=self.admission.waiting(),
            in_flight=self.admission.in_flight(), keys_required=self.keys_required(),
            updated=now_iso(),
        )  # fmt: skip

    def keys_required(self) -> bool:
        try:
            return bool(self.keys.keys()) or not self.loopback
        except KeyFileError:
            return True

    def pause_reason(self) -> str | None:
        """Why requests get 503 now (a forged heavy job runs); None: serving."""
        if not self.yield_to_jobs:
            return None
        job = heavy_job(self.config, self.db())
        self.paused = None if job is None else f"job {job.id} ({job.kind}) running"
        return self.paused

    # --- checks ------------------------------------------------------------------------

    def authorize(self, authorization: str | None) -> None:
        """401 unless the request carries a valid key (none needed on loopback without
        keys); nothing of the request is read before this."""
        try:
            keys = self.keys.keys()
            key = self.keys.check(authorization) if keys else None
        except KeyFileError as exc:
            raise ApiError(500, f"{exc.message} ({exc.hint})", "server_error", "key_file") from exc
        if not keys and self.loopback:
            return
        if not keys:
            raise ApiError(401, "this server listens beyond loopback and has no API keys left",
                           "authentication_error", "invalid_api_key")  # fmt: skip
        if key is None:
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY",
                           "authentication_error", "invalid_api_key")  # fmt: skip

    def models_now(self) -> dict:
        db, listed = self.db(), []
        for model in served_models(self.manifest):
            now = resolve(self.config, db, self.manifest, model)
            adapter = now.adapter.name if now.adapter else None
            facts = {"role": model.role, "stage": model.stage, "base": now.base,
                     "adapter": adapter}  # fmt: skip
            listed.append({"id": model.name, "object": "model", "created": self.created,
                           "owned_by": "forge", "forge": facts})  # fmt: skip
        return {"object": "list", "data": listed}

    # --- completions ---------------------------------------------------------------------

    async def answer(self, request: Request, kind: type[ChatRequest | CompletionRequest]):
        self.authorize(request.headers.get("authorization"))
        req = _validated(kind, await _read_json(request))
        try:
            model = find(self.manifest, req.model)
        except UnknownModel as exc:
            raise ApiError(404, f"{exc.message}; {exc.hint}", code="model_not_found",
                           param="model") from exc  # fmt: skip
        paused = await anyio.to_thread.run_sync(self.pause_reason)
        if paused:
            raise ApiError(503, f"paused: {paused}", "server_error", "paused",
                           headers={"Retry-After": str(PAUSED_RETRY_S)})  # fmt: skip
        try:
            ticket = self.admission.enter(self.manifest.for_role(model.role).name)
        except QueueFull as exc:
            raise ApiError(429, exc.message, "rate_limit_error", "queue_full",
                           headers={"Retry-After": str(exc.retry_after_s)}) from exc  # fmt: skip
        handed_over, started = False, time.monotonic()
        try:
            resolved, params = await anyio.to_thread.run_sync(self._prepare, model, req)
            call = partial(self._call, resolved, req, params)
            if req.stream:
                handed_over = True  # the stream's worker leaves the queue when it ends
                return self._stream(req, call, ticket)
            return await self._complete(req, resolved, call)
        finally:
            if not handed_over:
                self.admission.leave(ticket, time.monotonic() - started)

    def _prepare(self, model, req) -> tuple[Resolved, Params]:
        """What the name serves now, and the parameters; 400 when prompt + max_tokens
        exceed the base's context."""
        resolved = resolve(self.config, self.db(), self.manifest, model)
        chat = isinstance(req, ChatRequest)
        try:
            size, context = self.pool.prompt_size(
                model.role, messages=req.chat() if chat else None, prompt="" if chat else req.text()
            )
        except UsageError as exc:
            raise ApiError(400, exc.message) from exc
        limit = req.limit()
        if size + (limit or 1) > context:
            asked = f" + max_tokens {limit} = {size + limit}" if limit else ""
            raise ApiError(400, f"the prompt is {size} tokens{asked}; {resolved.base} holds "
                           f"{context} tokens of context", code="context_length_exceeded",
                           param="messages" if chat else "prompt")  # fmt: skip
        return resolved, req.params(context - size)

    def _call(self, resolved: Resolved, req, params: Params, on_text=None, gone=None):
        """The pool call (in a worker thread); a stopping server cancels it too."""

        def cancelled() -> bool:
            return self.stopping.is_set() or (gone is not None and gone.is_set())

        role, adapter = resolved.model.role, resolved.adapter
        try:
            if isinstance(req, ChatRequest):
                return self.pool.chat(role, req.chat(), adapter=adapter, params=params,
                                      on_text=on_text, cancelled=cancelled)  # fmt: skip
            return self.pool.complete(role, req.text(), adapter=adapter, params=params,
                                      on_text=on_text, cancelled=cancelled)  # fmt: skip
        except UsageError as exc:  # e.g. a JSON schema the grammar cannot take
            raise ApiError(400, f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from exc

    async def _complete(self, req, resolved: Resolved, call) -> JSONResponse:
        done = await asyncio.get_running_loop().run_in_executor(self.executor, call)
        pieces = None
        if done.token_logprobs is not None:
            pieces = self.pool.token_pieces(resolved.model.role, done.tokens)
        self.count("served")
        if isinstance(req, ChatRequest):
            body = protocol.chat_response(f"chatcmpl-{uuid.uuid4().hex}", req.model, done, pieces)
        else:
            body = protocol.completion_response(f"cmpl-{uuid.uuid4().hex}", req.model, done, pieces)
        return JSONResponse(body)

    def _stream(self, req, call: Callable, ticket: Ticket) -> Response:
        """Start the call in a worker thread; its text reaches the client as SSE events."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        gone = threading.Event()  # the client went away (or the stream ended)

        def post(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody reads any more
                gone.set()

        def work() -> None:
            started = time.monotonic()
            try:
                post(call(on_text=post, gone=gone))
            except ForgeError as exc:  # the client reads it as the stream's last event
                post(exc)
            except Exception as exc:  # a bug: still the stream's last event, never a hang
                post(exc)
                raise
            finally:
                self.admission.leave(ticket, time.monotonic() - started)

        self.executor.submit(work)
        return EventStream(self._events(req, queue), gone)

    async def _events(self, req, queue: asyncio.Queue) -> AsyncIterator[str]:
        chat = isinstance(req, ChatRequest)
        id_ = f"chatcmpl-{uuid.uuid4().hex}" if chat else f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def chunk(text: str | None, finish: str | None = None) -> dict:
            if chat:
                delta = {} if text is None else {"content": text}
                return protocol.chat_chunk(id_, req.model, created, delta, finish)
            return protocol.completion_chunk(id_, req.model, created, text or "", finish)

        if chat:
            yield _sse(
                protocol.chat_chunk(id_, req.model, created, {"role": "assistant", "content": ""})
            )
        while True:
            item = await queue.get()
            if isinstance(item, str):
                yield _sse(chunk(item))
                continue
            if isinstance(item, Completion):
                last = chunk(None, protocol.FINISH.get(item.finish_reason, "stop"))
                yield _sse(last)
                if req.stream_options and req.stream_options.include_usage:
                    yield _sse(protocol.usage_chunk(last, item))
                self.count("served")
            else:
                self.count("refused")
                yield _sse(_error_of(item))
            yield "data: [DONE]\n\n"
            return


class EventStream(StreamingResponse):
    """Server-sent events; when the response ends for any reason (the client went away
    included) `gone` is set, so the pool stops after the next token."""

    def __init__(self, events: AsyncIterator[str], gone: threading.Event) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self.gone = gone

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.gone.set()


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _error_of(exc: BaseException) -> dict:
    if isinstance(exc, ApiError):
        return protocol.error_body(exc.message, exc.type, exc.code, exc.param)
    if isinstance(exc, ForgeError):
        return protocol.error_body(exc.message, "server_error", "forge_error")
    return protocol.error_body(f"{type(exc).__name__}: {exc}", "server_error", "internal_error")


async def _read_json(request: Request) -> object:
    """The body as JSON: 413 past MAX_BODY_BYTES (read no further), 400 when not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is {declared} bytes; at most {MAX_BODY_BYTES}",
                       code="body_too_large")  # fmt: skip
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes", code="body_too_large")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from exc


def _validated(kind: type[BaseModel], body: object):
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        problems = validation_problems(exc, "the body")
        first = exc.errors()[0]["loc"]
        raise ApiError(400, "; ".join(problems), code="invalid_request",
                       param=str(first[0]) if first else None) from exc  # fmt: skip


# --- routes ----------------------------------------------------------------------------


def _service(request: Request) -> Service:
    return request.app.state.service


async def health(request: Request) -> JSONResponse:
    service = _service(request)
    state = service.state()
    return JSONResponse({"status": "paused" if state.paused else "ok", "paused": state.paused,
                         "waiting": state.waiting, "in_flight": state.in_flight})  # fmt: skip


async def models(request: Request) -> JSONResponse:
    service = _service(request)
    service.authorize(request.headers.get("authorization"))
    return JSONResponse(await anyio.to_thread.run_sync(service.models_now))


async def chat_completions(request: Request) -> Response:
    return await _service(request).answer(request, ChatRequest)


async def completions(request: Request) -> Response:
    return await _service(request).answer(request, CompletionRequest)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    _service(request).count("refused")
    return exc.response()


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return ApiError(exc.status_code, str(exc.detail), code=code).response()


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    _service(request).count("refused")
    return ApiError(
        500, f"{type(exc).__name__}: {exc}", "server_error", "internal_error"
    ).response()


async def _keep_state(service: Service) -> None:
    """Keep serve.json current: on a change within STATE_EVERY_S, else every heartbeat."""
    home, last, written = service.config.home, None, 0.0
    while True:
        await anyio.to_thread.run_sync(service.pause_reason)
        state = service.state()
        now = (state.paused, state.served, state.refused, state.waiting, state.in_flight)
        if now != last or time.monotonic() - written > STATE_HEARTBEAT_S:
            await anyio.to_thread.run_sync(write_state, home, state)
            last, written = now, time.monotonic()
        await asyncio.sleep(STATE_EVERY_S)


def make_app(service: Service) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):
        keeper = asyncio.create_task(_keep_state(service))
        try:
            yield
        finally:
            service.stopping.set()  # calls in flight stop after their next token
            keeper.cancel()
            clear_state(service.config.home, service.pid)
            service.executor.shutdown(wait=False)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _bug},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
