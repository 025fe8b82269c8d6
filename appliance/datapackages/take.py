"""Ingest of one data package: validated where it lies, recorded, or quarantined.

`forge ingest` (appliance.packages.ingest) tells the kinds apart by the manifest and
hands a data package here (`take_data_package`, which its callers pass it as
`take_data`). Nothing of the package is kept as files: validation reads each file once
(no link followed), hashes and parses those same bytes, and the rows it parsed are what
is recorded, with the package, in one transaction (the commit point); so a file changed
after it was read changes nothing. A package refused goes to quarantine/ with
REJECTED.txt, like a repo package; the same package again is a `duplicate`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from appliance.config import Config
from appliance.datapackages import store
from appliance.datapackages.validate import DataReport, validate_data_package
from appliance.packages import corpus
from appliance.packages.ingest import IngestResult, label, quarantine, remove_source
from appliance.packages.problems import Problem
from appliance.store import transaction

WHAT = "data package"


def take_data_package(
    config: Config, db: sqlite_utils.Database, source: Path, keep: bool = False
) -> IngestResult:
    """Validate the data package `source` against this box's corpus and record its rows,
    or quarantine it with the reasons. With `keep` the source is left in place."""
    shown = label(source.name)
    report = validate_data_package(source, config, db)
    manifest = report.manifest
    name, version = (manifest.name, manifest.version) if manifest else (None, None)
    if manifest is not None and [p.rule for p in report.problems] == ["duplicate"]:
        known = store.package_named(db, manifest.name, manifest.version)
        corpus.add_event(db, shown, "duplicate", reasons=[f"data package {known.label}"])
        if not keep:
            remove_source(source)
        return IngestResult(shown, "duplicate", name, version, reasons=["already ingested"])
    if not report.ok:
        return quarantine(config, db, source, report.problems, name, version, keep=keep, what=WHAT)
    summary = _summary(report)
    try:
        with transaction(db) as conn:
            rows = [(r.stage, r.line, r.row) for r in report.rows]
            store.add_package(conn, manifest, report.manifest_sha256, rows)
            corpus.add_event(conn, shown, "accepted", reasons=[summary])
    except sqlite3.IntegrityError:
        # Recorded meanwhile by someone who did not hold the ingest lock (a restore?).
        taken = Problem("duplicate-content", "", "recorded meanwhile", "nothing to do")
        return quarantine(config, db, source, [taken], name, version, keep=keep, what=WHAT)
    if not keep:
        remove_source(source)
    return IngestResult(shown, "accepted", name, version, reasons=[summary])


def _summary(report: DataReport) -> str:
    counts = report.to_dict()["rows"]
    about = sum(1 for r in report.rows if r.row.package is not None)
    return (
        f"data package, {len(report.rows)} rows ("
        + ", ".join(f"{key} {n}" for key, n in counts.items())
        + f"; {about} about corpus commits, {len(report.rows) - about} free-standing)"
    )
