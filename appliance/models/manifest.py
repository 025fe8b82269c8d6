"""Read and check `models/models.toml`: base models, the roles they serve, their placement.

    [bases.NAME]             path (relative to models.toml unless absolute), sha256,
                             context, threads, gpu_layers, main_gpu, tensor_split
    [roles]                  role = "NAME"; a role not listed is served by the first base

A base is checked before it is loaded: the file exists, is a GGUF, matches its sha256,
and has an architecture Forge can train adapters for.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.errors import ConfigError, ForgeError

GGUF_MAGIC = b"GGUF"
ROLES = ("reasoning", "coder")
# Architectures the GGUF adapter exporter handles (FACTS.md: q/k permutation for llama).
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")


class ModelFileError(ForgeError):
    """A base model file is missing, damaged, or not one Forge can serve."""


class BaseEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str = ""
    context: int = Field(4096, ge=256, le=1 << 20, description="context size in tokens")
    threads: int = Field(0, ge=0, description="CPU threads; 0: all cores")
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
    gpu_layers: int | None = None
    main_gpu: int | None = None
    tensor_split: tuple[float, ...] = ()

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{manifest} is not valid TOML: {exc}") from exc


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
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def gguf_metadata_value(path: Path, key: str) -> str | None:
    """A string value from a GGUF file's header, read without loading the file (the
    `gguf` package's reader parses every tensor and array first: seconds per file)."""

    def read(fh, n: int) -> bytes:
        data = fh.read(n)
        if len(data) != n:
            raise ModelFileError(f"{path} ends inside its GGUF header")
        return data

    def u32(fh) -> int:
        return int.from_bytes(read(fh, 4), "little")

    def u64(fh) -> int:
        return int.from_bytes(read(fh, 8), "little")

    def skip(fh, kind: int) -> None:
        if kind in _SCALAR_SIZES:
            fh.seek(_SCALAR_SIZES[kind], 1)
        elif kind == _STRING:
            fh.seek(u64(fh), 1)
        elif kind == _ARRAY:
            item, count = u32(fh), u64(fh)
            if item in _SCALAR_SIZES:
                fh.seek(_SCALAR_SIZES[item] * count, 1)
            else:
                for _ in range(count):
                    skip(fh, item)
        else:
            raise ModelFileError(f"{path} has an unknown GGUF value type {kind}")

    with path.open("rb") as fh:
        if read(fh, 4) != GGUF_MAGIC:
            raise ModelFileError(f"{path} is not a GGUF file")
        if u32(fh) < 2:
            raise ModelFileError(f"{path} is a GGUF version 1 file, which is not supported")
        u64(fh)  # tensor count
        for _ in range(u64(fh)):
            name = read(fh, u64(fh)).decode("utf-8", errors="replace")
            kind = u32(fh)
            if name == key and kind == _STRING:
                return read(fh, u64(fh)).decode("utf-8", errors="replace")
            skip(fh, kind)
    return None


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
        got = sha256_of(model.path)
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
