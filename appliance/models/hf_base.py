"""The training base: a GGUF base model dequantized into a plain Hugging Face checkpoint.

llama.cpp serves the GGUF; PEFT trains on this checkpoint. The two are tied by the GGUF's
sha256, recorded in `forge-base.json` beside the weights, so an adapter trained here is
known to belong to exactly one served file.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

from appliance.clock import now_iso
from appliance.digest import sha256_file
from appliance.errors import ForgeError
from appliance.models.manifest import GGUF_MAGIC

BASE_INFO = "forge-base.json"
INFO_KEYS = ("gguf_sha256", "gguf_name", "architecture", "created_at")


def make_training_base(gguf_path: Path, dest: Path) -> Path:
    """Write the dequantized HF checkpoint of `gguf_path` to `dest`; idempotent.

    An existing `dest` made from the same GGUF is returned unchanged; one made from another
    GGUF, or a directory that is not a training base, is a ForgeError.
    """
    gguf_path, dest = Path(gguf_path), Path(dest)
    if not gguf_path.is_file():
        raise ForgeError(f"{gguf_path} does not exist", "check the path in models/models.toml")
    with gguf_path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ForgeError(f"{gguf_path} is not a GGUF file")
    sha256 = sha256_file(gguf_path)
    if dest.exists():
        return _existing_base(dest, gguf_path, sha256)
    architecture = _gguf_architecture(gguf_path)

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Built beside dest and renamed into place, so a crash never leaves a half-written base.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".staging", dir=dest.parent))
    try:
        _dequantize(gguf_path, staging)
        info = {
            "gguf_sha256": sha256,
            "gguf_name": gguf_path.name,
            "architecture": architecture,
            "created_at": now_iso(),
        }
        (staging / BASE_INFO).write_text(json.dumps(info, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it owner-only; the serving side reads it too
        try:
            staging.rename(dest)
        except OSError:
            if not dest.exists():
                raise
            # Another process finished first; its base is as good as ours if it matches.
            return _existing_base(dest, gguf_path, sha256)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return dest


def read_base_info(dest: Path) -> dict:
    """The `forge-base.json` of a training base: gguf_sha256, gguf_name, architecture,
    created_at."""
    path = Path(dest) / BASE_INFO
    hint = f"remove {dest} and make the training base again"
    if not path.is_file():
        raise ForgeError(f"{dest} is not a training base: {BASE_INFO} is missing", hint)
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ForgeError(f"{path} is not valid JSON: {exc}", hint) from exc
    if not isinstance(info, dict) or any(not isinstance(info.get(k), str) for k in INFO_KEYS):
        raise ForgeError(f"{path} lacks one of {', '.join(INFO_KEYS)}", hint)
    return info


def _existing_base(dest: Path, gguf_path: Path, sha256: str) -> Path:
    info = read_base_info(dest)
    if info["gguf_sha256"] != sha256:
        raise ForgeError(
            f"{dest} was made from another GGUF ({info['gguf_name']}, sha256 "
            f"{info['gguf_sha256'][:12]}…), not {gguf_path} (sha256 {sha256[:12]}…)",
            f"remove {dest} or choose another destination for this base",
        )
    return dest


def _gguf_architecture(gguf_path: Path) -> str:
    # gguf: loaded only when a GGUF file is read
    import gguf

    try:
        field = gguf.GGUFReader(gguf_path).get_field(gguf.Keys.General.ARCHITECTURE)
    except ValueError as exc:  # what GGUFReader raises for a truncated or corrupt file
        raise ForgeError(f"{gguf_path} is not a readable GGUF file: {exc}") from exc
    if field is None:
        raise ForgeError(f"{gguf_path} has no {gguf.Keys.General.ARCHITECTURE}")
    return str(field.contents())


def _dequantize(gguf_path: Path, out_dir: Path) -> None:
    """Save the GGUF as a plain fp32 HF checkpoint with its tokenizer."""
    # Imported here: torch and transformers take seconds to import and most commands
    # never train.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except (ValueError, OSError, KeyError) as exc:
        raise ForgeError(
            f"transformers cannot load {gguf_path}: {exc}",
            "only GGUF architectures transformers can dequantize (llama, qwen2, qwen3, …) "
            "can be trained",
        ) from exc
    # A model loaded with gguf_file counts as quantized: Trainer and save_pretrained refuse
    # it. A fresh model from the same config, minus the quantization, takes its weights.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
