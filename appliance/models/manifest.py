"""Read and check `models/models.toml`: base models, their GGUF files and sha256.

The serving issue extends each entry with roles and GPU placement. Paths are relative
to the models.toml file unless absolute.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.errors import ConfigError

GGUF_MAGIC = b"GGUF"


class BaseEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    path: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str = ""


@dataclass(frozen=True)
class BaseModelFile:
    name: str
    path: Path
    sha256: str
    source: str


def load_models(manifest: Path) -> list[BaseModelFile]:
    """The base models listed in `manifest`; ConfigError says what is wrong and where."""
    if not manifest.is_file():
        raise ConfigError(
            f"{manifest} does not exist", "run ./install.sh to record the default model"
        )
    try:
        data = tomllib.loads(manifest.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{manifest} is not valid TOML: {exc}") from exc
    bases = data.get("bases", {})
    if not isinstance(bases, dict) or not bases:
        raise ConfigError(f"{manifest} lists no [bases.NAME] entries", "run ./install.sh")
    result = []
    for name, raw in bases.items():
        try:
            entry = BaseEntry.model_validate(raw)
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{manifest}: [bases.{name}] {msgs}") from exc
        path = Path(entry.path)
        if not path.is_absolute():
            path = manifest.parent / path
        result.append(BaseModelFile(name, path, entry.sha256, entry.source))
    return result


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_file(model: BaseModelFile) -> str | None:
    """None when the file is present, a GGUF, and matches its sha256; else what is wrong."""
    if not model.path.exists():
        return f"{model.path} is missing"
    with model.path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            return f"{model.path} is not a GGUF file"
    got = sha256_of(model.path)
    if got != model.sha256:
        return f"{model.path} has sha256 {got[:16]}…, models.toml expects {model.sha256[:16]}…"
    return None
