"""`forge doctor`: is this box able to run Forge? Each check says what is wrong and the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from uv import find_uv_bin

from appliance.config import Config
from appliance.errors import ForgeError
from appliance.models.manifest import check_model_file, load_models
from appliance.records import as_json
from appliance.sandbox import bwrap_path, check_sandbox
from appliance.sandbox.identity import forge_is_root, sandbox_ids
from appliance.store import open_db
from appliance.store.migrations import MIGRATIONS, applied

GB = 1 << 30


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return as_json(self)


def _check_database(config: Config) -> list[Check]:
    try:
        db = open_db(config)
    except ForgeError as exc:
        return [
            Check("database", False, exc.message, exc.hint or ""),
            Check(
                "sqlite-vec",
                False,
                "not checked: the database did not open",
                "fix the database first",
            ),
        ]
    checks = []
    try:
        result = [row[0] for row in db.execute("PRAGMA integrity_check").fetchall()]
        missing = [m.__name__ for m in MIGRATIONS if m.__name__ not in applied(db)]
        if result != ["ok"]:
            checks.append(
                Check(
                    "database",
                    False,
                    f"integrity check: {'; '.join(result[:5])}",
                    "copy back the newest backup from FORGE_HOME/backups/ while Forge is stopped",
                )
            )
        elif missing:
            checks.append(
                Check("database", False, f"migrations not applied: {missing}", "run `forge init`")
            )
        else:
            size = config.db_path.stat().st_size
            checks.append(
                Check(
                    "database",
                    True,
                    f"{config.db_path} ({size / 1e6:.1f} MB), "
                    f"integrity ok, {len(MIGRATIONS)} migrations",
                )
            )
        version = db.execute("SELECT vec_version()").fetchone()[0]
        checks.append(Check("sqlite-vec", True, f"sqlite-vec {version} loaded"))
    except Exception as exc:  # any failure of the checks themselves is the finding
        checks.append(
            Check("sqlite-vec", False, f"sqlite-vec query failed: {exc}", "re-run ./install.sh")
        )
    finally:
        db.close()
    return checks


def _check_llama() -> Check:
    # In a child process: a broken native library must not take doctor down with it.
    proc = subprocess.run(
        [sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(
            "llama.cpp",
            False,
            f"import llama_cpp failed: {last}",
            "re-run ./install.sh (it builds llama-cpp-python)",
        )
    return Check("llama.cpp", True, f"llama-cpp-python {proc.stdout.strip()}")


def _check_models(config: Config, verified: dict | None = None) -> list[Check]:
    """Each base's file. `verified` (path → size and mtime), when given, names files whose
    sha256 was found right: not read again while unchanged (forged's alerts look often)."""
    try:
        models = load_models(config.models_manifest)
    except ForgeError as exc:
        return [Check("models", False, exc.message, exc.hint or "run ./install.sh")]
    checks = []
    for model in models:
        stamp = _stamp(model.path)
        hashed = verified is None or verified.get(str(model.path)) != stamp
        problem = check_model_file(model, hash_check=hashed)
        if verified is not None and hashed and problem is None:
            verified[str(model.path)] = stamp
        if problem:
            checks.append(
                Check(
                    f"model {model.name}",
                    False,
                    problem,
                    "re-run ./install.sh, or fix the entry in models.toml",
                )
            )
        else:
            checks.append(Check(f"model {model.name}", True, f"{model.path.name}, sha256 ok"))
    return checks


def _stamp(path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def health_checks(config: Config, verified: dict | None = None) -> list[Check]:
    """What forged's alerts watch of doctor: the sandbox and each model file."""
    return [_check_sandbox(config), *_check_models(config, verified)]


def _check_uv() -> Check:
    try:
        out = subprocess.run(
            [find_uv_bin(), "--version"], capture_output=True, text=True, timeout=30
        )
    except (ImportError, FileNotFoundError, OSError) as exc:
        return Check("uv", False, f"uv is not usable: {exc}", "re-run ./install.sh")
    return Check(
        "uv",
        out.returncode == 0,
        out.stdout.strip() or out.stderr.strip(),
        "" if out.returncode == 0 else "re-run ./install.sh",
    )


def _check_sandbox(config: Config) -> Check:
    backend = config.settings.sandbox.backend
    try:
        check_sandbox(config)
    except ForgeError as exc:
        return Check(f"sandbox ({backend})", False, exc.message, exc.hint or "")
    uid, _ = sandbox_ids(config.settings.sandbox)
    who = (
        f"tests run as uid {uid}"
        if forge_is_root()
        else f"tests run in a user namespace of uid {uid}"
    )
    if uid == 65534 and forge_is_root():
        who += f" (nobody: no user {config.settings.sandbox.user!r}; install.sh makes it)"
    if backend == "docker":
        image = config.settings.sandbox.docker_image
        return Check(
            "sandbox (docker)", True, f"the docker engine answers; image {image} is here; {who}"
        )
    return Check("sandbox (bwrap)", True, f"{bwrap_path()} starts a sandbox with no network; {who}")


def _check_disk(config: Config) -> Check:
    free = shutil.disk_usage(config.home).free
    need = config.settings.doctor.min_free_gb
    ok = free >= need * GB
    return Check(
        "disk",
        ok,
        f"{free / GB:.1f} GB free in {config.home} (want ≥ {need:g} GB)",
        "" if ok else "free space or move FORGE_HOME to a larger disk",
    )


def _check_home(config: Config) -> Check:
    if not os.access(config.home, os.W_OK):
        return Check(
            "forge home", False, f"{config.home} is not writable", "fix its owner or permissions"
        )
    source = str(config.source) if config.source else "defaults (no forge.toml)"
    return Check("forge home", True, f"{config.home}; settings from {source}")


def run_checks(config: Config) -> list[Check]:
    config.ensure_dirs()
    return [
        _check_home(config),
        *_check_database(config),
        _check_llama(),
        *_check_models(config),
        _check_uv(),
        _check_sandbox(config),
        _check_disk(config),
    ]
