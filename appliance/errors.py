"""Forge's exception hierarchy: every error an operator can see is a ForgeError.

Each error carries what was wrong and what to do about it, so the CLI can print it
without a traceback. `validation_problems` words what pydantic found wrong in input
(forge.toml, models.toml, a manifest, a control request) for such messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only its type: errors.py imports nothing, so anything may import it
    from pydantic import ValidationError


class ForgeError(Exception):
    """An error with a message for the operator and, where known, the fix."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  → {self.hint}"
        return self.message


class ConfigError(ForgeError):
    """forge.toml or models.toml is unreadable or holds a bad value."""


class StoreError(ForgeError):
    """The database cannot be opened, migrated or used."""


class UsageError(ForgeError):
    """A command was given arguments it cannot work with."""

    exit_code = 2


class PackageBuildError(ForgeError):
    """`forge package build` could not make a package from its source."""


class SandboxError(ForgeError):
    """The sandbox is unavailable or refused to run a command."""


class IndexingError(ForgeError):
    """A repository snapshot cannot be indexed, or a lookup asks for what it does not hold."""


class TrainingFailed(ForgeError):
    """A training run could not finish: it diverged past its recoveries, or its process died."""


def validation_problems(exc: ValidationError, top: str = "") -> list[str]:
    """Each problem pydantic found, as "where: what" (`top` names the place when it is the
    whole input); never the values themselves."""
    return [
        f"{'.'.join(map(str, e['loc'])) or top}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)
    ]
