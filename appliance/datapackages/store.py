"""Ingested data packages in the database: the owner of the `data_packages` and
`data_package_rows` tables (m020_data_packages). Only this module's SQL names them;
ingest records a package and its rows here in one transaction, the dataset builder reads
the rows back (`rows`), the CLI lists the packages (`packages`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.clock import now_iso
from appliance.datapackages.format import DataManifest, DataRow, origin
from appliance.packages.corpus import Connection
from appliance.records import as_json, from_row


@dataclass(frozen=True)
class DataPackage:
    """One ingested data package (a `data_packages` row)."""

    id: int
    name: str
    version: str
    manifest_sha256: str
    content_sha256: str
    description: str
    generator: str
    model: str
    license: str
    created: str
    rows: dict  # "STAGE/KIND" → rows
    ingested_at: str

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def origin(self) -> str:
        """The provenance its rows carry in datasets: import:NAME-VERSION."""
        return origin(self.label)

    def to_dict(self) -> dict:
        return as_json(self, origin=self.origin)


@dataclass(frozen=True)
class ImportedRow:
    """One row of an ingested data package, as the package wrote it."""

    package: str  # the data package, NAME-VERSION
    stage: str
    line: int  # its line in STAGE.jsonl
    row: DataRow

    @property
    def origin(self) -> str:
        return origin(self.package)


def add_package(
    db: Connection,
    manifest: DataManifest,
    manifest_sha256: str,
    rows: Sequence[tuple[str, int, DataRow]],
) -> int:
    """Record a package and its rows, (stage, line, row) each (the caller holds the
    transaction). sqlite3.IntegrityError when its name and version, or its content, is
    here already."""
    source = manifest.source
    counts = Counter(f"{stage}/{row.kind}" for stage, _, row in rows)
    cur = db.execute(
        "INSERT INTO data_packages (name, version, manifest_sha256, content_sha256, "
        "description, generator, model, license, created, rows, ingested_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [manifest.name, manifest.version, manifest_sha256, manifest.content_sha256,
         manifest.description, source.generator, source.model, source.license, source.created,
         json.dumps(dict(sorted(counts.items()))), now_iso()],
    )  # fmt: skip
    package_id = cur.lastrowid
    conn = getattr(db, "conn", db)
    conn.executemany(
        "INSERT INTO data_package_rows (package_id, stage, kind, line, row) VALUES (?, ?, ?, ?, ?)",
        [
            (package_id, stage, row.kind, line, row.to_line().rstrip("\n"))
            for stage, line, row in rows
        ],
    )
    return package_id


_COLUMNS = (
    "id, name, version, manifest_sha256, content_sha256, description, generator, model, "
    "license, created, rows, ingested_at"
)


def _packages(db: Connection, where: str = "", params: Sequence = ()) -> list[DataPackage]:
    cursor = db.execute(f"SELECT {_COLUMNS} FROM data_packages {where}", params)
    columns = [c[0] for c in cursor.description]
    return [
        from_row(DataPackage, dict(zip(columns, row, strict=True)), json_columns=("rows",))
        for row in cursor.fetchall()
    ]


def packages(db: Connection) -> list[DataPackage]:
    """Every ingested data package, in the order they were ingested."""
    return _packages(db, "ORDER BY id")


def package_named(db: Connection, name: str, version: str) -> DataPackage | None:
    found = _packages(db, "WHERE name = ? AND version = ?", [name, version])
    return found[0] if found else None


def package_with_content(db: Connection, content_sha256: str) -> DataPackage | None:
    found = _packages(db, "WHERE content_sha256 = ?", [content_sha256])
    return found[0] if found else None


def rows(db: Connection, stage: str, kind: str) -> list[ImportedRow]:
    """The rows every ingested package holds for `stage` and `kind`, package by package
    in the order they were ingested, each in its file's order."""
    found = db.execute(
        "SELECT p.name || '-' || p.version, r.stage, r.line, r.row FROM data_package_rows r "
        "JOIN data_packages p ON p.id = r.package_id WHERE r.stage = ? AND r.kind = ? "
        "ORDER BY p.id, r.line",
        [stage, kind],
    ).fetchall()
    return [
        ImportedRow(label, stage_, line, DataRow.model_validate_json(text))
        for label, stage_, line, text in found
    ]
