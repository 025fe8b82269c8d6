"""Several sequences in one llama.cpp batch (`ModelPool.chat_many`), with the real SmolLM2
model: K samples of one prompt from one prefill, independent requests side by side, each
with its own sampler, schema and stops; the call log keeps one row per sequence."""

from __future__ import annotations

import ctypes
import dataclasses
import json
from pathlib import Path

import pytest

from appliance.config import FORGE_ROOT
from appliance.models.manifest import read_manifest
from appliance.serving.bench import synthetic_adapter
from appliance.serving.calllog import CallLog
from appliance.serving.pool import Adapter, ModelPool, Params
from appliance.store import connect

MANIFEST = FORGE_ROOT / "models" / "models.toml"
CODE = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
FRUIT = [{"role": "user", "content": "Name one fruit and say why you like it."}]
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = {
    "type": "object",
    "properties": {"fruit": {"type": "string"}, "sweet": {"type": "boolean"}},
    "required": ["fruit", "sweet"],
}


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("batched") / "forge.db"
    connect(path).conn.close()
    return path


def _pool(db_path: Path | None = None, **base) -> ModelPool:
    manifest = read_manifest(MANIFEST)
    spec = dataclasses.replace(manifest.for_role("coder"), **base)
    manifest = dataclasses.replace(manifest, bases=(spec,))
    return ModelPool(manifest, log=CallLog(db_path) if db_path else None, gpus=[])


@pytest.fixture(scope="module")
def pool(db_path):
    pool = _pool(db_path)
    yield pool
    pool.close()


def _rows(db_path: Path, ids) -> list[tuple]:
    marks = ",".join("?" * len(ids))
    return (
        connect(db_path)
        .execute(
            f"SELECT id, prompt, output, completion_tokens, extra FROM model_calls "
            f"WHERE id IN ({marks}) ORDER BY id",
            list(ids),
        )
        .fetchall()
    )


def test_k_samples_of_one_prompt_fit_their_schema_differ_and_are_logged_apart(pool, db_path):
    asked = [(FRUIT, Params(max_tokens=64, temperature=0.7, seed=seed, json_schema=ANSWER))
             for seed in (1, 2, 3, 4)]  # fmt: skip
    done = pool.chat_many("coder", asked)
    answers = [json.loads(c.text) for c in done]
    assert all(isinstance(a["fruit"], str) and isinstance(a["sweet"], bool) for a in answers)
    assert len({c.text for c in done}) >= 2, [c.text for c in done]  # seeds differ: samples do
    rows = _rows(db_path, [c.call_id for c in done])
    assert [r[2] for r in rows] == [c.text for c in done]
    assert {r[1] for r in rows} == {done[0].prompt} and "Name one fruit" in done[0].prompt
    extras = [json.loads(r[4]) for r in rows]
    assert len({e["batch"] for e in extras}) == 1
    assert [e["sequence"] for e in extras] == [0, 1, 2, 3]
    assert {e["batch_size"] for e in extras} == {4}


def test_a_seeded_batch_repeats_exactly_and_greedy_twins_agree(pool):
    asked = [
        (CODE, Params(max_tokens=40, temperature=0.9, seed=7)),
        (CAPITAL, Params(max_tokens=40)),
        (CODE, Params(max_tokens=40)),
        (CODE, Params(max_tokens=40)),
    ]
    first = pool.chat_many("coder", asked)
    again = pool.chat_many("coder", asked)
    assert [c.tokens for c in first] == [c.tokens for c in again]
    assert first[2].tokens == first[3].tokens  # one prefill, two greedy continuations
    assert first[1].text != first[2].text  # the other prompt was its own sequence
    assert all(c.completion_tokens > 0 for c in first)


def test_each_sequence_ends_on_its_own_stop_its_length_or_the_end_of_its_turn(pool):
    done = pool.chat_many(
        "coder",
        [
            (CODE, Params(max_tokens=64, stop=("def ",))),
            (CODE, Params(max_tokens=5)),
            (CAPITAL, Params(max_tokens=64, logprobs=True)),
        ],
    )
    assert done[0].finish_reason == "stop" and "def " not in done[0].text
    assert done[1].finish_reason == "length" and done[1].completion_tokens == 5
    assert len(done[2].token_logprobs) == done[2].completion_tokens
    assert all(lp <= 0 for lp in done[2].token_logprobs)
    assert done[0].token_logprobs is None


def test_what_does_not_fit_a_batch_is_served_one_request_at_a_time(db_path):
    small = _pool(db_path, parallel=2, context=256)
    try:
        asked = [(CODE, Params(max_tokens=24)), (CAPITAL, Params(max_tokens=24)),
                 (FRUIT, Params(max_tokens=24))]  # fmt: skip
        in_twos = small.chat_many("coder", asked)
        roomy = [(CODE, Params(max_tokens=240)), (CAPITAL, Params(max_tokens=24))]
        too_long = small.chat_many("coder", roomy)  # a prompt and 240 tokens > 256
    finally:
        small.close()
    extras = [json.loads(r[4]) for r in _rows(db_path, [c.call_id for c in in_twos])]
    assert [e.get("batch_size") for e in extras] == [2, 2, None]  # parallel = 2: then alone
    extras = [json.loads(r[4]) for r in _rows(db_path, [c.call_id for c in too_long])]
    assert all("batch" not in e for e in extras) and all(c.text for c in too_long)
    assert all("more than a sequence's 256 tokens" in e["unbatched"] for e in extras)  # it says so
    assert "unbatched" not in json.loads(_rows(db_path, [in_twos[2].call_id])[0][4])


def test_a_batch_runs_under_its_adapter(pool, tmp_path):
    base = read_manifest(MANIFEST).for_role("coder")
    adapter = Adapter("coder-v1", synthetic_adapter(base.path, tmp_path / "a.gguf", seed=3), 8.0)
    asked = [(CODE, Params(max_tokens=32)), (CAPITAL, Params(max_tokens=32))]
    bare = pool.chat_many("coder", asked)
    adapted = pool.chat_many("coder", asked, adapter=adapter)
    bare_again = pool.chat_many("coder", asked)
    assert [c.adapter for c in adapted] == ["coder-v1", "coder-v1"]
    assert [c.tokens for c in adapted] != [c.tokens for c in bare]
    assert [c.tokens for c in bare_again] == [c.tokens for c in bare]  # and it is taken off


def test_greedy_answers_under_a_schema_are_the_same_batched_and_alone(pool):
    # A batch checks the sampled token against the grammar and masks the whole vocabulary
    # only when it fails; the single path always masks it. Greedy, both pick the best
    # token the grammar allows.
    asked = [(FRUIT, Params(max_tokens=48, json_schema=ANSWER)),
             (CAPITAL, Params(max_tokens=48, json_schema=ANSWER))]  # fmt: skip
    together = pool.chat_many("coder", asked)
    alone = [pool.chat_many("coder", [one])[0] for one in asked]
    assert [c.tokens for c in together] == [c.tokens for c in alone]
    assert all(json.loads(c.text) for c in together)


def test_the_json_grammar_keeps_raw_control_characters_out_of_strings():
    import llama_cpp

    from appliance.serving.batched import json_grammar

    llm = llama_cpp.Llama(str(read_manifest(MANIFEST).for_role("coder").path),
                          vocab_only=True, verbose=False)  # fmt: skip
    vocab = llm._model.vocab
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}

    def allows(grammar, text: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode(), grammar._root.encode()
        )
        try:
            for token in llm.tokenize(b'{"a": "x', add_bos=False, special=False):
                llama_cpp.llama_sampler_accept(sampler, token)
            (token,) = llm.tokenize(text.encode(), add_bos=False, special=False)
            one = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 1.0, 0.0))
            candidates = llama_cpp.llama_token_data_array(one, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
            return one[0].logit != float("-inf")
        finally:
            llama_cpp.llama_sampler_free(sampler)

    loose = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    assert allows(loose, "\n")  # llama-cpp-python's own: json.loads would refuse the answer
    strict = json_grammar(llama_cpp, schema)
    assert not allows(strict, "\n") and not allows(strict, "\t")
    assert allows(strict, "y") and allows(strict, '"')
