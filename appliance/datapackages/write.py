"""`write_data_package`: the one writer of data packages (`forge teacher run` calls it on
the connected side; the tests make their packages with it).

Every row is checked as ingest will check it, but for what only the receiving box knows
(its corpus: which commits exist, which are held out or eval): its schema and that its
messages are a prompt Forge would build for the stage. The package is written into a
temporary folder beside `directory` and renamed into place, so a failed write leaves
nothing behind; READY is written last, so ingest may take it the moment it is copied.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from appliance.clock import now_iso
from appliance.config import STAGES
from appliance.datapackages.format import (
    KIND,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    DataManifest,
    DataPackageError,
    DataRow,
    prompt_problem,
    rows_file,
)
from appliance.errors import validation_problems

READY_MARKER = "READY"  # as repo packages: appliance.packages.ingest.READY_MARKER


def write_data_package(
    directory: Path,
    manifest_fields: Mapping,
    rows_by_stage: Mapping[str, Iterable[DataRow | Mapping]],
) -> DataManifest:
    """Write a data package into `directory` (created; if it exists it must be empty).

    `manifest_fields`: `name`, `version`, optional `description`, and `source` with
    `generator`, `model`, `license` and optional `created` (default: now). `rows_by_stage`:
    stage → its rows (DataRow, or dicts of the same fields). Raises DataPackageError
    naming the first problem; the manifest written is returned."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise DataPackageError(
            f"{directory} exists and is not an empty folder", "name a new folder for the package"
        )
    lines = {stage: _lines(stage, rows) for stage, rows in rows_by_stage.items()}
    lines = {stage: text for stage, text in lines.items() if text}
    if not lines:
        raise DataPackageError("no rows to write", "a data package holds at least one row")
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        files = {}
        for stage, text in lines.items():
            data = "".join(text).encode()
            (tmp / rows_file(stage)).write_bytes(data)
            files[rows_file(stage)] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "rows": len(text),
            }
        manifest = _manifest(manifest_fields, files)
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        (tmp / READY_MARKER).write_text("")
        if directory.exists():
            directory.rmdir()
        os.rename(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _lines(stage: str, rows: Iterable[DataRow | Mapping]) -> list[str]:
    if stage not in STAGES:
        raise DataPackageError(f"unknown stage {stage!r}", f"stages: {', '.join(STAGES)}")
    lines = []
    for number, given in enumerate(rows, 1):
        try:
            row = given if isinstance(given, DataRow) else DataRow.model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, "(row)"))
            raise DataPackageError(f"{stage} row {number}: {problems}") from exc
        problem = prompt_problem(stage, row.messages)
        if problem:
            raise DataPackageError(
                f"{stage} row {number}: {problem}",
                "give the messages exactly as appliance.stages.templates.messages builds them",
            )
        lines.append(row.to_line())
    return lines


def _manifest(fields: Mapping, files: dict) -> DataManifest:
    given = dict(fields)
    source = dict(given.pop("source", {}) or {})
    source.setdefault("created", now_iso())
    try:
        return DataManifest.model_validate(
            {**given, "kind": KIND, "schema_version": SCHEMA_VERSION, "source": source,
             "files": files}
        )  # fmt: skip
    except ValidationError as exc:
        raise DataPackageError(
            "the manifest fields are not valid: " + "; ".join(validation_problems(exc, "(top)"))
        ) from exc
