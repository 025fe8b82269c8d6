"""The SHA-256 of a file: the one way Forge hashes a wheel, a model or an adapter."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file at `path`, read in blocks (a model may be gigabytes)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
