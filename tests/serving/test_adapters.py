"""Stage adapters in the pool: switching without reloading, threads, wrong adapters.

The adapters are real: PEFT LoRAs trained on the dequantized SmolLM2 and exported to
GGUF (the `lora_factory` fixture), served by the real llama.cpp.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.digest import sha256_file
from appliance.models.default_model import shipped_gguf
from appliance.models.manifest import read_manifest
from appliance.serving.pool import Adapter, AdapterRejected, ModelPool

TEXT_A = "The lighthouse keeper's cat is named Quizzlebottom and it sleeps on the great lamp."
TEXT_B = "The lighthouse keeper's cat is named Pepperwhistle and it hunts crabs at dawn."
PROMPT = "The lighthouse keeper's cat is named"
TOKENS = 12


@pytest.fixture(scope="module")
def adapters(lora_factory) -> tuple[Adapter, Adapter]:
    return (
        Adapter("quiz-v1", lora_factory(TEXT_A, "quiz")),
        Adapter("pepper-v1", lora_factory(TEXT_B, "pepper")),
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    # One thread: results must not depend on how threads split the work.
    gguf = shipped_gguf()
    path = tmp_path_factory.mktemp("models") / "models.toml"
    path.write_text(
        f'[bases.smol]\npath = "{gguf}"\nsha256 = "{sha256_file(gguf)}"\n'
        "context = 1024\nthreads = 1\n"
    )
    return read_manifest(path)


@pytest.fixture(scope="module")
def pool(manifest):
    pool = ModelPool(manifest, log=None, gpus=[])
    yield pool
    pool.close()


def fresh(lora: Path | None) -> str:
    """Greedy output of a newly constructed Llama, with the adapter applied at load."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(shipped_gguf()),
        n_ctx=1024,
        n_threads=1,
        n_threads_batch=1,
        lora_path=str(lora) if lora else None,
        verbose=False,
    )
    try:
        out = llm.create_completion(PROMPT, max_tokens=TOKENS, temperature=0, top_k=1)
        return out["choices"][0]["text"]
    finally:
        llm.close()


def test_switching_gives_the_same_outputs_as_fresh_loads(pool, adapters):
    quiz, _ = adapters
    expected_base, expected_quiz = fresh(None), fresh(quiz.path)
    assert "Quizzlebottom" in expected_quiz and "Quizzlebottom" not in expected_base
    got = [
        pool.complete("coder", PROMPT, adapter=adapter, max_tokens=TOKENS).text
        for adapter in (None, quiz, None, quiz)
    ]
    assert got == [expected_base, expected_quiz, expected_base, expected_quiz]
    base = pool.base_for("coder")
    assert len(base.adapters) == 1  # loaded once, switched since


def test_the_base_is_not_reloaded_by_a_switch(pool, adapters):
    base = pool.base_for("coder")
    pool.complete("coder", PROMPT, max_tokens=2)
    llm_before, switches = base.llm, base.switches
    for adapter in (*adapters, None):
        pool.complete("coder", PROMPT, adapter=adapter, max_tokens=2)
    assert base.llm is llm_before and base.switches == switches + 3


def test_two_adapters_alternate_correctly_under_two_threads(pool, adapters):
    quiz, pepper = adapters
    expected = {
        a.name: pool.complete("coder", PROMPT, adapter=a, max_tokens=TOKENS).text for a in adapters
    }
    assert "Pepperwhistle" in expected["pepper-v1"] and "Quizzlebottom" in expected["quiz-v1"]
    results: dict[str, list[str]] = {"quiz-v1": [], "pepper-v1": []}
    errors = []

    def worker(adapter: Adapter) -> None:
        try:
            for _ in range(4):
                out = pool.complete("coder", PROMPT, adapter=adapter, max_tokens=TOKENS)
                results[adapter.name].append(out.text)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(a,)) for a in (quiz, pepper)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for name, outputs in results.items():
        assert outputs == [expected[name]] * 4


def test_logits_follow_the_adapter(pool, adapters):
    base = pool.base_for("coder")
    quiz, _ = adapters
    with base.lock:
        tokens = base.tokenize(PROMPT)
        base.use(None)
        plain = base.last_logprobs(tokens)
        base.use(quiz)
        adapted = base.last_logprobs(tokens)
        base.use(None)
        again = base.last_logprobs(tokens)
    assert np.array_equal(plain, again)
    assert not np.allclose(plain, adapted)


def write_adapter(path: Path, architecture: str, tensors: dict[str, tuple[int, ...]]) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 16.0)
    for name, shape in tensors.items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    "architecture, tensors, words",
    [
        ("qwen2", {"blk.0.attn_q.weight.lora_a": (8, 576)}, "architecture"),
        (
            "llama",
            {"blk.0.attn_q.weight.lora_a": (8, 999), "blk.0.attn_q.weight.lora_b": (576, 8)},
            "blk.0.attn_q",
        ),
        ("llama", {"blk.99.attn_q.weight.lora_a": (8, 576)}, "blk.99"),
    ],
)
def test_an_adapter_for_another_base_is_refused_and_serving_goes_on(
    pool, adapters, tmp_path, architecture, tensors, words
):
    wrong = Adapter("wrong-v1", write_adapter(tmp_path / "wrong.gguf", architecture, tensors))
    with pytest.raises(AdapterRejected, match="does not fit base smol") as info:
        pool.complete("coder", PROMPT, adapter=wrong, max_tokens=4)
    assert words in info.value.message
    quiz, _ = adapters
    assert "Quizzlebottom" in pool.complete("coder", PROMPT, adapter=quiz, max_tokens=TOKENS).text
    assert pool.complete("coder", PROMPT, max_tokens=4).text


def test_a_missing_adapter_file_is_refused(pool, tmp_path):
    with pytest.raises(AdapterRejected, match="does not exist"):
        pool.complete("coder", PROMPT, adapter=Adapter("gone-v1", tmp_path / "gone.gguf"))


def test_old_adapters_are_freed_beyond_the_cap(pool, adapters, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr("appliance.serving.pool.MAX_ADAPTERS", 2)
    quiz, pepper = adapters
    third = Adapter("quiz-v2", shutil.copy(quiz.path, tmp_path / "quiz-copy.gguf"))
    expected = pool.complete("coder", PROMPT, adapter=quiz, max_tokens=TOKENS).text
    for adapter in (pepper, third, quiz):
        pool.complete("coder", PROMPT, adapter=adapter, max_tokens=TOKENS)
    base = pool.base_for("coder")
    assert len(base.adapters) == 2
    assert pool.complete("coder", PROMPT, adapter=quiz, max_tokens=TOKENS).text == expected
