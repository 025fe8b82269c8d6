"""The model pool: every model call Forge makes goes through `ModelPool`.

Each base model (a GGUF in models.toml) is loaded once, on first use, into one llama.cpp
context guarded by a lock: requests to a base are served one at a time, never two
threads in one context. A request names a role and optionally a stage adapter; the
adapter is loaded once (llama.cpp's adapter API) and switched per request without
reloading the base. On a switch the context's state is reset, so nothing computed under
one adapter is reused under another. Chat messages are rendered with the model's own
chat template into the exact prompt the model receives; that prompt is what the call
log records.

A caller may also take the text as it is generated (`on_text`, the deltas of exactly the
text the call returns) and stop a call early (`cancelled`, asked after every token): the
same single path serves both, so a streamed answer is the answer.
"""

from __future__ import annotations

import codecs
import ctypes
import dataclasses
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import ForgeError, UsageError
from appliance.models.manifest import BaseModelFile, ModelsManifest, read_manifest, verify_base
from appliance.records import as_json
from appliance.serving import batched
from appliance.serving.batched import BatchContext, Request, log_softmax
from appliance.serving.calllog import CallLog, ModelCall
from appliance.serving.placement import CPU, Placement, detect_gpus, plan
from appliance.serving.threads import FreeCores

MAX_ADAPTERS = 16  # adapters kept loaded per base; older ones are freed (llama.cpp memory)


class AdapterRejected(ForgeError):
    """An adapter cannot be used with the base it was asked for; other requests go on."""


@dataclass(frozen=True)
class Adapter:
    """A stage adapter in GGUF form: `name` is its version (e.g. "scope-v3")."""

    name: str
    path: Path
    scale: float = 1.0


@dataclass(frozen=True)
class Params:
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict | None = None
    logprobs: bool = False

    def to_dict(self) -> dict:
        return as_json(self)  # stop as a list


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop sequence), "length" or "cancelled"
    prompt: str  # exactly what the model received, rendered
    prompt_tokens: int
    completion_tokens: int
    duration_s: float
    base: str
    base_sha256: str
    adapter: str | None
    tokens: tuple[int, ...] = ()
    token_logprobs: tuple[float, ...] | None = None
    call_id: int | None = None

    def json(self):
        """The output parsed as JSON (ValueError when it is not)."""
        return json.loads(self.text)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class Judgement:
    choice: str
    margin: float  # log-probability of the choice minus that of the best other choice
    logprobs: dict[str, float]
    call_id: int | None = None


def load_llama(spec: BaseModelFile, placement: Placement = CPU, lora_path: Path | None = None):
    """llama.cpp's `Llama` for `spec` on `placement`: the settings of every context the pool
    (and the benchmark's direct llama.cpp run) gives a base."""
    # llama.cpp loads only in a process that serves a model (not the CLI's others)
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(spec.path),
        n_ctx=spec.context,
        n_threads=spec.n_threads,
        n_threads_batch=spec.n_threads,
        n_gpu_layers=placement.gpu_layers,
        main_gpu=placement.main_gpu,
        tensor_split=list(placement.tensor_split) or None,
        lora_path=str(lora_path) if lora_path else None,
        logits_all=False,
        verbose=False,
    )


class LoadedBase:
    """One base model in one llama.cpp context, and the adapters loaded onto it."""

    def __init__(self, spec: BaseModelFile, placement: Placement) -> None:
        # llama.cpp loads only in a process that serves a model (not the CLI's others)
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        verify_base(spec)
        self.spec = spec
        self.placement = placement
        self.sha256 = spec.sha256
        self.lock = threading.Lock()
        started = time.monotonic()
        try:
            self.llm = load_llama(spec, placement)
        except (ValueError, RuntimeError) as exc:
            raise ForgeError(
                f"llama.cpp cannot load the base model {spec.name} ({spec.path}): {exc}",
                "check the file with forge doctor; re-run ./install.sh for the default model",
            ) from exc
        self.load_s = time.monotonic() - started
        self._llama_cpp = llama_cpp
        # threads = 0 in models.toml: each call gets the cores free when it starts
        self.free_cores = FreeCores() if spec.threads == 0 else None
        self.n_threads = spec.n_threads
        self._batch: BatchContext | None = None  # made on the first batch
        self.vocab = self.llm._model.vocab
        model = self.llm._model
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.formatter = (
            Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(self.llm.token_eos()),
                bos_token=model.token_get_text(self.llm.token_bos()),
                stop_token_ids=[self.llm.token_eos()],
            )
            if template
            else None
        )
        # (path, size, mtime) -> llama_adapter_lora pointer, least recently used first
        self.adapters: OrderedDict[tuple, object] = OrderedDict()
        self.verified: set[tuple] = set()
        self.active: tuple[tuple, float] | None = None
        self.switches = 0

    # --- adapters ----------------------------------------------------------------------

    def verify(self, adapter: Adapter) -> tuple:
        """Check `adapter` fits this base (once per adapter file); return its cache key.
        Called without the lock: the first check reads the base GGUF (seconds)."""
        path = adapter.path.resolve()
        try:
            st = path.stat()
        except OSError as exc:
            raise AdapterRejected(
                f"adapter {adapter.name}: {path} does not exist",
                "the adapter registry points at a missing file; roll back or re-export it",
            ) from exc
        # A file replaced in place is a different adapter: its size or mtime changes.
        key = (path, st.st_size, st.st_mtime_ns)
        if key in self.verified:
            return key
        # gguf's reader is loaded only by a process that verifies an adapter.
        from appliance.models.gguf_adapter import AdapterMismatch, check_adapter_matches

        try:
            check_adapter_matches(path, self.spec.path)
        except AdapterMismatch as exc:
            raise AdapterRejected(
                f"adapter {adapter.name} does not fit base {self.spec.name}: {exc.message}",
                "adapters are trained for one base; train it again on this base",
            ) from exc
        self.verified.add(key)
        return key

    def _adapter_handle(self, adapter: Adapter, key: tuple):
        """The llama.cpp handle of a verified adapter (lock held), loading it on first use
        and freeing the least recently used ones beyond MAX_ADAPTERS."""
        lib = self._llama_cpp
        if key in self.adapters:
            self.adapters.move_to_end(key)
            return self.adapters[key]
        handle = lib.llama_adapter_lora_init(self.llm.model, str(key[0]).encode())
        if not handle:
            raise AdapterRejected(
                f"llama.cpp refused the adapter {adapter.name} ({key[0]}) for {self.spec.name}",
                "re-export the adapter from its PEFT checkpoint",
            )
        self.adapters[key] = handle
        batch = self._batch.adapter if self._batch is not None else None
        in_use = {k[0] for k in (self.active, batch) if k is not None}  # set on a context
        while len(self.adapters) > MAX_ADAPTERS:
            old_key, old = next(iter(self.adapters.items()))
            if old_key in in_use:
                self.adapters.move_to_end(old_key)
                continue
            del self.adapters[old_key]
            lib.llama_adapter_lora_free(old)
        return handle

    def use(self, adapter: Adapter | None) -> None:
        """Make `adapter` (None: the bare base) the one the next decode runs with (lock
        held)."""
        key = self.verify(adapter) if adapter else None
        want = (key, adapter.scale) if adapter else None
        if want == self.active:
            return
        self._set_adapter(self.llm.ctx, adapter, key)
        # State (KV cache, logits) computed under the previous adapter must not be reused.
        self.llm.reset()
        self.active = want
        self.switches += 1

    def _set_adapter(self, ctx, adapter: Adapter | None, key: tuple | None) -> None:
        lib = self._llama_cpp
        if adapter is None:
            lib.llama_set_adapters_lora(ctx, None, 0, None)
            return
        handle = self._adapter_handle(adapter, key)
        handles = (lib.llama_adapter_lora_p_ctypes * 1)(handle)
        scales = (ctypes.c_float * 1)(adapter.scale)
        if lib.llama_set_adapters_lora(ctx, handles, 1, scales) != 0:
            raise AdapterRejected(f"llama.cpp could not apply the adapter {adapter.name}")

    def batch_context(self, adapter: Adapter | None) -> BatchContext:
        """The context for several sequences at once, with `adapter` set and the cores free
        now as its threads (lock held); made on first use."""
        if self._batch is None:
            self._batch = BatchContext(self.llm, self._llama_cpp, self.spec.context,
                                       self.spec.parallel, self.n_threads)  # fmt: skip
        key = self.verify(adapter) if adapter else None
        want = (key, adapter.scale) if adapter else None
        if self._batch.adapter != want:
            self._set_adapter(self._batch.ctx, adapter, key)
            self._batch.adapter = want
        self._batch.set_threads(self.fit_threads())
        return self._batch

    # --- prompts and decoding (call with the lock held) ------------------------------

    def fit_threads(self) -> int:
        """The threads the next decode runs on: with `threads = 0`, the cores free now
        (appliance.serving.threads), set on the context when they changed."""
        if self.free_cores is not None:
            n = self.free_cores()
            if n != self.n_threads:
                self._llama_cpp.llama_set_n_threads(self.llm.ctx, n, n)
                self.n_threads = n
        return self.n_threads

    def render(self, messages: Sequence[dict]) -> tuple[str, bool]:
        """The chat prompt text, and whether it already holds the BOS token."""
        if self.formatter is None:
            raise UsageError(
                f"base model {self.spec.name} has no chat template", "use plain completion"
            )
        result = self.formatter(messages=list(messages))
        return result.prompt, bool(result.added_special)

    def tokenize(self, prompt: str, has_bos: bool = False) -> list[int]:
        add_bos = self.llm._model.add_bos_token() and not has_bos
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def generate(
        self,
        tokens: list[int],
        params: Params,
        on_token: Callable[[list[int]], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> tuple[list[int], str, list[float]]:
        """Decode after `tokens`: (the new tokens, why it ended, their logprobs if asked).
        `on_token` sees the tokens so far after each one; `cancelled` ends it early."""
        lib = self._llama_cpp
        room = self.spec.context - len(tokens)
        if room <= 0:
            raise UsageError(
                f"the prompt is {len(tokens)} tokens; {self.spec.name} holds {self.spec.context}",
                "shorten the prompt or raise `context` for this base in models.toml",
            )
        grammar = None
        if params.json_schema is not None:
            _check_schema(params.json_schema)
            grammar = batched.json_grammar(lib, params.json_schema)
        self.fit_threads()
        if params.seed is not None:
            # A seeded call is computed from scratch: reusing a cached prompt prefix changes
            # the numbers slightly, and sampled output with them.
            self.llm.set_seed(params.seed)
            self.llm.reset()
        out: list[int] = []
        logprobs: list[float] = []
        finish = "length"
        stops = [s.encode() for s in params.stop]
        window = max((len(s) for s in stops), default=0) + 16
        text = b""
        limit = min(params.max_tokens, room)
        for token in self.llm.generate(
            tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=0.0,
            temp=params.temperature,
            repeat_penalty=1.0,
            grammar=grammar,
        ):
            if lib.llama_vocab_is_eog(self.vocab, token):
                finish = "stop"
                break
            if params.logprobs:
                row = np.ctypeslib.as_array(
                    lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),)
                )
                logprobs.append(float(log_softmax(row.astype(np.float64))[token]))
            if stops:  # only the end of the text can hold a new stop sequence
                text += self.llm.detokenize([token], prev_tokens=tokens + out)
            out.append(token)
            if stops and any(stop in text[-window:] for stop in stops):
                finish = "stop"
                break
            if on_token is not None:
                on_token(out)
            if len(out) >= limit:
                break
            if cancelled is not None and cancelled():
                finish = "cancelled"
                break
        return out, finish, logprobs

    def last_logprobs(self, tokens: list[int]) -> np.ndarray:
        """Log-probabilities of the next token after `tokens` (evaluated from scratch)."""
        self.fit_threads()
        self.llm.reset()
        self.llm.eval(tokens)
        row = np.ctypeslib.as_array(
            self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),)
        )
        return log_softmax(row.astype(np.float64))

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()  # before the model it was made on
        self.llm.close()


class ModelPool:
    """Base models by role, loaded lazily; adapters switched per request; calls logged."""

    def __init__(
        self,
        manifest: ModelsManifest,
        *,
        log: Callable[[ModelCall], int | None] | None = None,
        gpus: list | None = None,
    ) -> None:
        self.manifest = manifest
        self.log = log
        gpus = detect_gpus() if gpus is None else gpus
        self.gpus = gpus
        self.placements = plan(manifest.bases, gpus)
        self._bases: dict[str, LoadedBase] = {}
        self._loading = threading.Lock()

    @classmethod
    def from_config(cls, config, *, log: bool = True, source: str | None = None) -> ModelPool:
        """The pool for this FORGE_HOME; its calls are logged stamped with `source`."""
        manifest = read_manifest(config.models_manifest)
        return cls(manifest, log=CallLog(config.db_path, source=source) if log else None)

    def base_for(self, role: str) -> LoadedBase:
        spec = self.manifest.for_role(role)
        with self._loading:
            if spec.name not in self._bases:
                self._bases[spec.name] = LoadedBase(spec, self.placements.get(spec.name, CPU))
            return self._bases[spec.name]

    def count_tokens(self, role: str, text: str) -> int:
        """Tokens `text` takes for the base serving `role` (its own tokenizer)."""
        return len(self.base_for(role).tokenize(text))

    def prompt_size(
        self, role: str, *, messages: Sequence[dict] | None = None, prompt: str = ""
    ) -> tuple[int, int]:
        """(tokens the chat `messages`, else `prompt`, take for the base serving `role`; that
        base's context). Without the base's lock: rendering and tokenizing only read the
        model, so a request can be measured while another decodes."""
        base = self.base_for(role)
        text, has_bos = base.render(messages) if messages is not None else (prompt, False)
        return len(base.tokenize(text, has_bos)), base.spec.context

    def token_pieces(self, role: str, tokens: Sequence[int]) -> list[str]:
        """Each token's own text (for per-token log-probabilities)."""
        base = self.base_for(role)
        return [base.llm.detokenize([t]).decode("utf-8", errors="replace") for t in tokens]

    def render_prompt(self, role: str, messages: Sequence[dict]) -> str:
        """The prompt text the base serving `role` would decode for these chat messages."""
        base = self.base_for(role)
        with base.lock:
            return base.render(messages)[0]

    @property
    def loaded(self) -> dict[str, LoadedBase]:
        return dict(self._bases)

    # --- calls -----------------------------------------------------------------------

    def chat(
        self,
        role: str,
        messages: Sequence[dict],
        *,
        adapter: Adapter | None = None,
        params: Params | None = None,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        **overrides,
    ) -> Completion:
        params = _params(params, overrides)
        base = self.base_for(role)
        if adapter is not None:
            base.verify(adapter)
        with base.lock:
            prompt, has_bos = base.render(messages)
            return self._complete(base, role, "chat", prompt, has_bos, adapter, params, messages,
                                  _Streaming(on_text, cancelled))  # fmt: skip

    def chat_many(
        self,
        role: str,
        requests: Sequence[tuple[Sequence[dict], Params]],
        *,
        adapter: Adapter | None = None,
    ) -> list[Completion]:
        """Chat requests to one base under one adapter, decoded together (results in the
        order asked): requests with the same messages share one prefill (the K samples of
        one prompt), the others run side by side, up to the base's `parallel` at a time.
        A batch that does not fit the context is served one request at a time. Each
        request is its own call-log row; `extra` names its batch and sequence."""
        base = self.base_for(role)
        if adapter is not None:
            base.verify(adapter)
        for _, params in requests:
            if params.json_schema is not None:
                _check_schema(params.json_schema)
        results: list[Completion] = []
        with base.lock:
            rendered = [(base.render(messages), messages, p) for messages, p in requests]
            for start in range(0, len(rendered), base.spec.parallel):
                chunk = rendered[start : start + base.spec.parallel]
                results += self._complete_batch(base, role, adapter, chunk)
        return results

    def _complete_batch(self, base: LoadedBase, role, adapter, chunk) -> list[Completion]:
        asked = [Request(tuple(base.tokenize(prompt, bos)), params)
                 for (prompt, bos), _, params in chunk]  # fmt: skip
        fits = batched.fits(asked, base.spec.context, base.spec.parallel)
        if len(chunk) == 1 or not fits:
            # Said in the call log: which requests a batch could not hold, and why.
            why = (f"a request of its batch needs more than a sequence's {base.spec.context} "
                   "tokens of context (prompt and max_tokens): served one at a time")  # fmt: skip
            note = None if fits else {"unbatched": why}
            return [self._complete(base, role, "chat", prompt, bos, adapter, params, messages,
                                   _Streaming(None, None), note)
                    for (prompt, bos), messages, params in chunk]  # fmt: skip
        calls = [self._call("chat", role, base, adapter, prompt, params.to_dict(), messages)
                 for (prompt, _), messages, params in chunk]  # fmt: skip
        started = time.monotonic()
        try:
            context = base.batch_context(adapter)
            decoded = context.decode(asked)
        except Exception as exc:
            for call in calls:
                self._record(call, started, error=exc)
            raise
        batch = {"threads": context.threads, "batch": uuid.uuid4().hex[:12],
                 "batch_size": len(chunk)}  # fmt: skip
        return [
            self._finished(base, call, started, request, done, adapter, batch | {"sequence": i})
            for i, (call, request, done) in enumerate(zip(calls, asked, decoded, strict=True))
        ]

    def _finished(self, base, call, started, request: Request, done, adapter, extra):
        """The Completion of one sequence of a batch, logged."""
        text = base.llm.detokenize(list(done.tokens)).decode("utf-8", errors="replace")
        for stop in request.params.stop:
            if stop in text:
                text = text[: text.index(stop)]
        call, call_id = self._record(
            call, started, output=text, finish_reason=done.finish,
            prompt_tokens=len(request.tokens), completion_tokens=len(done.tokens), extra=extra,
        )  # fmt: skip
        return Completion(
            text=text,
            finish_reason=done.finish,
            prompt=call.prompt,
            prompt_tokens=len(request.tokens),
            completion_tokens=len(done.tokens),
            duration_s=call.duration_s,
            base=base.spec.name,
            base_sha256=base.sha256,
            adapter=adapter.name if adapter else None,
            tokens=done.tokens,
            token_logprobs=done.logprobs if request.params.logprobs else None,
            call_id=call_id,
        )

    def complete(
        self,
        role: str,
        prompt: str,
        *,
        adapter: Adapter | None = None,
        params: Params | None = None,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        **overrides,
    ) -> Completion:
        params = _params(params, overrides)
        base = self.base_for(role)
        if adapter is not None:
            base.verify(adapter)
        with base.lock:
            return self._complete(base, role, "completion", prompt, False, adapter, params, None,
                                  _Streaming(on_text, cancelled))  # fmt: skip

    def judge(
        self,
        role: str,
        messages: Sequence[dict],
        choices: Sequence[str] = ("A", "B"),
        *,
        adapter: Adapter | None = None,
    ) -> Judgement:
        """Ask a question whose answer is one token; compare the choices' log-probabilities."""
        if len(choices) < 2:
            raise UsageError("a judgement needs at least two choices")
        base = self.base_for(role)
        if adapter is not None:
            base.verify(adapter)
        with base.lock:
            prompt, has_bos = base.render(messages)
            ids = {}
            for choice in choices:
                pieces = base.llm.tokenize(choice.encode(), add_bos=False, special=False)
                if len(pieces) != 1:
                    raise UsageError(
                        f"the choice {choice!r} is {len(pieces)} tokens for {base.spec.name}; "
                        "a judgement reads one token",
                        "use single-token answers such as A and B",
                    )
                ids[choice] = pieces[0]
            call = self._call(
                "judge", role, base, adapter, prompt, {"choices": list(choices)}, messages
            )
            started = time.monotonic()
            try:
                base.use(adapter)
                tokens = base.tokenize(prompt, has_bos)
                logprobs = base.last_logprobs(tokens)
            except Exception as exc:
                self._record(call, started, error=exc)
                raise
            scores = {c: float(logprobs[i]) for c, i in ids.items()}
            ranked = sorted(scores, key=scores.get, reverse=True)
            _, call_id = self._record(
                call, started, output=ranked[0], prompt_tokens=len(tokens),
                extra={"logprobs": scores},
            )  # fmt: skip
        return Judgement(ranked[0], scores[ranked[0]] - scores[ranked[1]], scores, call_id)

    def _call(
        self, kind, role, base: LoadedBase, adapter, prompt, params: dict, messages=None
    ) -> ModelCall:
        """The call as it starts: what was asked, of which base and adapter."""
        return ModelCall(
            kind=kind,
            role=role,
            base=base.spec.name,
            base_sha256=base.sha256,
            adapter=adapter.name if adapter else None,
            prompt=prompt,
            params=params,
            messages=list(messages) if messages is not None else None,
        )

    def _record(
        self, call: ModelCall, started: float, error: BaseException | None = None, **ended
    ) -> tuple[ModelCall, int | None]:
        """The call as it ended (its duration, error, output...), logged: (it, its id)."""
        if error is not None:
            ended["error"] = f"{type(error).__name__}: {error}"
        call = dataclasses.replace(call, duration_s=time.monotonic() - started, **ended)
        return call, (self.log(call) if self.log else None)

    def _complete(self, base, role, kind, prompt, has_bos, adapter, params, messages,
                  streaming: _Streaming, note: dict | None = None):  # fmt: skip
        call = self._call(kind, role, base, adapter, prompt, params.to_dict(), messages)
        started = time.monotonic()
        deltas = (
            _TextDeltas(base.llm.detokenize, params.stop, streaming.on_text)
            if streaming.on_text is not None
            else None
        )
        try:
            base.use(adapter)
            tokens = base.tokenize(prompt, has_bos)
            out, finish, logprobs = base.generate(
                tokens, params, deltas.tokens if deltas else None, streaming.cancelled
            )
        except Exception as exc:
            self._record(call, started, error=exc)
            raise
        text = base.llm.detokenize(out).decode("utf-8", errors="replace")
        for stop in params.stop:
            if stop in text:
                text = text[: text.index(stop)]
        if deltas is not None:
            deltas.finish(text)
        call, call_id = self._record(
            call, started, output=text, finish_reason=finish, prompt_tokens=len(tokens),
            completion_tokens=len(out), extra={"threads": base.n_threads, **(note or {})},
        )  # fmt: skip
        return Completion(
            text=text,
            finish_reason=finish,
            prompt=prompt,
            prompt_tokens=len(tokens),
            completion_tokens=len(out),
            duration_s=call.duration_s,
            base=base.spec.name,
            base_sha256=base.sha256,
            adapter=adapter.name if adapter else None,
            tokens=tuple(out),
            token_logprobs=tuple(logprobs) if params.logprobs else None,
            call_id=call_id,
        )

    def close(self) -> None:
        with self._loading:
            for base in self._bases.values():
                with base.lock:  # a request still running finishes first
                    base.close()
            self._bases.clear()


@dataclass(frozen=True)
class _Streaming:
    """What a caller asked of a call in flight: its text as it comes, a way to stop it."""

    on_text: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] | None = None


class _TextDeltas:
    """Tokens as they are generated → the new text, so that the deltas add up to exactly the
    text the call returns: half a UTF-8 character waits for its rest, and a tail that may
    begin a stop sequence waits until it cannot (a stop sequence is never sent)."""

    def __init__(self, detokenize, stops: Sequence[str], send: Callable[[str], None]) -> None:
        self._detokenize = detokenize
        self._stops = tuple(stops)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._send = send
        self.sent = ""

    def tokens(self, out: list[int]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(self._detokenize(out), final=False)
        cuts = [text.index(stop) for stop in self._stops if stop in text]
        if cuts:
            text = text[: min(cuts)]
        elif self._hold:
            text = text[: max(0, len(text) - self._hold)]
        self._emit(text)

    def finish(self, text: str) -> None:
        self._emit(text)

    def _emit(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            delta, self.sent = text[len(self.sent) :], text
            self._send(delta)


MAX_SCHEMA_LENGTH = 256


def _check_schema(schema) -> None:
    """Refuse schema bounds llama.cpp cannot take: it expands a string's maxLength into
    one grammar rule per character, and long ones crashed its sampler (a segfault)."""
    if isinstance(schema, dict):
        for key in ("maxLength", "maxItems"):
            bound = schema.get(key)
            if isinstance(bound, int) and bound > MAX_SCHEMA_LENGTH:
                raise UsageError(
                    f"the JSON schema has {key} {bound}; the pool takes at most "
                    f"{MAX_SCHEMA_LENGTH}",
                    "bound long answers with max_tokens instead",
                )
        for value in schema.values():
            _check_schema(value)
    elif isinstance(schema, list):
        for value in schema:
            _check_schema(value)


def _params(params: Params | None, overrides: dict) -> Params:
    params = params or Params()
    if "stop" in overrides and isinstance(overrides["stop"], str):
        overrides["stop"] = (overrides["stop"],)
    if "stop" in overrides:
        overrides["stop"] = tuple(overrides["stop"])
    try:
        return dataclasses.replace(params, **overrides)
    except TypeError as exc:
        raise UsageError(f"unknown generation parameter: {exc}") from exc
