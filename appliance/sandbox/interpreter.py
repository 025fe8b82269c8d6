"""The Python that repository environments are made from, and the installation the
sandbox shows so that their interpreters run inside it."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def base_python() -> str:
    """The interpreter environments are made from: the real binary, not Forge's venv link,
    so an environment needs only that Python's installation (which the sandbox shows)."""
    return os.path.realpath(sys.executable)


def interpreter_prefix() -> Path:
    """The installation of the Python that Forge's environments are made from."""
    return Path(os.path.realpath(sys.base_prefix))
