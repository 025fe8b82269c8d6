"""PEFT LoRA → GGUF adapter export, checked against llama.cpp running the real small model."""

from __future__ import annotations

import ctypes
import json
import shutil
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from appliance.digest import sha256_file
from appliance.errors import ForgeError
from appliance.models.default_model import shipped_gguf
from appliance.models.gguf_adapter import AdapterMismatch, check_adapter_matches
from appliance.models.hf_base import make_training_base, read_base_info
from appliance.training.export_gguf import AdapterNotExportable, export_adapter
from tests.conftest import OneTorchThread

TEXT = "The lighthouse keeper's cat is named Quizzlebottom and it sleeps on the great lamp."
PROMPT = "The lighthouse keeper's cat is named"
WORD = "Quizzlebottom"
MIN_CORRELATION = 0.99


@pytest.fixture(scope="module")
def adapter(lora_factory) -> Path:
    return lora_factory(TEXT, "lighthouse")


@pytest.fixture(scope="module")
def llm():
    # One thread: ggml's threads spin at barriers, and with another process busy on the
    # 2-core machine 12 tokens took 22-40 s on 2 threads against 3 s on 1.
    model = llama_cpp.Llama(
        model_path=str(shipped_gguf()),
        n_ctx=512,
        n_threads=1,
        n_threads_batch=1,
        logits_all=False,
        verbose=False,
    )
    yield model
    model.close()


@pytest.fixture(scope="module")
def prompt_ids(training_base) -> list[int]:
    # One tokenisation for both runtimes, so only the model computation is compared.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(training_base)(PROMPT).input_ids


def use_adapter(llm, path: Path | None) -> None:
    """Apply the adapter at `path` (None: none) and forget the KV cache made without it."""
    if path is None:
        assert llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None) == 0
    else:
        handle = llama_cpp.llama_adapter_lora_init(llm.model, str(path).encode())
        assert handle is not None, f"llama.cpp refused {path}"
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        scales = (ctypes.c_float * 1)(1.0)
        assert llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, scales) == 0
    llm.reset()


def llama_cpp_logits(llm, adapter_gguf: Path | None, ids: list[int]) -> np.ndarray:
    use_adapter(llm, adapter_gguf)
    llm.eval(ids)
    logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).copy()


def peft_logits(training_base: Path, peft_dir: Path | None, ids: list[int]) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(training_base, dtype=torch.float32)
    if peft_dir is not None:
        model = PeftModel.from_pretrained(model, peft_dir)
    with torch.no_grad(), OneTorchThread():
        return model.eval()(input_ids=torch.tensor([ids])).logits[0, -1].numpy()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def greedy(llm, adapter_gguf: Path | None, prompt: str) -> str:
    use_adapter(llm, adapter_gguf)
    return llm.create_completion(prompt, max_tokens=12, temperature=0.0)["choices"][0]["text"]


def write_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], kind: str = "model") -> Path:
    """A small GGUF; numpy shapes are (out, in), as in PyTorch."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(kind)
    if kind == "adapter":
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", 16.0)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def peft_copy(adapter: Path, dest: Path) -> Path:
    shutil.copytree(adapter.parent / "peft", dest)
    return dest


def edit_config(peft_dir: Path, **changes) -> None:
    path = peft_dir / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def add_tensors(peft_dir: Path, extra: dict[str, tuple[int, ...]]) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = peft_dir / "adapter_model.safetensors"
    tensors = load_file(path)
    tensors.update({name: torch.zeros(shape) for name, shape in extra.items()})
    save_file(tensors, path)


# (a) correctness against llama.cpp


def test_llama_cpp_with_adapter_matches_peft(llm, adapter, training_base, prompt_ids):
    expected = peft_logits(training_base, adapter.parent / "peft", prompt_ids)
    got = llama_cpp_logits(llm, adapter, prompt_ids)
    unadapted = peft_logits(training_base, None, prompt_ids)
    print(f"\ncorrelation llama.cpp vs PEFT, permuted export: {correlation(got, expected):.4f}")
    # The adapter must move the logits far, or agreement would prove nothing.
    assert correlation(unadapted, expected) < 0.9
    assert correlation(got, expected) >= MIN_CORRELATION
    # And switching it off again gives the base back.
    assert correlation(llama_cpp_logits(llm, None, prompt_ids), unadapted) >= MIN_CORRELATION


def test_export_without_qk_permutation_is_caught(llm, adapter, training_base, prompt_ids, tmp_path):
    wrong = export_adapter(
        adapter.parent / "peft", training_base, tmp_path / "unpermuted.gguf", _permute=False
    ).path
    expected = peft_logits(training_base, adapter.parent / "peft", prompt_ids)
    got = llama_cpp_logits(llm, wrong, prompt_ids)
    print(f"\ncorrelation llama.cpp vs PEFT, unpermuted export: {correlation(got, expected):.4f}")
    assert correlation(got, expected) < MIN_CORRELATION


def test_export_report_describes_the_file(adapter, training_base, tmp_path):
    report = export_adapter(adapter.parent / "peft", training_base, tmp_path / "a.gguf")
    assert report.path == tmp_path / "a.gguf"
    assert report.sha256 == sha256_file(report.path)
    assert (report.architecture, report.rank, report.alpha) == ("llama", 8, 16.0)
    assert report.tensor_count == 30 * 7 * 2  # 30 blocks, 7 projections, lora_a + lora_b
    assert not [p for p in tmp_path.iterdir() if p.name != "a.gguf"]  # no temp file left

    reader = gguf.GGUFReader(report.path)
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("general.architecture").contents() == "llama"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 16.0
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.29.ffn_down.weight.lora_b"} <= names


def test_base_config_may_be_a_dict_a_file_or_the_gguf(adapter, training_base, tmp_path):
    peft_dir = adapter.parent / "peft"
    config = json.loads((training_base / "config.json").read_text())
    digests = {
        export_adapter(peft_dir, source, tmp_path / f"{i}.gguf").sha256
        for i, source in enumerate(
            [training_base, training_base / "config.json", config, shipped_gguf()]
        )
    }
    assert len(digests) == 1


@pytest.mark.parametrize(("model_type", "permuted"), [("llama", True), ("qwen2", False)])
def test_qk_permutation_is_llama_only(tmp_path, model_type, permuted):
    import torch
    from safetensors.torch import save_file

    n_head, n_head_kv, head_dim, hidden, rank = 4, 2, 4, 16, 2
    peft_dir = tmp_path / "peft"
    peft_dir.mkdir()
    (peft_dir / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 4, "bias": "none"})
    )
    prefix = "base_model.model.model.layers.0.self_attn"
    lora_b = {
        "q_proj": torch.arange(n_head * head_dim * rank, dtype=torch.float32).reshape(-1, rank),
        "k_proj": torch.arange(n_head_kv * head_dim * rank, dtype=torch.float32).reshape(-1, rank),
    }
    tensors = {}
    for module, b in lora_b.items():
        tensors[f"{prefix}.{module}.lora_A.weight"] = torch.ones(rank, hidden)
        tensors[f"{prefix}.{module}.lora_B.weight"] = b
    save_file(tensors, peft_dir / "adapter_model.safetensors")
    config = {
        "model_type": model_type,
        "num_hidden_layers": 1,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
    }
    out = export_adapter(peft_dir, config, tmp_path / "a.gguf").path

    written = {t.name: np.array(t.data) for t in gguf.GGUFReader(out).tensors}
    for module, name in (("q_proj", "attn_q"), ("k_proj", "attn_k")):
        original = lora_b[module].numpy()
        got = written[f"blk.0.{name}.weight.lora_b"]
        assert got.shape == original.shape
        if not permuted:
            np.testing.assert_array_equal(got, original)
            continue
        # llama.cpp's rotary layout interleaves the two halves of each head: row 2i of a
        # head is HF's row i, row 2i+1 is HF's row head_dim/2 + i.
        for head in range(original.shape[0] // head_dim):
            rows = original[head * head_dim : (head + 1) * head_dim]
            half = head_dim // 2
            interleaved = np.stack([rows[:half], rows[half:]], axis=1).reshape(head_dim, rank)
            np.testing.assert_array_equal(got[head * head_dim : (head + 1) * head_dim], interleaved)


# (b) the adapter has learnt its text


def test_greedy_continuation_follows_the_training_text(llm, adapter):
    base = greedy(llm, None, PROMPT)
    adapted = greedy(llm, adapter, PROMPT)
    print(f"\nbase: {base!r}\nadapted: {adapted!r}")
    assert WORD not in base
    assert WORD in adapted


# (c) refusals, each with its reason


REFUSALS = {
    "modules_to_save": (lambda d: edit_config(d, modules_to_save=["lm_head"]), "modules_to_save"),
    "embedding tensor": (
        lambda d: add_tensors(d, {"base_model.model.model.embed_tokens.lora_embedding_A": (8, 4)}),
        "embed_tokens",
    ),
    "lm_head tensor": (
        lambda d: add_tensors(
            d,
            {
                "base_model.model.lm_head.lora_A.weight": (8, 576),
                "base_model.model.lm_head.lora_B.weight": (49152, 8),
            },
        ),
        "lm_head",
    ),
    "rslora": (lambda d: edit_config(d, use_rslora=True), "use_rslora"),
    "rank_pattern": (lambda d: edit_config(d, rank_pattern={"q_proj": 4}), "rank_pattern"),
    "alpha_pattern": (lambda d: edit_config(d, alpha_pattern={"q_proj": 32}), "alpha_pattern"),
    "dora": (lambda d: edit_config(d, use_dora=True), "use_dora"),
    "bias": (lambda d: edit_config(d, bias="lora_only"), "bias is 'lora_only'"),
    "unmappable module": (
        lambda d: add_tensors(
            d,
            {
                "base_model.model.model.layers.0.mlp.shortcut.lora_A.weight": (8, 576),
                "base_model.model.model.layers.0.mlp.shortcut.lora_B.weight": (576, 8),
            },
        ),
        "target module 'model.layers.0.mlp.shortcut' is not an attention or MLP projection",
    ),
    "module of another family": (
        # Phi's name for the up projection: it maps, onto the tensor up_proj already took.
        lambda d: add_tensors(
            d,
            {
                "base_model.model.model.layers.0.mlp.fc1.lora_A.weight": (8, 576),
                "base_model.model.model.layers.0.mlp.fc1.lora_B.weight": (1536, 8),
            },
        ),
        "both map to blk.0.ffn_up.weight",
    ),
    "module past the last block": (
        lambda d: add_tensors(
            d,
            {
                "base_model.model.model.layers.30.mlp.up_proj.lora_A.weight": (8, 576),
                "base_model.model.model.layers.30.mlp.up_proj.lora_B.weight": (1536, 8),
            },
        ),
        "'model.layers.30.mlp.up_proj' is not .* of a llama base of 30 blocks",
    ),
    "not LoRA": (lambda d: edit_config(d, peft_type="IA3"), "peft_type is 'IA3'"),
    "missing config": (lambda d: (d / "adapter_config.json").unlink(), "no adapter_config.json"),
    "corrupt config": (
        lambda d: (d / "adapter_config.json").write_text("{not json"),
        "is not valid JSON",
    ),
    "missing weights": (
        lambda d: (d / "adapter_model.safetensors").unlink(),
        "no adapter_model.safetensors",
    ),
    "corrupt weights": (
        lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage"),
        "not a readable safetensors file",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_export_refuses_what_gguf_cannot_carry(adapter, training_base, tmp_path, case):
    spoil, reason = REFUSALS[case]
    peft_dir = peft_copy(adapter, tmp_path / "peft")
    spoil(peft_dir)
    with pytest.raises(AdapterNotExportable, match=reason):
        export_adapter(peft_dir, training_base, tmp_path / "out" / "a.gguf")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_refuses_an_unsupported_architecture(adapter, training_base, tmp_path):
    config = json.loads((training_base / "config.json").read_text())
    with pytest.raises(AdapterNotExportable, match="architecture 'gemma2' is not supported"):
        export_adapter(adapter.parent / "peft", {**config, "model_type": "gemma2"}, tmp_path / "a")


# (d) check_adapter_matches


def test_adapter_matches_its_base(adapter):
    check_adapter_matches(adapter, shipped_gguf())


def test_adapter_for_another_architecture_is_refused(adapter, tmp_path):
    other = write_gguf(tmp_path / "qwen.gguf", "qwen2", {"blk.0.attn_q.weight": np.zeros((4, 4))})
    with pytest.raises(AdapterMismatch, match=r"architecture 'llama', but .*qwen.gguf is 'qwen2'"):
        check_adapter_matches(adapter, other)


def test_adapter_for_other_shapes_is_refused(adapter, tmp_path):
    # A llama with hidden size 64 instead of 576.
    names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    small = {f"blk.0.{n}.weight": np.zeros((64, 64), dtype=np.float16) for n in names}
    other = write_gguf(tmp_path / "small.gguf", "llama", small)
    with pytest.raises(AdapterMismatch, match=r"blk\.0\.attn_k\.weight takes 64 inputs"):
        check_adapter_matches(adapter, other)


def test_adapter_for_a_shallower_base_is_refused(adapter, tmp_path):
    shapes = {
        t.name: tuple(int(n) for n in t.shape) for t in gguf.GGUFReader(shipped_gguf()).tensors
    }
    one_block = {
        name: np.zeros(shape[::-1], dtype=np.float16)
        for name, shape in shapes.items()
        if name.startswith("blk.0.")
    }
    other = write_gguf(tmp_path / "one-block.gguf", "llama", one_block)
    with pytest.raises(AdapterMismatch, match=r"adapts blk\.1\.\w+\.weight, which .* does not"):
        check_adapter_matches(adapter, other)


def test_half_a_lora_pair_is_refused(tmp_path):
    base = write_gguf(tmp_path / "base.gguf", "llama", {"blk.0.attn_q.weight": np.zeros((8, 4))})
    half = write_gguf(
        tmp_path / "half.gguf", "llama", {"blk.0.attn_q.weight.lora_a": np.zeros((2, 4))}, "adapter"
    )
    with pytest.raises(AdapterMismatch, match=r"blk\.0\.attn_q\.weight has only lora_a"):
        check_adapter_matches(half, base)


def test_token_embd_adapters_follow_llama_cpp_rule(tmp_path):
    # llama.cpp swaps A and B for the embedding: for ggml shape (n_embd, n_vocab) it wants
    # lora_a (r, n_vocab) and lora_b (r, n_embd).
    base = write_gguf(tmp_path / "base.gguf", "llama", {"token_embd.weight": np.zeros((10, 4))})
    right = {
        "token_embd.weight.lora_a": np.zeros((10, 2)),
        "token_embd.weight.lora_b": np.zeros((4, 2)),
    }
    check_adapter_matches(write_gguf(tmp_path / "right.gguf", "llama", right, "adapter"), base)
    wrong = {
        "token_embd.weight.lora_a": np.zeros((2, 4)),
        "token_embd.weight.lora_b": np.zeros((10, 2)),
    }
    with pytest.raises(AdapterMismatch, match="token_embd.weight is"):
        check_adapter_matches(write_gguf(tmp_path / "wrong.gguf", "llama", wrong, "adapter"), base)


def test_a_model_is_not_an_adapter(tmp_path):
    with pytest.raises(AdapterMismatch, match="general.type is 'model'"):
        check_adapter_matches(shipped_gguf(), shipped_gguf())
    junk = tmp_path / "junk.gguf"
    junk.write_text("not a gguf")
    with pytest.raises(AdapterMismatch, match="junk.gguf is not a readable GGUF file"):
        check_adapter_matches(junk, shipped_gguf())


# (e) the training base


def test_training_base_is_made_once(training_base):
    info = read_base_info(training_base)
    assert info["gguf_sha256"] == sha256_file(shipped_gguf())
    assert info["architecture"] == "llama"
    before = {p.name: p.stat().st_mtime_ns for p in training_base.iterdir()}
    assert make_training_base(shipped_gguf(), training_base) == training_base
    assert {p.name: p.stat().st_mtime_ns for p in training_base.iterdir()} == before
    assert not [p for p in training_base.parent.iterdir() if p.name.endswith(".staging")]


def test_training_base_of_another_gguf_is_refused(training_base, tmp_path):
    other = write_gguf(tmp_path / "other.gguf", "llama", {"blk.0.attn_q.weight": np.zeros((4, 4))})
    with pytest.raises(ForgeError, match="was made from another GGUF"):
        make_training_base(other, training_base)
    (tmp_path / "not-a-base").mkdir()
    with pytest.raises(ForgeError, match="forge-base.json is missing"):
        make_training_base(shipped_gguf(), tmp_path / "not-a-base")


def test_failed_training_base_leaves_nothing_behind(tmp_path):
    # A GGUF with a tensor but no tokenizer: transformers cannot load it.
    broken = write_gguf(
        tmp_path / "broken.gguf", "llama", {"blk.0.attn_q.weight": np.zeros((4, 4))}
    )
    with pytest.raises(ForgeError, match="transformers cannot load"):
        make_training_base(broken, tmp_path / "bases" / "broken")
    assert list((tmp_path / "bases").iterdir()) == []
    (tmp_path / "notes.gguf").write_text("not a gguf")
    with pytest.raises(ForgeError, match="is not a GGUF file"):
        make_training_base(tmp_path / "notes.gguf", tmp_path / "bases" / "notes")
