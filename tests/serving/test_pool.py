"""The model pool with the real SmolLM2 model and the real llama.cpp."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from appliance.config import FORGE_ROOT
from appliance.errors import ConfigError, UsageError
from appliance.models.manifest import ModelFileError, read_manifest, verify_base
from appliance.serving.calllog import CallLog
from appliance.serving.placement import Gpu, plan
from appliance.serving.pool import ModelPool
from appliance.store import connect

MANIFEST = FORGE_ROOT / "models" / "models.toml"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "forge.db"
    connect(path).conn.close()
    return path


@pytest.fixture(scope="module")
def pool(db_path):
    pool = ModelPool(read_manifest(MANIFEST), log=CallLog(db_path), gpus=[])
    yield pool
    pool.close()


def test_chat_is_logged_with_exactly_the_prompt_the_model_received(pool, db_path):
    import llama_cpp

    result = pool.chat("coder", QUESTION, max_tokens=24)
    assert result.completion_tokens > 0 and result.text.strip()
    row = (
        connect(db_path)
        .execute(
            "SELECT prompt, messages, output, prompt_tokens, completion_tokens, base_sha256, "
            "adapter, kind FROM model_calls WHERE id = ?",
            [result.call_id],
        )
        .fetchone()
    )
    prompt, messages, output, n_prompt, n_out, sha, adapter, kind = row
    assert (kind, adapter, json.loads(messages)) == ("chat", None, QUESTION)
    assert prompt == result.prompt and "What is the capital of France?" in prompt
    assert (output, n_prompt, n_out) == (
        result.text,
        result.prompt_tokens,
        result.completion_tokens,
    )
    assert sha == read_manifest(MANIFEST).for_role("coder").sha256
    # The logged prompt, given to llama.cpp directly, produces the same greedy output.
    raw = llama_cpp.Llama(
        model_path=str(read_manifest(MANIFEST).for_role("coder").path),
        n_ctx=4096,
        n_threads=2,
        verbose=False,
    )
    tokens = raw.tokenize(prompt.encode(), add_bos=False, special=True)
    assert len(tokens) == n_prompt
    again = raw.create_completion(tokens, max_tokens=24, temperature=0, top_k=1)
    assert again["choices"][0]["text"] == result.text
    raw.close()


def test_json_schema_output_parses_and_validates(pool):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "country": {"type": "string", "enum": ["France", "Spain", "Italy"]},
        },
        "required": ["city", "country"],
    }
    result = pool.chat(
        "coder",
        [{"role": "user", "content": "Name the capital of France as JSON."}],
        max_tokens=60,
        json_schema=schema,
    )
    data = result.json()
    assert set(data) == {"city", "country"}
    assert isinstance(data["city"], str) and len(data["city"]) <= 30
    assert data["country"] in {"France", "Spain", "Italy"}


def test_a_seeded_sampled_call_repeats_exactly(pool):
    ask = [{"role": "user", "content": "Write one sentence about the sea."}]
    runs = [
        pool.chat("coder", ask, max_tokens=30, temperature=0.9, seed=1234).text for _ in range(3)
    ]
    assert len(set(runs)) == 1
    other = {pool.chat("coder", ask, max_tokens=30, temperature=0.9, seed=s).text for s in range(4)}
    assert len(other) > 1  # the seed matters: sampling is not greedy in disguise


def test_judge_picks_the_obvious_answer(pool):
    ask = [
        {
            "role": "user",
            "content": "Which of these is a colour? A: red. B: table. Answer with one letter.",
        }
    ]
    verdict = pool.judge("coder", ask)
    assert verdict.choice == "A" and verdict.margin > 0
    assert verdict.logprobs["A"] > verdict.logprobs["B"]
    with pytest.raises(UsageError, match="one token"):
        pool.judge("coder", ask, choices=("definitely", "absolutely not"))


def test_logprobs_and_stop_sequences(pool):
    result = pool.complete(
        "coder", "The capital of France is", max_tokens=12, logprobs=True, stop="."
    )
    assert "." not in result.text and result.finish_reason == "stop"
    assert len(result.token_logprobs) == result.completion_tokens
    assert all(lp <= 0 for lp in result.token_logprobs)


def test_two_threads_share_one_base_safely(pool):
    prompts = [f"List {n} fruits:" for n in (2, 3, 4, 5)]
    expected = {p: pool.complete("coder", p, max_tokens=16).text for p in prompts}
    got, errors = {}, []

    def worker(items):
        try:
            for prompt in items:
                got[prompt] = pool.complete("coder", prompt, max_tokens=16).text
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(prompts[i::2] * 2,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and got == expected


def test_bad_requests_are_usage_errors(pool):
    with pytest.raises(UsageError, match="unknown generation parameter"):
        pool.complete("coder", "hi", temprature=0.5)
    with pytest.raises(UsageError, match="holds 4096"):
        pool.complete("coder", "word " * 5000)
    with pytest.raises(UsageError, match="maxLength 2000"):
        pool.complete("coder", "hi", json_schema={"type": "string", "maxLength": 2000})
    with pytest.raises(ConfigError, match="no base model serves the role 'poet'"):
        pool.complete("poet", "hi")


# --- model files -----------------------------------------------------------------------


def write_manifest(tmp_path: Path, model: Path, sha: str | None = None) -> Path:
    from appliance.digest import sha256_file

    sha = sha or (sha256_file(model) if model.is_file() else "0" * 64)
    path = tmp_path / "models.toml"
    path.write_text(f'[bases.m]\npath = "{model}"\nsha256 = "{sha}"\n')
    return path


def gguf_header(architecture: str) -> bytes:
    """A minimal valid GGUF: version 3, no tensors, one key (general.architecture)."""

    def string(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(8, "little") + data

    return (
        b"GGUF"
        + (3).to_bytes(4, "little")
        + (0).to_bytes(8, "little")
        + (1).to_bytes(8, "little")
        + string("general.architecture")
        + (8).to_bytes(4, "little")
        + string(architecture)
    )


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: None, "is missing"),
        (lambda p: p.mkdir(), "is not a file"),
        (lambda p: p.write_bytes(b"PK\x03\x04 not a model"), "is not a GGUF file"),
        (lambda p: p.write_bytes(gguf_header("bert")), "bert-architecture model"),
    ],
)
def test_bad_model_files_fail_with_the_file_and_the_fix(tmp_path, make, words):
    model = tmp_path / "model.gguf"
    make(model)
    manifest = read_manifest(write_manifest(tmp_path, model))
    with pytest.raises(ModelFileError, match=words) as info:
        ModelPool(manifest, log=None, gpus=[]).complete("coder", "hi")
    assert str(model) in info.value.message and "models.toml" in info.value.hint


def test_a_wrong_hash_is_refused(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(gguf_header("llama"))
    manifest = read_manifest(write_manifest(tmp_path, model, sha="f" * 64))
    with pytest.raises(ModelFileError, match="models.toml expects ffffffffffffffff"):
        verify_base(manifest.bases[0])


def test_models_toml_errors_name_the_problem(tmp_path):
    bad = tmp_path / "models.toml"
    bad.write_text('[bases.m]\npath = "x.gguf"\nsha256 = "abc"\n')
    with pytest.raises(ConfigError, match=r"\[bases.m\] sha256"):
        read_manifest(bad)
    bad.write_text(f'[bases.m]\npath = "x.gguf"\nsha256 = "{"0" * 64}"\n[roles]\ncoder = "n"\n')
    with pytest.raises(ConfigError, match="role 'coder' names the base 'n'"):
        read_manifest(bad)


# --- placement (GPUs are described, not present: there are none on these machines) -----


def test_placement_puts_each_base_on_its_own_gpu_largest_first(tmp_path):
    big, small = tmp_path / "big.gguf", tmp_path / "small.gguf"
    big.write_bytes(b"x" * 3000)
    small.write_bytes(b"x" * 1000)
    text = (
        f'[bases.big]\npath = "{big}"\nsha256 = "{"0" * 64}"\n'
        f'[bases.small]\npath = "{small}"\nsha256 = "{"0" * 64}"\n'
        f'[bases.pinned]\npath = "{small}"\nsha256 = "{"0" * 64}"\ngpu_layers = 10\nmain_gpu = 1\n'
    )
    (tmp_path / "models.toml").write_text(text)
    bases = read_manifest(tmp_path / "models.toml").bases
    gpus = [
        Gpu(0, "P40", 20_000, 24_000),
        Gpu(1, "P40", 23_000, 24_000),
        Gpu(2, "P40", 5_000, 24_000),
    ]
    placed = plan(bases, gpus)
    assert placed["pinned"].device == "cuda:1" and placed["pinned"].gpu_layers == 10
    assert placed["big"].device == "cuda:0" and placed["big"].gpu_layers == -1
    assert placed["small"].device == "cuda:2"
    assert {p.device for p in plan(bases, []).values()} == {"cpu"}


def test_streamed_text_adds_up_to_the_answer_and_never_holds_a_stop_sequence(pool):
    whole = pool.chat("coder", QUESTION, max_tokens=32)
    parts: list[str] = []
    streamed = pool.chat("coder", QUESTION, max_tokens=32, on_text=parts.append)
    assert streamed.text == whole.text  # streaming changes nothing of the answer
    assert len(parts) > 3 and "".join(parts) == whole.text
    stop = whole.text.split()[2]  # a word the answer holds
    parts.clear()
    cut = pool.chat("coder", QUESTION, max_tokens=32, stop=[stop], on_text=parts.append)
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert "".join(parts) == cut.text and not any(stop in p for p in parts)


def test_a_cancelled_call_stops_after_the_next_token_and_is_logged(pool, db_path):
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) >= 3

    done = pool.chat("coder", QUESTION, max_tokens=64, cancelled=cancelled)
    assert done.finish_reason == "cancelled" and done.completion_tokens == 3
    row = (
        connect(db_path)
        .execute(
            "SELECT finish_reason, completion_tokens, output FROM model_calls WHERE id = ?",
            [done.call_id],
        )
        .fetchone()
    )
    assert row == ("cancelled", 3, done.text)
