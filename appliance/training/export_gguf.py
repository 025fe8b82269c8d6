"""Export a PEFT LoRA adapter to llama.cpp's GGUF LoRA format, and check one fits a base.

The format: `general.type = "adapter"`, `general.architecture` = the base's,
`adapter.type = "lora"`, `adapter.lora.alpha` (float32), and for each adapted base tensor
X the tensors `X.lora_a` (PEFT's lora_A, `(r, in)`) and `X.lora_b` (lora_B, `(out, r)`).
llama.cpp scales the product by alpha / r, as PEFT does without rsLoRA.

For llama-architecture bases llama.cpp stores q and k weights with their rows permuted
(its converter's rotary layout); lora_B of q_proj and k_proj must get the same permutation,
or the adapter loads without complaint and computes something else.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from appliance.errors import ForgeError
from appliance.models.manifest import sha256_of

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# HF model_type → gguf architecture; only these were checked against llama.cpp.
ARCHITECTURES = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
}
PERMUTED_ARCHITECTURES = {"llama"}
# The base tensors an adapter may adapt: the ones checked against llama.cpp.
PROJECTIONS = {
    gguf.MODEL_TENSOR.ATTN_Q,
    gguf.MODEL_TENSOR.ATTN_K,
    gguf.MODEL_TENSOR.ATTN_V,
    gguf.MODEL_TENSOR.ATTN_OUT,
    gguf.MODEL_TENSOR.FFN_GATE,
    gguf.MODEL_TENSOR.FFN_UP,
    gguf.MODEL_TENSOR.FFN_DOWN,
}
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
# PEFT options that change what the adapter computes beyond B·A·alpha/r.
PLAIN_LORA_ONLY = (
    "layer_replication",
    "trainable_token_indices",
    "alora_invocation_tokens",
    "use_qalora",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "velora_config",
    "monteclora_config",
)
# Module names whose LoRA would need llama.cpp's token_embd/output handling, which we refuse.
EMBEDDING_MODULES = ("embed_tokens", "lm_head")


class AdapterNotExportable(ForgeError):
    """A PEFT adapter uses something the GGUF LoRA export cannot represent faithfully."""


class AdapterMismatch(ForgeError):
    """A GGUF adapter does not fit the base model it is about to be loaded on."""


@dataclass(frozen=True)
class ExportReport:
    """What `export_adapter` wrote."""

    path: Path
    sha256: str
    architecture: str
    rank: int
    alpha: float
    tensor_count: int


@dataclass(frozen=True)
class BaseShape:
    """The facts about a base model the export needs: architecture, blocks and heads."""

    architecture: str
    n_blocks: int
    n_head: int
    n_head_kv: int


def export_adapter(
    adapter_dir: Path,
    base_config: Path | dict[str, Any],
    out: Path,
    *,
    _permute: bool = True,
) -> ExportReport:
    """Convert the PEFT LoRA adapter in `adapter_dir` to a GGUF adapter at `out`.

    `base_config` is the base's HF config: a dict, a config.json, the training base
    directory holding it, or the base GGUF itself. `_permute=False` skips the q/k
    permutation; it exists only so tests can show that mistake is caught.
    """
    adapter_dir, out = Path(adapter_dir), Path(out)
    config = _read_adapter_config(adapter_dir)
    _refuse_unsupported_config(config, adapter_dir)
    base = base_shape(base_config)
    arch = ARCHITECTURES.get(base.architecture)
    if arch is None:
        raise AdapterNotExportable(
            f"{adapter_dir}: the base architecture {base.architecture!r} is not supported",
            f"export handles {', '.join(sorted(ARCHITECTURES))}",
        )
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    pairs = _lora_pairs(_read_adapter_tensors(adapter_dir), adapter_dir, rank)
    name_map = gguf.get_tensor_name_map(arch, base.n_blocks)

    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sources: dict[str, str] = {}
    for module, (lora_a, lora_b) in pairs.items():
        mapped = name_map.get_type_and_name(module + ".weight", try_suffixes=(".weight",))
        if mapped is None or mapped[0] not in PROJECTIONS:
            raise AdapterNotExportable(
                f"{adapter_dir}: target module {module!r} is not an attention or MLP "
                f"projection of a {base.architecture} base of {base.n_blocks} blocks",
                "train with target_modules among q/k/v/o_proj and gate/up/down_proj",
            )
        kind, name = mapped
        if name in sources:
            # The name map knows every model family's names; two may land on one tensor.
            raise AdapterNotExportable(
                f"{adapter_dir}: target modules {sources[name]!r} and {module!r} both map "
                f"to {name}",
                "check that the adapter was trained on this base",
            )
        sources[name] = module
        if _permute and base.architecture in PERMUTED_ARCHITECTURES:
            if kind == gguf.MODEL_TENSOR.ATTN_Q:
                lora_b = _permute_rows(lora_b, base.n_head, module, adapter_dir)
            elif kind == gguf.MODEL_TENSOR.ATTN_K:
                lora_b = _permute_rows(lora_b, base.n_head_kv, module, adapter_dir)
        tensors[name] = (lora_a, lora_b)

    write_adapter_gguf(
        out,
        gguf.MODEL_ARCH_NAMES[arch],
        alpha,
        [(name, *tensors[name]) for name in sorted(tensors, key=_block_order)],
    )
    return ExportReport(
        path=out,
        sha256=sha256_of(out),
        architecture=base.architecture,
        rank=rank,
        alpha=alpha,
        tensor_count=2 * len(tensors),
    )


def base_shape(base_config: Path | dict[str, Any]) -> BaseShape:
    """Architecture, block and head counts from an HF config (dict, file, dir) or a GGUF."""
    if isinstance(base_config, dict):
        return _shape_from_hf(base_config, "the base config")
    path = Path(base_config)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".gguf":
        return _shape_from_gguf(path)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterNotExportable(f"cannot read the base config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterNotExportable(f"the base config {path} is not a JSON object")
    return _shape_from_hf(config, str(path))


def check_adapter_matches(adapter_gguf: Path, base_gguf: Path) -> None:
    """Raise AdapterMismatch unless `adapter_gguf` is a LoRA adapter that fits `base_gguf`."""
    adapter_gguf, base_gguf = Path(adapter_gguf), Path(base_gguf)
    adapter = _open_gguf(adapter_gguf)
    kind = _string_field(adapter, gguf.Keys.General.TYPE)
    if kind != gguf.GGUFType.ADAPTER:
        raise AdapterMismatch(
            f"{adapter_gguf} is not an adapter: general.type is {kind!r}, expected 'adapter'"
        )
    adapter_type = _string_field(adapter, gguf.Keys.Adapter.TYPE)
    if adapter_type != "lora":
        raise AdapterMismatch(
            f"{adapter_gguf} is not a LoRA adapter: adapter.type is {adapter_type!r}"
        )
    arch = _string_field(adapter, gguf.Keys.General.ARCHITECTURE)
    if not base_gguf.is_file():
        raise AdapterMismatch(f"{base_gguf} does not exist")
    stat = base_gguf.stat()
    base_arch, base_shapes = _model_tensors(base_gguf.resolve(), stat.st_size, stat.st_mtime_ns)
    if arch != base_arch:
        raise AdapterMismatch(
            f"{adapter_gguf} is for architecture {arch!r}, but {base_gguf} is {base_arch!r}",
            "use an adapter trained on this base",
        )

    # GGUFReader reports shapes in ggml order, innermost first: a weight of PyTorch shape
    # (out, in) reads as (in, out), lora_a (r, in) as (in, r), lora_b (out, r) as (r, out).
    # The rules are llama.cpp's own (llama_adapter_lora_init), so what passes here loads.
    halves: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor in adapter.tensors:
        target, dot, side = tensor.name.rpartition(".")
        if not dot or side not in ("lora_a", "lora_b"):
            raise AdapterMismatch(
                f"{adapter_gguf} holds {tensor.name!r}, which is not a .lora_a/.lora_b tensor"
            )
        halves.setdefault(target, {})[side] = tuple(int(n) for n in tensor.shape)
    if not halves:
        raise AdapterMismatch(f"{adapter_gguf} holds no LoRA tensors")
    for target, pair in sorted(halves.items()):
        if set(pair) != {"lora_a", "lora_b"}:
            raise AdapterMismatch(f"{adapter_gguf}: {target} has only {', '.join(pair)}")
        weight = base_shapes.get(target)
        if weight is None:
            raise AdapterMismatch(
                f"{adapter_gguf} adapts {target}, which {base_gguf} does not have",
                "use an adapter trained on this base",
            )
        lora_a, lora_b = pair["lora_a"], pair["lora_b"]
        if len(weight) != 2 or len(lora_a) != 2 or len(lora_b) != 2:
            raise AdapterMismatch(
                f"{adapter_gguf}: {target} is not a matrix in both files "
                f"(base {weight}, lora_a {lora_a}, lora_b {lora_b})"
            )
        if target.endswith("token_embd.weight"):
            # llama.cpp's own rule for embedding adapters: A and B swap roles there.
            fits = weight[0] == lora_b[1] and weight[1] == lora_a[1]
            if not fits:
                raise AdapterMismatch(
                    f"{adapter_gguf}: {target} is {weight} in {base_gguf}, but the adapter's "
                    f"lora_a is {lora_a} and its lora_b {lora_b}",
                    "use an adapter trained on this base",
                )
            continue
        (n_in, n_out), (a_in, a_rank), (b_rank, b_out) = weight, lora_a, lora_b
        if a_in != n_in or b_out != n_out or a_rank != b_rank:
            raise AdapterMismatch(
                f"{adapter_gguf}: {target} takes {n_in} inputs and gives {n_out} outputs in "
                f"{base_gguf}, but the adapter's lora_a takes {a_in} (rank {a_rank}) and its "
                f"lora_b gives {b_out} (rank {b_rank})",
                "use an adapter trained on this base",
            )


def _read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise AdapterNotExportable(
            f"{adapter_dir} has no {ADAPTER_CONFIG}", "point at a PEFT save_pretrained directory"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterNotExportable(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterNotExportable(f"{path} is not a JSON object")
    return config


def _refuse_unsupported_config(config: dict[str, Any], adapter_dir: Path) -> None:
    """Refuse what PEFT can express but a GGUF LoRA adapter cannot (or we have not checked)."""
    hint = "train the adapter without it"
    if config.get("peft_type") != "LORA":
        raise AdapterNotExportable(
            f"{adapter_dir}: peft_type is {config.get('peft_type')!r}; only LORA can be exported"
        )
    for key, kind in (("r", int), ("lora_alpha", (int, float))):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise AdapterNotExportable(f"{adapter_dir}: {key} is {config.get(key)!r}")
    if config.get("modules_to_save"):
        raise AdapterNotExportable(
            f"{adapter_dir}: modules_to_save {config['modules_to_save']} are full copies of "
            "base modules, which a GGUF LoRA adapter cannot carry",
            hint,
        )
    if config.get("use_rslora"):
        raise AdapterNotExportable(
            f"{adapter_dir}: use_rslora scales by alpha/sqrt(r); llama.cpp scales by alpha/r",
            hint,
        )
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise AdapterNotExportable(
                f"{adapter_dir}: {key} {config[key]} gives modules their own rank or alpha; "
                "a GGUF adapter has one alpha",
                hint,
            )
    if config.get("use_dora"):
        raise AdapterNotExportable(
            f"{adapter_dir}: use_dora (weight-decomposed LoRA) has no GGUF form", hint
        )
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise AdapterNotExportable(
            f"{adapter_dir}: bias is {config.get('bias')!r}"
            f"{' with lora_bias' if config.get('lora_bias') else ''}; only 'none' is exported",
            hint,
        )
    if config.get("fan_in_fan_out"):
        raise AdapterNotExportable(f"{adapter_dir}: fan_in_fan_out (Conv1D bases)", hint)
    for key in PLAIN_LORA_ONLY:
        if config.get(key):
            raise AdapterNotExportable(
                f"{adapter_dir}: {key} is set ({config[key]!r}); the export handles plain LoRA "
                "only",
                hint,
            )
    if config.get("target_parameters"):
        raise AdapterNotExportable(
            f"{adapter_dir}: target_parameters {config['target_parameters']} adapt raw "
            "parameters, not linear modules",
            hint,
        )


def _read_adapter_tensors(adapter_dir: Path) -> dict[str, np.ndarray]:
    # Imported here: torch takes seconds to import; it reads bf16/fp16 adapters numpy cannot.
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = adapter_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        raise AdapterNotExportable(
            f"{adapter_dir} has no {ADAPTER_WEIGHTS}",
            "save the adapter with save_pretrained(safe_serialization=True)",
        )
    try:
        raw = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise AdapterNotExportable(f"{path} is not a readable safetensors file: {exc}") from exc
    return {key: value.float().numpy() for key, value in raw.items()}


def _lora_pairs(
    tensors: dict[str, np.ndarray], adapter_dir: Path, rank: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """HF module name (e.g. model.layers.0.self_attn.q_proj) → (lora_A, lora_B)."""
    hint = "train the adapter without it"
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if any(part in key for part in EMBEDDING_MODULES) or "modules_to_save" in key:
            raise AdapterNotExportable(
                f"{adapter_dir}: {key} adapts or replaces the embedding or lm_head, which "
                "the export does not carry",
                hint,
            )
        if "lora_magnitude_vector" in key:
            raise AdapterNotExportable(f"{adapter_dir}: {key} is a DoRA tensor", hint)
        match = LORA_KEY.match(key)
        if match is None:
            raise AdapterNotExportable(
                f"{adapter_dir}: {key} is not a LoRA A/B weight (a bias or another extra)", hint
            )
        module = match["module"].removeprefix(PEFT_PREFIX)
        halves.setdefault(module, {})[match["side"]] = value
    if not halves:
        raise AdapterNotExportable(f"{adapter_dir}/{ADAPTER_WEIGHTS} holds no LoRA tensors")

    pairs = {}
    for module, pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise AdapterNotExportable(f"{adapter_dir}: {module} has only lora_{''.join(pair)}")
        lora_a, lora_b = pair["A"], pair["B"]
        if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora_b.shape[1]:
            raise AdapterNotExportable(
                f"{adapter_dir}: {module} has lora_A {lora_a.shape} and lora_B {lora_b.shape}; "
                "expected (r, in) and (out, r)"
            )
        if lora_a.shape[0] != rank:
            raise AdapterNotExportable(
                f"{adapter_dir}: {module} has rank {lora_a.shape[0]}, but the config says r={rank}"
            )
        pairs[module] = (np.ascontiguousarray(lora_a), np.ascontiguousarray(lora_b))
    return pairs


def _permute_rows(lora_b: np.ndarray, n_head: int, module: str, adapter_dir: Path) -> np.ndarray:
    """llama.cpp's converter's q/k row permutation, applied to lora_B's rows."""
    out, rank = lora_b.shape
    if out % (2 * n_head):
        raise AdapterNotExportable(
            f"{adapter_dir}: {module} has {out} outputs, not a multiple of 2 × {n_head} heads",
            "check that the base config belongs to the base the adapter was trained on",
        )
    permuted = lora_b.reshape(n_head, 2, out // n_head // 2, rank).swapaxes(1, 2)
    return np.ascontiguousarray(permuted.reshape(out, rank))


def _block_order(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) if parts[0] == "blk" and parts[1].isdigit() else -1, name)


def _shape_from_hf(config: dict[str, Any], where: str) -> BaseShape:
    config = config.get("text_config", config)  # multimodal configs nest the language model
    try:
        n_head = int(config["num_attention_heads"])
        return BaseShape(
            architecture=str(config["model_type"]),
            n_blocks=int(config["num_hidden_layers"]),
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterNotExportable(f"{where} lacks or garbles {exc}") from exc


def _shape_from_gguf(path: Path) -> BaseShape:
    reader = _open_gguf(path, error=AdapterNotExportable)
    arch = _string_field(reader, gguf.Keys.General.ARCHITECTURE)

    def number(key: str) -> int:
        field = reader.get_field(key.format(arch=arch))
        if field is None:
            raise AdapterNotExportable(f"{path} lacks {key.format(arch=arch)}")
        return int(field.contents())

    n_head = number(gguf.Keys.Attention.HEAD_COUNT)
    try:
        n_head_kv = number(gguf.Keys.Attention.HEAD_COUNT_KV)
    except AdapterNotExportable:
        n_head_kv = n_head  # llama.cpp's own default when the key is absent
    return BaseShape(arch, number(gguf.Keys.LLM.BLOCK_COUNT), n_head, n_head_kv)


@functools.lru_cache(maxsize=8)
def _model_tensors(
    path: Path, size: int, mtime_ns: int
) -> tuple[str | None, dict[str, tuple[int, ...]]]:
    """A base's architecture and tensor shapes (ggml order), cached per file version:
    reading a base's tokenizer arrays takes GGUFReader 1-3 s, and the pool checks every
    adapter it loads."""
    reader = _open_gguf(path)
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    return _string_field(reader, gguf.Keys.General.ARCHITECTURE), shapes


def _open_gguf(path: Path, error: type[ForgeError] = AdapterMismatch) -> gguf.GGUFReader:
    if not path.is_file():
        raise error(f"{path} does not exist")
    try:
        return gguf.GGUFReader(path)
    except ValueError as exc:  # what GGUFReader raises for a non-GGUF or truncated file
        raise error(f"{path} is not a readable GGUF file: {exc}") from exc


def _string_field(reader: gguf.GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    return None if field is None else str(field.contents())


def write_adapter_gguf(out: Path, architecture: str, alpha: float, tensors) -> None:
    """Write a llama.cpp GGUF LoRA adapter atomically (temp file, then rename).

    `tensors`: (base tensor name, lora_a (r, in), lora_b (out, r)) in the order to write;
    lora_a goes before its lora_b (gguf's parameter count pairs them by order).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, arch=architecture)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for name, lora_a, lora_b in tensors:
            writer.add_tensor(f"{name}.lora_a", lora_a)
            writer.add_tensor(f"{name}.lora_b", lora_b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.chmod(0o644)  # mkstemp makes it owner-only
        tmp.replace(out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
