"""Dataset versions: accumulate, never replace.

Rows are stored once, with the version that first included them; version N of a stage's
SFT or DPO dataset is every row first included at N or before and not dropped at N or
before. A row is dropped when its commit may no longer be trained on (held out now, or
its package moved to eval): each version records the hold-out it was built against.
Rows come from campaigns, ingested data packages (`datasets.sources`) and the operator's
feedback on solve runs (`datasets.operator`); each row names its origin, and each version
records what it took from each origin and what it left out and why (`sources`). An
operator run whose rows may not be trained on now is held back, and each version records
those runs with the reason (`held_back`). A new version is made only when rows are new or
dropped, or what is held back changed. Rows are deduplicated, and at
most `per_task_cap` rows of one task enter a dataset. Each version is written to
FORGE_HOME/datasets as JSONL (with its sha256) and checked by the quality gates; a
version that fails is kept, marked and explained, and training refuses it. A training
run mixes 10–20 % replay of earlier versions' rows into the new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.clock import now_iso
from appliance.config import Config
from appliance.datasets import critic, gates, sources
from appliance.datasets.operator import OperatorRows, operator_rows
from appliance.datasets.rows import CAMPAIGN, DatasetRow
from appliance.errors import ForgeError, UsageError
from appliance.packages import corpus
from appliance.packages.split import Holdout
from appliance.records import as_json, from_row
from appliance.solve.runs import is_operator_task
from appliance.stages import STAGES
from appliance.store import transaction

KINDS = ("sft", "dpo")
# The tables dataset_rows and dataset_versions: m006_datasets in appliance/store/migrations.py.


class DatasetRefused(ForgeError):
    """A dataset version failed its quality gates: it is kept, but not trained on."""


@dataclass(frozen=True)
class DatasetVersion:
    stage: str
    kind: str
    version: int
    rows: int
    new_rows: int
    status: str
    gates: dict
    reasons: list
    path: str
    sha256: str
    created_at: str
    dropped_rows: int = 0  # rows of earlier versions this one no longer includes
    holdout: dict = field(default_factory=dict)  # Holdout.to_dict() it was built against
    held_back: list = field(default_factory=list)  # operator runs not taken, and why
    # What it took from each origin, what it left out and why (appliance.datasets.sources)
    sources: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.kind}-v{self.version}"

    def to_dict(self) -> dict:
        return as_json(self, name=self.name)


def _check_stage(stage: str, kind: str) -> None:
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}", f"stages: {', '.join(STAGES)}")
    if kind not in KINDS:
        raise UsageError(f"unknown dataset kind {kind!r}", "use sft or dpo")


def versions(db, stage: str | None = None) -> list[DatasetVersion]:
    where, args = ("WHERE stage = ?", [stage]) if stage else ("", [])
    rows = db.query(f"SELECT * FROM dataset_versions {where} ORDER BY stage, kind, version", args)
    return [from_row(DatasetVersion, row, json_columns=_JSON_COLUMNS) for row in rows]


def latest(db, stage: str, kind: str) -> DatasetVersion | None:
    found = [v for v in versions(db, stage) if v.kind == kind]
    return found[-1] if found else None


# The rows version ? of a stage's dataset includes (the version given twice).
_INCLUDED = (
    "stage = ? AND kind = ? AND first_version <= ? AND (dropped_in IS NULL OR dropped_in > ?)"
)


def rows_of(db, stage: str, kind: str, version: int) -> list[DatasetRow]:
    """The rows version `version` includes, in the order they were stored."""
    return [
        _stored(row)
        for (row,) in db.execute(
            f"SELECT row FROM dataset_rows WHERE {_INCLUDED} ORDER BY id",
            [stage, kind, version, version],
        ).fetchall()
    ]


def _stored(text: str) -> DatasetRow:
    """A row back from its stored JSON (dataset_rows.row, a JSONL line)."""
    return DatasetRow.from_dict(json.loads(text))


def _jsonl(rows: list[DatasetRow]) -> str:
    return "".join(json.dumps(row.to_dict(), sort_keys=True) + "\n" for row in rows)


def build(config: Config, db, stage: str, kind: str) -> DatasetVersion | None:
    """Add the rows the sources imply (appliance.datasets.sources: the campaigns, ingested
    data packages; and the operator's feedback on solve runs, appliance.datasets.operator)
    that the stage's dataset lacks, and drop the rows whose commit may no longer be trained
    on, as a new version. None when nothing is new or dropped and the same operator runs
    are held back (the latest version stays current). The version records what it took
    from each origin and what it left out and why (`DatasetVersion.sources`), and the
    operator runs it held back (`DatasetVersion.held_back`)."""
    _check_stage(stage, kind)
    holdout = Holdout.of(config, db)
    splits = {package.name: package.split for package in corpus.packages(db)}
    operator = operator_rows(config, db, stage, holdout)
    found = [r for r in sources.candidates(db, stage, holdout.trainable) if r.kind == kind]
    found += [r for r in operator.rows if r.kind == kind]
    if kind == "dpo":  # a calibrated critic's labels, last: the cap keeps the harness's first
        found += critic.critic_rows(config, db, stage, holdout.trainable)
    candidates = [r for r in found if _trainable(r.task, holdout, splits, operator)]
    held = [r for r in found if not _trainable(r.task, holdout, splits, operator)]
    with transaction(db) as conn:
        version = 1 + (
            conn.execute(
                "SELECT MAX(version) FROM dataset_versions WHERE stage = ? AND kind = ?",
                [stage, kind],
            ).fetchone()[0]
            or 0
        )
        cap = config.settings.datasets.per_task_cap
        new, left_out = _new_rows(conn, stage, kind, candidates, cap, held)
        dropped = [
            (row_id, origin)
            for row_id, task, origin in conn.execute(
                f"SELECT id, task, {_ORIGIN} FROM dataset_rows WHERE stage = ? AND kind = ? "
                "AND dropped_in IS NULL",
                [stage, kind],
            ).fetchall()
            if not _trainable(task, holdout, splits, operator)
        ]
        held_back = [h.to_dict() for h in operator.held_back]
        previous = conn.execute(
            "SELECT held_back FROM dataset_versions WHERE stage = ? AND kind = ? "
            "ORDER BY version DESC LIMIT 1",
            [stage, kind],
        ).fetchone()
        # What is held back and why is part of the record: a change makes a version too.
        if not new and not dropped and held_back == json.loads(previous[0] if previous else "[]"):
            return None
        left_out += Counter((origin, HELD_OUT_NOW) for _, origin in dropped)
        _store_version(
            config, conn, stage, kind, version, new, dropped, holdout, left_out, held_back
        )
    return latest(db, stage, kind)


_JSON_COLUMNS = ("gates", "reasons", "holdout", "held_back", "sources")
# A stored row's origin (rows stored before origins were recorded are the campaign's).
_ORIGIN = f"COALESCE(json_extract(row, '$.provenance.origin'), '{CAMPAIGN}')"
HELD_OUT = "its commit is held out, or its package is eval"
HELD_OUT_NOW = "dropped: its commit is held out now, or its package moved to eval"
DUPLICATE = "the same row is in a dataset already, from another origin"
OVER_CAP = "over the per-task cap (datasets.per_task_cap)"


def _store_version(
    config, conn, stage, kind, version, new, dropped, holdout, left_out, held_back
) -> None:
    """Write version `version`: its new rows, the rows it drops, its JSONL file and row."""
    now = now_iso()
    for key, row in new:
        conn.execute(
            "INSERT INTO dataset_rows (stage, kind, key, task, first_version, row, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [stage, kind, key, row.task, version, json.dumps(row.to_dict()), now],
        )
    for row_id, _ in dropped:
        conn.execute("UPDATE dataset_rows SET dropped_in = ? WHERE id = ?", [version, row_id])
    all_rows = rows_of(conn, stage, kind, version)
    rates = gates.measure(all_rows)
    reasons = gates.check(rates, config.settings.datasets.limits())
    path, digest = _write_jsonl(config, stage, kind, version, all_rows)
    taken = Counter(row.provenance.origin for _, row in new)
    record = {
        "taken": dict(sorted(taken.items())),
        "dropped": [
            {"origin": origin, "reason": reason, "rows": n}
            for (origin, reason), n in sorted(left_out.items())
        ],
    }
    conn.execute(
        "INSERT INTO dataset_versions (stage, kind, version, rows, new_rows, dropped_rows, "
        "status, gates, reasons, holdout, held_back, path, sha256, created_at, sources) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [stage, kind, version, len(all_rows), len(new), len(dropped),
         "failed" if reasons else "ok", json.dumps(rates), json.dumps(reasons),
         json.dumps(holdout.to_dict()), json.dumps(held_back), path, digest, now,
         json.dumps(record)],
    )  # fmt: skip


def _new_rows(
    conn, stage: str, kind: str, candidates: list[DatasetRow], cap: int, held: list[DatasetRow]
) -> tuple[list, Counter]:
    """(key, row) of the candidates not stored yet (in any dataset), at most `cap` rows
    per task in this stage's dataset, counting the rows stored already; and how many were
    left out, by (origin, reason), `held` (candidates whose commit may not be trained on)
    among them. A candidate stored already from its own origin is the row itself again,
    and not counted (nor is a held one stored already: the version drops it)."""
    known = dict(conn.execute(f"SELECT key, {_ORIGIN} FROM dataset_rows").fetchall())
    skipped = Counter((r.provenance.origin, HELD_OUT) for r in held if r.key not in known)
    per_task = Counter(
        task
        for (task,) in conn.execute(
            "SELECT task FROM dataset_rows WHERE stage = ? AND kind = ?", [stage, kind]
        ).fetchall()
    )
    new = []
    for row in candidates:
        key, origin = row.key, row.provenance.origin
        if key in known:
            if known[key] != origin:
                skipped[(origin, DUPLICATE)] += 1
            continue
        if per_task[row.task] >= cap:
            skipped[(origin, OVER_CAP)] += 1
            continue
        known[key] = origin
        per_task[row.task] += 1
        new.append((key, row))
    return new, skipped


def _trainable(task: str, holdout: Holdout, splits: dict, operator: OperatorRows) -> bool:
    """Whether rows of `task` may stay in a dataset: an operator task's runs are judged by
    the leak rule for solve runs (appliance.solve.leak), a commit's by the hold-out."""
    if is_operator_task(task):
        return not operator.untrainable(task)
    return holdout.trainable(*_task_commit(task, splits))


def _task_commit(task: str, splits: dict[str, str | None]) -> tuple[str, str | None, str]:
    """(package name, its split, sha) of a row's task NAME@SHA; the split is None for a
    name no longer in the corpus."""
    name, _, sha = task.rpartition("@")
    return name, splits.get(name), sha


def _write_jsonl(config: Config, stage: str, kind: str, version: int, rows) -> tuple[str, str]:
    folder = config.dir("datasets") / stage
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{kind}-v{version}.jsonl"
    data = _jsonl(rows).encode()
    tmp = final.with_suffix(".jsonl.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(final)
    return str(final.relative_to(config.home)), hashlib.sha256(data).hexdigest()


def export(config: Config, db, stage: str, kind: str, version: int | None, out: Path) -> int:
    """Write a version's rows to `out` as JSONL; return the row count."""
    _check_stage(stage, kind)
    chosen = latest(db, stage, kind) if version is None else next(
        (v for v in versions(db, stage) if v.kind == kind and v.version == version), None
    )  # fmt: skip
    if chosen is None:
        raise UsageError(
            f"no {kind} dataset version {version or ''} for {stage}".replace("  ", " "),
            "build one with forge datasets build",
        )
    rows = rows_of(db, stage, kind, chosen.version)
    out.write_text(_jsonl(rows))
    return len(rows)


def training_mix(
    db, stage: str, kind: str, version: DatasetVersion, replay: float, seed: int = 0
) -> list[DatasetRow]:
    """The rows a training run on `version` uses: its new rows plus a replay share of
    earlier versions' rows (`replay` of the mix). Refuses a version that failed its gates."""
    if version.status != "ok":
        raise DatasetRefused(
            f"{version.name} failed its quality gates: " + "; ".join(version.reasons),
            "let the campaign produce better rows, or change the limits in forge.toml "
            "[datasets] if they are wrong",
        )
    rows = db.execute(
        f"SELECT row, first_version FROM dataset_rows WHERE {_INCLUDED} ORDER BY id",
        [stage, kind, version.version, version.version],
    ).fetchall()
    new = [_stored(r) for r, v in rows if v == version.version]
    old = [_stored(r) for r, v in rows if v < version.version]
    wanted = min(len(old), round(len(new) * replay / (1 - replay))) if old else 0
    return new + random.Random(seed).sample(old, wanted)


def rows_made_from(db, name: str) -> int:
    """Rows made from package `name` (any version) in any dataset version (the split's
    `trained_rows`: a package datasets hold rows from never becomes eval)."""
    prefix = f"{name}@"  # dataset rows name their task package@commit
    return db.execute(
        "SELECT COUNT(*) FROM dataset_rows WHERE substr(task, 1, ?) = ?", [len(prefix), prefix]
    ).fetchone()[0]


def origins_of(db, version: DatasetVersion) -> dict[str, int]:
    """The rows `version` includes, per origin."""
    return dict(
        db.execute(
            f"SELECT {_ORIGIN} AS origin, COUNT(*) FROM dataset_rows WHERE {_INCLUDED} "
            "GROUP BY origin ORDER BY origin",
            [version.stage, version.kind, version.version, version.version],
        ).fetchall()
    )


def named(db, name: str | None) -> list[DatasetVersion]:
    """The versions `name` names: STAGE-KIND-vN, a stage (all its versions) or None (all)."""
    if name is None:
        return versions(db)
    if name in STAGES:
        return versions(db, name)
    found = [v for v in versions(db) if v.name == name]
    if not found:
        raise UsageError(
            f"no dataset version {name!r}",
            "name a stage or a version as forge datasets list shows it (scope-sft-v2)",
        )
    return found


def rows_by_origin(db) -> dict[str, int]:
    """Rows in datasets now (not dropped), per origin (campaign, import:NAME-VERSION, …),
    every stage and kind together."""
    return dict(
        db.execute(
            f"SELECT {_ORIGIN} AS origin, COUNT(*) FROM dataset_rows WHERE dropped_in IS NULL "
            "GROUP BY origin ORDER BY origin"
        ).fetchall()
    )


LEAKED_SHOWN = 20  # LeakCheck.leaked lists at most this many task keys
_NAME = re.compile(r"^(?P<stage>.+)-(?P<kind>sft|dpo)-v(?P<version>[0-9]+)$")


@dataclass(frozen=True)
class LeakCheck:
    """How many evaluation tasks a dataset version holds rows of (each one a leak)."""

    dataset: str | None  # STAGE-KIND-vN (an adapter's dataset); None: the base
    tasks: int  # distinct tasks checked
    leaks: int  # of those, tasks the version includes a row of
    leaked: tuple[str, ...]  # their keys NAME@SHA, at most LEAKED_SHOWN
    known: bool = True  # False: no such dataset version, so nothing could be checked

    def to_dict(self) -> dict:
        return as_json(self)


def leak_check(db, dataset_name: str | None, tasks: Sequence[str]) -> LeakCheck:
    """Which of `tasks` (NAME@SHA) the rows included in dataset version `dataset_name`
    were made from. The base was trained on no dataset: 0 leaks."""
    wanted = list(dict.fromkeys(tasks))
    if dataset_name is None:
        return LeakCheck(None, len(wanted), 0, ())
    named = _NAME.match(dataset_name)
    version = int(named["version"]) if named else 0
    exists = (
        named
        and db.execute(
            "SELECT 1 FROM dataset_versions WHERE stage = ? AND kind = ? AND version = ?",
            [named["stage"], named["kind"], version],
        ).fetchone()
    )
    if not exists:
        return LeakCheck(dataset_name, len(wanted), 0, (), known=False)
    held = {
        task
        for (task,) in db.execute(
            f"SELECT DISTINCT task FROM dataset_rows WHERE {_INCLUDED}",
            [named["stage"], named["kind"], version, version],
        ).fetchall()
    }
    leaked = [task for task in wanted if task in held]
    return LeakCheck(dataset_name, len(wanted), len(leaked), tuple(leaked[:LEAKED_SHOWN]))


def referenced_call_ids(db) -> set[int]:
    """The model calls dataset rows were made from (each row's provenance names one)."""
    rows = db.execute("SELECT DISTINCT json_extract(row, '$.provenance.call_id') FROM dataset_rows")
    return {int(value) for (value,) in rows if value is not None}
