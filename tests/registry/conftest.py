"""Registry fixtures: adapter rows written straight into a real database."""

from __future__ import annotations

import json

SHA = "ab" * 32  # a base sha256 no real file has


def add_adapter(
    db,
    stage: str,
    version: int,
    *,
    base_sha256: str = SHA,
    path: str | None = None,
    status: str = "candidate",
    loss: float = 0.5,
) -> None:
    """An `adapters` row as `forge train` registers one (the file need not exist)."""
    db.execute(
        "INSERT INTO adapters (stage, version, kind, status, dataset, base, base_sha256, "
        "hyperparameters, metrics, path, sha256, created_at) "
        "VALUES (?, ?, 'sft', ?, ?, 'smol', ?, '{}', ?, ?, ?, '2024-01-01T00:00:00+00:00')",
        [stage, version, status, f"{stage}-sft-v{version}", base_sha256,
         json.dumps({"final_loss": loss}), path or f"adapters/{stage}/{stage}-v{version}.gguf",
         "cd" * 32],
    )  # fmt: skip
