"""llama.cpp's GGUF LoRA adapter format: write one, and check one fits a base model.

The format: `general.type = "adapter"`, `general.architecture` = the base's,
`adapter.type = "lora"`, `adapter.lora.alpha` (float32), and for each adapted base tensor
X the tensors `X.lora_a` (PEFT's lora_A, `(r, in)`) and `X.lora_b` (lora_B, `(out, r)`).
llama.cpp scales the product by alpha / r, as PEFT does without rsLoRA.

The model pool checks every adapter it loads here (`check_adapter_matches`); training
writes its exports (training/export_gguf.py) and benchmarks their synthetic adapters
(serving/bench.py) with `write_adapter_gguf`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import gguf

from appliance.errors import ForgeError


class AdapterMismatch(ForgeError):
    """A GGUF adapter does not fit the base model it is about to be loaded on."""


def check_adapter_matches(adapter_gguf: Path, base_gguf: Path) -> None:
    """Raise AdapterMismatch unless `adapter_gguf` is a LoRA adapter that fits `base_gguf`."""
    adapter_gguf, base_gguf = Path(adapter_gguf), Path(base_gguf)
    adapter = open_gguf(adapter_gguf)
    kind = string_field(adapter, gguf.Keys.General.TYPE)
    if kind != gguf.GGUFType.ADAPTER:
        raise AdapterMismatch(
            f"{adapter_gguf} is not an adapter: general.type is {kind!r}, expected 'adapter'"
        )
    adapter_type = string_field(adapter, gguf.Keys.Adapter.TYPE)
    if adapter_type != "lora":
        raise AdapterMismatch(
            f"{adapter_gguf} is not a LoRA adapter: adapter.type is {adapter_type!r}"
        )
    arch = string_field(adapter, gguf.Keys.General.ARCHITECTURE)
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


@functools.lru_cache(maxsize=8)
def _model_tensors(
    path: Path, size: int, mtime_ns: int
) -> tuple[str | None, dict[str, tuple[int, ...]]]:
    """A base's architecture and tensor shapes (ggml order), cached per file version:
    reading a base's tokenizer arrays takes GGUFReader 1-3 s, and the pool checks every
    adapter it loads."""
    reader = open_gguf(path)
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    return string_field(reader, gguf.Keys.General.ARCHITECTURE), shapes


def open_gguf(path: Path, error: type[ForgeError] = AdapterMismatch) -> gguf.GGUFReader:
    if not path.is_file():
        raise error(f"{path} does not exist")
    try:
        return gguf.GGUFReader(path)
    except ValueError as exc:  # what GGUFReader raises for a non-GGUF or truncated file
        raise error(f"{path} is not a readable GGUF file: {exc}") from exc


def string_field(reader: gguf.GGUFReader, key: str) -> str | None:
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
