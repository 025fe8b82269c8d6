"""Several sequences decoded together in one llama.cpp context: the K samples of one
prompt from a single prefill, and independent requests to one base under one adapter side
by side (issue 20).

A `BatchContext` is a second llama.cpp context on a loaded base's model, made on first
use (the base's own context stays as it is for single calls, streaming and judgements):
`parallel` sequences, each with a KV cache of its own of the base's context size. (One
unified cache shared by all sequences made every token attend over every sequence's
cells: evaluation, with four different long prompts in a batch, ran at 0.78× to 1.17× of
one at a time; with a cache per sequence, at 1.04× to 1.22×.) For a batch:

1. The cache is cleared: every batch is computed from scratch, so a seeded batch repeats
   exactly in the same composition.
2. Each distinct prompt is evaluated once into the first sequence that asks for it, its
   cache copied (llama_memory_seq_cp) to the other sequences with the same prompt, and
   each of them samples its first token.
3. Every step decodes the newest token of every live sequence in one llama_decode, and
   each samples its next token from its own logits with its own sampler chain (the
   grammar of its JSON schema, top-k, top-p, temperature, its seed; greedy at 0).

A sequence ends at an end-of-generation token, at one of its stop strings, or at its
max_tokens. `fits` says whether a batch has room; the pool serves one that has not one
request at a time.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from appliance.errors import ForgeError

if TYPE_CHECKING:
    from appliance.serving.pool import Params

PREFILL_CHUNK = 512  # prompt tokens per llama_decode while prefilling
RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws one
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass(frozen=True)
class Request:
    tokens: tuple[int, ...]  # the prompt, tokenized
    params: Params


@dataclass(frozen=True)
class Decoded:
    tokens: tuple[int, ...]
    finish: str  # "stop" or "length"
    logprobs: tuple[float, ...]  # of each token, when its request asked for them


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def fits(requests: Sequence[Request], context: int, parallel: int) -> bool:
    """Whether the batch has room: at most `parallel` sequences, each prompt with its
    max_tokens within `context`."""
    return len(requests) <= parallel and all(
        len(r.tokens) + r.params.max_tokens <= context for r in requests
    )


class BatchContext:
    """A llama.cpp context for up to `parallel` sequences on `llm`'s model."""

    def __init__(self, llm, lib, context: int, parallel: int, threads: int) -> None:
        self.lib, self.llm, self.context, self.parallel = lib, llm, context, parallel
        params = lib.llama_context_default_params()
        params.n_ctx = context * parallel
        params.n_batch = params.n_ubatch = min(context, PREFILL_CHUNK)
        params.n_seq_max = parallel
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise ForgeError(
                f"llama.cpp could not make a context for {parallel} sequences of {context} tokens",
                "lower `parallel` (or `context`) for this base in models.toml",
            )
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(max(params.n_batch, parallel), 0, 1)
        self.threads = threads
        self.adapter: object = None  # what was last set on this context (the pool's key)
        self.vocab = llm._model.vocab
        self.n_vocab = llm.n_vocab()

    def set_threads(self, threads: int) -> None:
        if threads != self.threads:
            self.lib.llama_set_n_threads(self.ctx, threads, threads)
            self.threads = threads

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None

    # --- one batch ---------------------------------------------------------------------

    def decode(self, requests: Sequence[Request]) -> list[Decoded]:
        if not fits(requests, self.context, self.parallel):
            raise ForgeError(f"a batch of {len(requests)} requests does not fit this context")
        self.lib.llama_memory_clear(self.memory, True)
        seqs = [_Sequence(self, i, r) for i, r in enumerate(requests)]
        try:
            self._prefill(seqs)
            while live := [s for s in seqs if s.finish is None]:
                self._step(live)
        finally:
            for s in seqs:
                s.free()
        return [s.decoded() for s in seqs]

    def _prefill(self, seqs: list[_Sequence]) -> None:
        first: dict[tuple[int, ...], _Sequence] = {}
        for s in seqs:
            if s.request.tokens not in first:
                first[s.request.tokens] = s
                self._evaluate(s.request.tokens, s.id)
                for other in seqs:
                    if other is not s and other.request.tokens == s.request.tokens:
                        self.lib.llama_memory_seq_cp(self.memory, s.id, other.id, -1, -1)
                # the prompt's last logits are those of this decode: sample from them now
                for same in (o for o in seqs if o.request.tokens == s.request.tokens):
                    same.sample(self.batch.n_tokens - 1)

    def _evaluate(self, tokens: Sequence[int], seq: int) -> None:
        for start in range(0, len(tokens), PREFILL_CHUNK):
            chunk = tokens[start : start + PREFILL_CHUNK]
            last = start + len(chunk) == len(tokens)
            self._fill([(t, start + i, seq, last and i == len(chunk) - 1)
                        for i, t in enumerate(chunk)])  # fmt: skip
            self._decode()

    def _step(self, live: list[_Sequence]) -> None:
        self._fill([(s.out[-1], s.position - 1, s.id, True) for s in live])
        self._decode()
        for index, s in enumerate(live):
            s.sample(index)

    def _fill(self, entries: list[tuple[int, int, int, bool]]) -> None:
        batch = self.batch
        batch.n_tokens = len(entries)
        for i, (token, position, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

    def _decode(self) -> None:
        if (code := self.lib.llama_decode(self.ctx, self.batch)) != 0:
            raise ForgeError(f"llama.cpp could not decode a batch (llama_decode returned {code})")


class _Sequence:
    """One request of a batch while it is decoded: its sampler, its tokens so far."""

    def __init__(self, owner: BatchContext, seq: int, request: Request) -> None:
        self.owner, self.id, self.request = owner, seq, request
        self.sampler = _sampler_chain(owner.lib, owner.vocab, request.params)
        self.grammar = _grammar(owner.lib, owner.vocab, request.params)
        self.out: list[int] = []
        self.logprobs: list[float] = []
        self.text = b""
        self.stops = [s.encode() for s in request.params.stop]
        self.window = max((len(s) for s in self.stops), default=0) + 16
        self.limit = request.params.max_tokens
        self.finish: str | None = None if self.limit > 0 else "length"

    @property
    def position(self) -> int:
        """The position of the next token this sequence feeds to the model."""
        return len(self.request.tokens) + len(self.out)

    def sample(self, index: int) -> None:
        lib, ctx = self.owner.lib, self.owner.ctx
        token = lib.llama_sampler_sample(self.sampler, ctx, index)
        if self.grammar is not None:
            token = self._grammatical(token, index)
            lib.llama_sampler_accept(self.grammar, token)
        if lib.llama_vocab_is_eog(self.owner.vocab, token):
            self.finish = "stop"
            return
        if self.request.params.logprobs:
            row = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, index),
                                        shape=(self.owner.n_vocab,))  # fmt: skip
            self.logprobs.append(float(log_softmax(row.astype(np.float64))[token]))
        if self.stops:  # only the end of the text can hold a new stop sequence
            prev = list(self.request.tokens) + self.out
            self.text += self.owner.llm.detokenize([token], prev_tokens=prev)
        self.out.append(token)
        if self.stops and any(stop in self.text[-self.window :] for stop in self.stops):
            self.finish = "stop"
        elif len(self.out) >= self.limit:
            self.finish = "length"

    def _grammatical(self, token: int, index: int) -> int:
        """`token` if the grammar allows it, else a draw from the logits the grammar allows
        (llama.cpp's common sampler does the same). Masking all 49k candidates costs about
        as much as the decode step itself on a small model; checking one costs nothing. At
        temperature 0 the token is the same either way: the best one the grammar allows."""
        lib = self.owner.lib
        one = (lib.llama_token_data * 1)(lib.llama_token_data(token, 1.0, 0.0))
        single = lib.llama_token_data_array(one, 1, -1, False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(single))
        if one[0].logit != -np.inf:
            return token
        n = self.owner.n_vocab
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self.owner.ctx, index), shape=(n,))
        data = (lib.llama_token_data * n)()
        view = np.ctypeslib.as_array(data).view(TOKEN_DATA)  # id, logit, p
        view["id"], view["logit"], view["p"] = np.arange(n), logits, 0.0
        candidates = lib.llama_token_data_array(data, n, -1, False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        lib.llama_sampler_apply(self.sampler, ctypes.byref(candidates))
        return int(data[candidates.selected].id)

    def free(self) -> None:
        self.owner.lib.llama_sampler_free(self.sampler)
        if self.grammar is not None:
            self.owner.lib.llama_sampler_free(self.grammar)

    def decoded(self) -> Decoded:
        return Decoded(tuple(self.out), self.finish or "length", tuple(self.logprobs))


# llama-cpp-python's JSON-schema grammar lets a string hold raw control characters (a line
# break inside "..."), which JSON forbids: the answer then fails to parse. llama.cpp's own
# converter excludes them; so does this.
LOOSE_CHAR = 'char ::= [^"\\\\] |'
STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_grammar(lib, schema: dict):
    """The llama.cpp grammar (a LlamaGrammar) that only JSON valid against `schema` meets."""
    text = lib.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    if LOOSE_CHAR not in text and "string" in text:
        raise ForgeError("llama-cpp-python's JSON grammar changed: its string rule is unknown")
    return lib.LlamaGrammar.from_string(text.replace(LOOSE_CHAR, STRICT_CHAR), verbose=False)


def _grammar(lib, vocab, params: Params):
    """The grammar sampler of a sequence's JSON schema, or None."""
    if params.json_schema is None:
        return None
    grammar = json_grammar(lib, params.json_schema)
    return lib.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())


def _sampler_chain(lib, vocab, params: Params):
    """The sampler chain of one sequence: greedy at temperature 0, else top-k, top-p,
    temperature and a draw with its own seed (its grammar is applied apart: _grammatical)."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    add: Callable = lambda sampler: lib.llama_sampler_chain_add(chain, sampler)  # noqa: E731
    if params.temperature <= 0:
        add(lib.llama_sampler_init_greedy())
        return chain
    add(lib.llama_sampler_init_top_k(params.top_k))
    add(lib.llama_sampler_init_top_p(params.top_p, 1))
    add(lib.llama_sampler_init_temp(params.temperature))
    add(lib.llama_sampler_init_dist(RANDOM_SEED if params.seed is None else params.seed))
    return chain
