"""Export a PEFT LoRA adapter to llama.cpp's GGUF LoRA format (the format itself, its
writer and the check that an adapter fits a base: appliance/models/gguf_adapter.py).

For llama-architecture bases llama.cpp stores q and k weights with their rows permuted
(its converter's rotary layout); lora_B of q_proj and k_proj must get the same permutation,
or the adapter loads without complaint and computes something else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from appliance.digest import sha256_file
from appliance.errors import ForgeError
from appliance.models.gguf_adapter import open_gguf, string_field, write_adapter_gguf

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
        sha256=sha256_file(out),
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
    reader = open_gguf(path, error=AdapterNotExportable)
    arch = string_field(reader, gguf.Keys.General.ARCHITECTURE)

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
