"""`forge models import GGUF --role ROLE`: a new base model version.

The GGUF is checked (a GGUF, a supported architecture, a header whose every length and
count fits the file), copied into models/, its
dequantized HF checkpoint (the training base) is written next to it, tied to its
sha256, and models.toml gets the base and the role. Nothing is changed until every step
has succeeded: a failure leaves models/ and models.toml as they were.

`python -m appliance.models.importing` makes the training base of the default model
(install.sh runs it).
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tomlkit

from appliance.config import Config, load_config
from appliance.digest import sha256_file
from appliance.errors import ForgeError, UsageError
from appliance.models.hf_base import make_training_base
from appliance.models.manifest import (
    BaseModelFile,
    ModelFileError,
    check_gguf_header,
    check_model_file,
    read_manifest,
)
from appliance.records import as_json


@dataclass(frozen=True)
class ImportedBase:
    name: str
    path: Path
    sha256: str
    training_base: Path
    role: str
    invalidated: tuple[str, ...] = ()  # adapter versions of the replaced base, now unservable

    def to_dict(self) -> dict:
        return as_json(self)


def training_base_dir(gguf: Path) -> Path:
    """Where the training base of a GGUF lives: beside it."""
    return gguf.with_name(gguf.name.removesuffix(".gguf") + ".hf")


def _name_for(gguf: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", gguf.name.removesuffix(".gguf").lower()).strip("-.")
    return name or "base"


def import_base(config: Config, gguf: Path, role: str, name: str | None = None) -> ImportedBase:
    """Import `gguf` as the base serving `role`. The adapters trained on the base it
    replaces are the registry's to invalidate (registry.bases.import_base, one layer up,
    does both): `invalidated` is left empty here."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise UsageError(f"{gguf} does not exist or is not a file", "give the GGUF's path")
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", role):
        raise UsageError(f"{role!r} is not a role name", "use a word like coder or reasoning")
    manifest_path = config.models_manifest
    manifest = read_manifest(manifest_path)
    name = name or _name_for(gguf)
    sha = sha256_file(gguf)
    problem = check_model_file(BaseModelFile(name, gguf, sha, ""), hash_check=False)
    if problem is None:
        try:  # the whole header, bounded, before the file is copied or parsed by others
            check_gguf_header(gguf)
        except ModelFileError as exc:
            problem = exc.message
    if problem:
        raise ModelFileError(f"cannot import: {problem}", "import a llama, qwen2 or qwen3 GGUF")
    known = {b.name: b for b in manifest.bases}
    if name in known and known[name].sha256 != sha:
        raise UsageError(
            f"a base named {name!r} with another file is already in {manifest_path}",
            "give the new version its own name with --name",
        )
    target = manifest_path.parent / gguf.name
    if target.exists() and sha256_file(target) != sha:
        raise UsageError(
            f"{target} exists and is a different file", "rename the GGUF before importing it"
        )
    copied = False
    if not target.exists():
        tmp = target.with_name(f".{target.name}.importing")
        shutil.copyfile(gguf, tmp)
        tmp.replace(target)
        copied = True
    try:
        base = make_training_base(target, training_base_dir(target))
        _record(manifest_path, name, target, sha, role, source=f"imported from {gguf}")
    except BaseException:
        if copied:
            target.unlink(missing_ok=True)
        raise
    return ImportedBase(name, target, sha, base, role)


def _record(manifest: Path, name: str, gguf: Path, sha: str, role: str, source: str) -> None:
    doc = tomlkit.parse(manifest.read_text())
    bases = doc.setdefault("bases", tomlkit.table(is_super_table=True))
    entry = tomlkit.table()
    entry["path"] = str(gguf.relative_to(manifest.parent)) if gguf.is_relative_to(
        manifest.parent
    ) else str(gguf)  # fmt: skip
    entry["sha256"] = sha
    entry["source"] = f"{source} on {datetime.now(UTC).date().isoformat()}"
    bases[name] = entry
    roles = doc.setdefault("roles", tomlkit.table())
    roles[role] = name
    tmp = manifest.with_suffix(".toml.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    read_manifest(tmp)  # never write a models.toml Forge cannot read back
    tmp.replace(manifest)


def ensure_training_bases(config: Config) -> list[Path]:
    """The training base of every base in models.toml, made where missing."""
    made = []
    for base in read_manifest(config.models_manifest).bases:
        made.append(make_training_base(base.path.resolve(), training_base_dir(base.path)))
    return made


def main() -> int:
    try:
        for path in ensure_training_bases(load_config()):
            print(f"training base ready: {path}")
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
