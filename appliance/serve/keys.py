"""The API keys of `forge serve`: bearer tokens, kept as their sha256 in one JSON file.

The file (`serve.keys_file`, default FORGE_HOME/serve-keys.json) is written with mode
0600 and refused when its mode lets anyone but its owner read or write it. A token is
shown once, when it is added; only its hash and its first characters are kept. Tokens
are 256 random bits, so a plain sha256 is enough to keep them (no slow hash needed), and
they are compared in constant time. The server re-reads the file when it changes, so a
revoked key stops working at the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.clock import now_iso
from appliance.errors import ForgeError, UsageError, validation_problems

TOKEN_PREFIX = "fsk-"  # Forge serve key: recognisable in a config file or a leak scan
MAX_FILE_BYTES = 1 << 20
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyFileError(ForgeError):
    """The API key file cannot be trusted or read: serving refuses every request."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    shown: str  # the token's first characters, to tell keys apart
    created_at: str


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME.pattern)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    shown: str = Field(max_length=16)
    created_at: str


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[_Entry] = Field(default_factory=list, max_length=10_000)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_keys(path: Path) -> tuple[ApiKey, ...]:
    """The keys in `path` (none when it does not exist); KeyFileError when its mode is
    looser than 0600, it is not a plain file, or it is not a key file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(
            f"the API key file {path} is not a plain file",
            "remove it and add the keys again: forge serve keys add NAME",
        )
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"the API key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: others may "
            "read or change it",
            f"chmod 600 {path} (and revoke the keys if someone else may have read it)",
        )
    try:
        data = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"the API key file {path} is over 1 MiB: not a key file")
    try:
        parsed = _KeyFile.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, "the file"))
        raise KeyFileError(
            f"the API key file {path} is damaged: {problems}", "move it away and add the keys again"
        ) from exc
    return tuple(ApiKey(e.name, e.sha256, e.shown, e.created_at) for e in parsed.keys)


def _write(path: Path, keys: tuple[ApiKey, ...]) -> None:
    """Replace the file in one rename; the new file is 0600 from its first byte."""
    body = _KeyFile(
        keys=[
            _Entry(name=k.name, sha256=k.sha256, shown=k.shown, created_at=k.created_at)
            for k in keys
        ]  # fmt: skip
    ).model_dump_json(indent=2)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(body + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # O_TRUNC of a stale temp file keeps its old mode
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(
            f"cannot write the API key file {path}: {exc.strerror}",
            "run as the user forge serve runs as (sudo -u forge forge …)",
        ) from exc


def add_key(path: Path, name: str) -> str:
    """Add a key named `name`; its token, which is not kept and cannot be shown again."""
    if not NAME.match(name):
        raise UsageError(
            f"bad key name {name!r}",
            "letters, digits, '.', '_' and '-', at most 64, e.g. editor-ada",
        )
    keys = read_keys(path)
    if any(k.name == name for k in keys):
        raise UsageError(
            f"a key named {name} exists", f"revoke it first: forge serve keys revoke {name}"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    _write(path, (*keys, ApiKey(name, _digest(token), token[:10], now_iso())))
    return token


def revoke_key(path: Path, name: str) -> ApiKey:
    keys = read_keys(path)
    gone = [k for k in keys if k.name == name]
    if not gone:
        known = ", ".join(k.name for k in keys) or "none"
        raise UsageError(f"no key named {name}", f"keys: {known}")
    _write(path, tuple(k for k in keys if k.name != name))
    return gone[0]


class KeyRing:
    """The keys the server checks requests against, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._keys: tuple[ApiKey, ...] = ()

    def keys(self) -> tuple[ApiKey, ...]:
        """The keys now (KeyFileError when the file cannot be trusted)."""
        try:
            st = self.path.lstat()
            seen = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
        except FileNotFoundError:
            seen = None
        except OSError as exc:
            raise KeyFileError(f"cannot read the API key file {self.path}: {exc.strerror}") from exc
        with self._lock:
            if seen != self._seen or seen is None:
                self._keys = read_keys(self.path)
                self._seen = seen
            return self._keys

    def check(self, authorization: str | None) -> ApiKey | None:
        """The key an `Authorization: Bearer TOKEN` header carries; None when it carries
        none of them (or no keys exist: see `required`)."""
        keys = self.keys()
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = _digest(authorization[len("Bearer ") :].strip())
        found = None
        for key in keys:  # every key compared, in constant time each
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found
