"""Read and check `models/models.toml`: base models, the roles they serve, their placement.

    [bases.NAME]             path (relative to models.toml unless absolute), sha256,
                             context, threads, parallel, gpu_layers, main_gpu,
                             tensor_split
    [roles]                  role = "NAME"; a role not listed is served by the first base

A base is checked before it is loaded: the file exists, is a GGUF, matches its sha256,
and has an architecture Forge can train adapters for.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance import cores
from appliance.digest import sha256_file
from appliance.errors import ConfigError, ForgeError, validation_problems

GGUF_MAGIC = b"GGUF"
ROLES = ("reasoning", "coder")
# Architectures the GGUF adapter exporter handles (llama needs the q/k
# permutation; see training/export_gguf.py).
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")


class ModelFileError(ForgeError):
    """A base model file is missing, damaged, or not one Forge can serve."""


class BaseEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str = ""
    context: int = Field(4096, ge=256, le=1 << 20, description="context size in tokens")
    threads: int = Field(0, ge=0, description="CPU threads; 0: the cores free at each call")
    parallel: int = Field(
        4, ge=1, le=64, description="sequences decoded together in one batch (1: one at a time)"
    )
    gpu_layers: int | None = Field(
        None, ge=-1, description="layers offloaded; -1 all, 0 none; unset: decided by placement"
    )
    main_gpu: int | None = Field(None, ge=0)
    tensor_split: list[float] = Field(default_factory=list)


@dataclass(frozen=True)
class BaseModelFile:
    name: str
    path: Path
    sha256: str
    source: str
    context: int = 4096
    threads: int = 0
    parallel: int = 4
    gpu_layers: int | None = None
    main_gpu: int | None = None
    tensor_split: tuple[float, ...] = ()

    @property
    def n_threads(self) -> int:
        return self.threads or cores.usable()


@dataclass(frozen=True)
class ModelsManifest:
    path: Path
    bases: tuple[BaseModelFile, ...]
    roles: dict[str, str]  # role -> base name, every known role filled in

    def base(self, name: str) -> BaseModelFile:
        for base in self.bases:
            if base.name == name:
                return base
        raise ConfigError(f"{self.path} has no [bases.{name}]")

    def for_role(self, role: str) -> BaseModelFile:
        if role not in self.roles:
            raise ConfigError(
                f"no base model serves the role {role!r}",
                f'add `{role} = "NAME"` under [roles] in {self.path} '
                f"(roles now: {', '.join(sorted(self.roles))})",
            )
        return self.base(self.roles[role])


def _read(manifest: Path) -> dict:
    if not manifest.is_file():
        raise ConfigError(
            f"{manifest} does not exist", "run ./install.sh to record the default model"
        )
    try:
        return tomllib.loads(manifest.read_text())
    # TOMLDecodeError and UnicodeDecodeError are ValueErrors, as is a number too long to read.
    except ValueError as exc:
        raise ConfigError(f"{manifest} is not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{manifest} is not valid TOML: it nests too deep") from exc


def read_manifest(manifest: Path) -> ModelsManifest:
    """The bases and roles in `manifest`; ConfigError says what is wrong and where."""
    data = _read(manifest)
    unknown = set(data) - {"bases", "roles"}
    if unknown:
        raise ConfigError(
            f"{manifest}: unknown section(s) {', '.join(sorted(unknown))}",
            "models.toml holds [bases.NAME] entries and one [roles] table",
        )
    bases_raw = data.get("bases", {})
    if not isinstance(bases_raw, dict) or not bases_raw:
        raise ConfigError(f"{manifest} lists no [bases.NAME] entries", "run ./install.sh")
    bases = []
    for name, raw in bases_raw.items():
        try:
            entry = BaseEntry.model_validate(raw)
        except ValidationError as exc:
            msgs = "; ".join(validation_problems(exc))
            raise ConfigError(f"{manifest}: [bases.{name}] {msgs}") from exc
        path = Path(entry.path)
        if not path.is_absolute():
            path = manifest.parent / path
        bases.append(
            BaseModelFile(
                name=name,
                path=path,
                sha256=entry.sha256,
                source=entry.source,
                context=entry.context,
                threads=entry.threads,
                parallel=entry.parallel,
                gpu_layers=entry.gpu_layers,
                main_gpu=entry.main_gpu,
                tensor_split=tuple(entry.tensor_split),
            )
        )
    names = [b.name for b in bases]
    roles_raw = data.get("roles", {})
    if not isinstance(roles_raw, dict):
        raise ConfigError(f'{manifest}: [roles] must be a table of role = "BASE"')
    roles = dict.fromkeys(ROLES, names[0])
    for role, base in roles_raw.items():
        if base not in names:
            raise ConfigError(
                f"{manifest}: role {role!r} names the base {base!r}, which is not listed",
                f"use one of: {', '.join(names)}",
            )
        roles[role] = base
    return ModelsManifest(manifest, tuple(bases), roles)


def load_models(manifest: Path) -> list[BaseModelFile]:
    """The base models listed in `manifest`."""
    return list(read_manifest(manifest).bases)


# GGUF value types: the fixed sizes of the scalars; 8 is a string, 9 an array.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_UINT32 = 4
# Bounds on what a GGUF header may claim, besides fitting in the file. Real models have a
# few dozen keys, hundreds of tensors, keys and names under 100 bytes, arrays one deep.
MAX_KEY_BYTES = 65535  # the GGUF format's own limit on a key
MAX_VALUE_BYTES = 1 << 20  # a string value Forge reads (values it skips only have to fit)
MAX_ENTRIES = 1 << 20  # keys, or tensors, in one file
MAX_ARRAY_DEPTH = 2  # an array of arrays, no deeper
MAX_DIMS = 4  # GGML_MAX_DIMS
_LEAST_KV, _LEAST_TENSOR = 13, 32  # the fewest bytes one key/value, one tensor info take


class _HeaderReader:
    """Reads a GGUF header with every length and count checked against what is left of the
    file (and the caps above) before it is used, so a hostile header is a ModelFileError,
    never a MemoryError, a seek past the end or minutes of looping."""

    def __init__(self, path: Path, fh) -> None:
        self.path, self.fh = path, fh
        self.size = os.fstat(fh.fileno()).st_size

    def fail(self, what: str):
        raise ModelFileError(f"{self.path} has a damaged GGUF header: {what}")

    def left(self) -> int:
        return self.size - self.fh.tell()

    def read(self, n: int) -> bytes:
        if n > self.left():
            raise ModelFileError(f"{self.path} ends inside its GGUF header")
        return self.fh.read(n)

    def skip(self, n: int) -> None:
        if n > self.left():
            raise ModelFileError(f"{self.path} ends inside its GGUF header")
        self.fh.seek(n, 1)

    def u32(self) -> int:
        return int.from_bytes(self.read(4), "little")

    def u64(self) -> int:
        return int.from_bytes(self.read(8), "little")

    def length(self, what: str, cap: int) -> int:
        n = self.u64()
        if n > cap or n > self.left():
            self.fail(f"{what} claims {n} bytes ({self.left()} left in the file, at most {cap})")
        return n

    def string(self, what: str, cap: int) -> bytes:
        return self.fh.read(self.length(what, cap))

    def count(self, what: str, least_bytes: int) -> int:
        n = self.u64()
        if n > MAX_ENTRIES or n * least_bytes > self.left():
            self.fail(f"it claims {n} {what}, more than the file can hold")
        return n

    def start(self) -> tuple[int, int]:
        """Check the magic and version; the tensor count and the key/value count."""
        if self.size < 4 or self.fh.read(4) != GGUF_MAGIC:
            raise ModelFileError(f"{self.path} is not a GGUF file")
        if self.u32() < 2:
            raise ModelFileError(f"{self.path} is a GGUF version 1 file, which is not supported")
        return self.count("tensors", _LEAST_TENSOR), self.count("keys", _LEAST_KV)

    def skip_value(self, kind: int, depth: int = 0) -> None:
        if kind in _SCALAR_SIZES:
            self.skip(_SCALAR_SIZES[kind])
        elif kind == _STRING:
            self.skip(self.length("a string value", self.left()))
        elif kind == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                self.fail("arrays nested deeper than an array of arrays")
            item, count = self.u32(), self.u64()
            each = _SCALAR_SIZES.get(item) or {_STRING: 8, _ARRAY: 12}.get(item)
            if each is None:
                self.fail(f"an array of the unknown value type {item}")
            if count * each > self.left():
                self.fail(f"an array claims {count} items, more than the file can hold")
            if item in _SCALAR_SIZES:
                self.skip(count * each)
            else:
                for _ in range(count):
                    self.skip_value(item, depth + 1)
        else:
            self.fail(f"the unknown value type {kind}")


def gguf_metadata_value(path: Path, key: str) -> str | None:
    """A string value from a GGUF file's header, read without loading the file (the
    `gguf` package's reader parses every tensor and array first: seconds per file)."""
    wanted = key.encode()
    with path.open("rb") as fh:
        header = _HeaderReader(path, fh)
        _, keys = header.start()
        for _ in range(keys):
            name = header.string("a key", MAX_KEY_BYTES)
            kind = header.u32()
            if name == wanted and kind == _STRING:
                value = header.string(f"the value of {key}", MAX_VALUE_BYTES)
                return value.decode("utf-8", errors="replace")
            header.skip_value(kind)
    return None


def check_gguf_header(path: Path) -> None:
    """Walk the whole header of a GGUF file (every key, every tensor's name, shape, type
    and place in the data); ModelFileError at the first thing that is out of bounds."""
    from gguf.constants import GGML_QUANT_SIZES  # (block elements, block bytes) per type

    with path.open("rb") as fh:
        header = _HeaderReader(path, fh)
        tensors, keys = header.start()
        alignment = 32  # GGUF's default; general.alignment may change it
        for _ in range(keys):
            name = header.string("a key", MAX_KEY_BYTES)
            kind = header.u32()
            if name == b"general.alignment" and kind == _UINT32:
                alignment = header.u32()
                if alignment == 0 or alignment & (alignment - 1) or alignment > 1 << 16:
                    header.fail(f"general.alignment is {alignment}, not a power of two")
                continue
            header.skip_value(kind)
        data_end = 0  # the end of the furthest tensor, counted from the start of the data
        for _ in range(tensors):
            name = header.string("a tensor name", MAX_KEY_BYTES).decode("utf-8", "replace")
            dims = header.u32()
            if not 1 <= dims <= MAX_DIMS:
                header.fail(f"tensor {name!r} has {dims} dimensions (1 to {MAX_DIMS})")
            elements = 1
            for _ in range(dims):
                elements *= header.u64()
            kind = header.u32()
            if kind not in GGML_QUANT_SIZES:
                header.fail(f"tensor {name!r} has the unknown type {kind}")
            block, block_bytes = GGML_QUANT_SIZES[kind]
            offset = header.u64()
            if elements == 0 or elements % block or offset % alignment:
                header.fail(f"tensor {name!r} has a shape or offset its type cannot have")
            data_end = max(data_end, offset + elements // block * block_bytes)
        data_start = -(-fh.tell() // alignment) * alignment
        if tensors and data_start + data_end > header.size:
            header.fail(f"its tensors need {data_start + data_end} bytes; the file has "
                        f"{header.size}")  # fmt: skip


def gguf_architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file, or "" when it has none."""
    try:
        return gguf_metadata_value(path, "general.architecture") or ""
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from exc


def check_model_file(model: BaseModelFile, *, hash_check: bool = True) -> str | None:
    """None when the file is present, a GGUF of a supported architecture, and matches its
    sha256; else what is wrong."""
    if not model.path.exists():
        return f"{model.path} is missing"
    if not model.path.is_file():
        return f"{model.path} is not a file"
    with model.path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            return f"{model.path} is not a GGUF file"
    if hash_check:
        got = sha256_file(model.path)
        if got != model.sha256:
            return f"{model.path} has sha256 {got[:16]}…, models.toml expects {model.sha256[:16]}…"
    try:
        arch = gguf_architecture(model.path)
    except ModelFileError as exc:
        return exc.message
    if arch not in SUPPORTED_ARCHITECTURES:
        return (
            f"{model.path} is a {arch or 'unknown'}-architecture model; Forge serves and "
            f"trains {', '.join(SUPPORTED_ARCHITECTURES)} bases"
        )
    return None


def verify_base(model: BaseModelFile) -> None:
    """Raise ModelFileError naming the file and the fix unless `model` can be loaded."""
    problem = check_model_file(model)
    if problem is not None:
        raise ModelFileError(
            f"base model {model.name}: {problem}",
            "put the right file in place, or fix path/sha256 in models.toml "
            "(./install.sh restores the default model)",
        )
