"""The dashboard's read-only query layer: everything a screen shows comes from here.

Each call opens its own connection (so it can run in a worker thread, off the UI) and
closes it again; nothing here writes. What the operator asks Forge to do is in
`tui.steering`. `gather` (the `forge status` data) and `now` can be replaced, so that
tests and the screenshot script render a fixed snapshot of the box's resources.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance import registry
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.evaluation.metrics import METRICS
from appliance.evaluation.store import StoredDecision, decisions
from appliance.ops import jobs
from appliance.registry import AdapterEvent
from appliance.stages import STAGES
from appliance.store import open_db

OUTCOMES = ("resolved", "failed", "not_applied", "tampered", "infra")
LOG_TAIL_BYTES = 64_000  # what the log view reads back from the end of a job's log
REJECTED_BYTES = 16_000


@dataclass(frozen=True)
class CorpusPackage:
    id: int
    name: str
    version: str
    split: str | None
    ingested_at: str
    commits: int
    graded: int
    usable: int
    infra: int


@dataclass(frozen=True)
class QuarantinedPackage:
    folder: str  # the name under FORGE_HOME/quarantine/
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class IngestEvent:
    at: str
    source: str
    outcome: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PackagesView:
    corpus: tuple[CorpusPackage, ...]
    quarantine: tuple[QuarantinedPackage, ...]
    history: tuple[IngestEvent, ...]
    waiting: tuple[str, ...]


@dataclass(frozen=True)
class CampaignSummary:
    package_id: int
    package: str  # NAME-VERSION
    split: str | None
    commits_done: int
    triples: int
    resolved_rate: float | None
    outcomes: dict[str, int]
    synthetic_pairs: int


@dataclass(frozen=True)
class CampaignCommit:
    sha: str
    message: str
    usable: bool | None  # None: not gold-graded yet
    samples: int
    outcomes: dict[str, int]


@dataclass(frozen=True)
class Sample:
    sample: int
    temperature: float
    outcome: str
    reason: str
    stages: dict  # stage -> {output, error, adapter, call_id, ...}
    grading: dict  # verdict, fail_to_pass {test: outcome}, pass_to_pass_broken, run
    diff: str
    created_at: str


@dataclass(frozen=True)
class MetricPoint:
    """A version's value of the stage's primary metric, from a gate decision."""

    label: str  # 'base', 'v1', 'v2', ...
    value: float
    interval: tuple[float, float]


@dataclass(frozen=True)
class AdapterRow:
    name: str
    version: int
    kind: str
    status: str
    servable: bool
    unservable_reason: str | None
    dataset: str
    created_at: str
    train_loss: float | None
    decision: StoredDecision | None  # the newest with this version as the candidate


@dataclass(frozen=True)
class StageSummary:
    stage: str
    active: str  # 'scope-v2' or 'base'
    versions: int
    candidates: int


@dataclass(frozen=True)
class StageView:
    stage: str
    primary_metric: str
    active: str  # 'scope-v2' or 'base'
    active_version: int | None  # None: the base
    versions: tuple[AdapterRow, ...]
    chart: tuple[MetricPoint, ...]
    history: tuple[AdapterEvent, ...]  # registry.history, newest first


@dataclass(frozen=True)
class LogTail:
    path: str  # relative to FORGE_HOME
    text: str
    size: int  # bytes in the file when read
    missing: bool


class Reader:
    """The queries of the dashboard, against one FORGE_HOME."""

    def __init__(
        self,
        config: Config,
        *,
        gather: Callable[[Config, object], dict] | None = None,
    ) -> None:
        self.config = config
        if gather is None:
            from appliance.status import gather
        self._gather = gather

    @contextmanager
    def db(self) -> Iterator:
        database = open_db(self.config, migrate=False)
        try:
            yield database
        finally:
            database.conn.close()

    # --- the overview ------------------------------------------------------------------

    def overview(self) -> dict:
        """`forge status --json`'s data: daemon, jobs, corpus, adapters, resources."""
        with self.db() as db:
            return self._gather(self.config, db)

    def daemon_running(self) -> bool:
        """Whether forged answers on its control socket."""
        from appliance.ops.control import request

        try:
            return bool(request(self.config, "ping", timeout=2))
        except ForgeError:
            return False

    # --- packages ----------------------------------------------------------------------

    def packages(self, history_limit: int = 100) -> PackagesView:
        with self.db() as db:
            corpus = tuple(
                CorpusPackage(**row)
                for row in db.query(
                    "SELECT p.id, p.name, p.version, p.split, p.ingested_at, "
                    "(SELECT COUNT(*) FROM commits c WHERE c.package_id = p.id) AS commits, "
                    "(SELECT COUNT(*) FROM gold_results g WHERE g.package_id = p.id) AS graded, "
                    "(SELECT COUNT(*) FROM gold_results g WHERE g.package_id = p.id "
                    "AND g.usable) AS usable, "
                    "(SELECT COUNT(*) FROM gold_results g WHERE g.package_id = p.id "
                    "AND g.status = 'infra') AS infra "
                    "FROM packages p ORDER BY p.name, p.version"
                )
            )
            history = tuple(
                IngestEvent(at, source, outcome, tuple(json.loads(reasons)))
                for at, source, outcome, reasons in db.execute(
                    "SELECT at, source, outcome, reasons FROM ingest_events "
                    "ORDER BY id DESC LIMIT ?",
                    [history_limit],
                ).fetchall()
            )
        return PackagesView(corpus, self._quarantine(), history, self._waiting())

    def _quarantine(self) -> tuple[QuarantinedPackage, ...]:
        folder = self.config.dir("quarantine")
        if not folder.is_dir():
            return ()
        return tuple(
            QuarantinedPackage(entry.name, _rejection_reasons(entry / "REJECTED.txt"))
            for entry in sorted(folder.iterdir())
            if entry.is_dir()
        )

    def _waiting(self) -> tuple[str, ...]:
        folder = self.config.dir("ingest")
        if not folder.is_dir():
            return ()
        return tuple(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))

    # --- campaigns ---------------------------------------------------------------------

    def campaigns(self) -> tuple[CampaignSummary, ...]:
        from appliance.campaign.store import summary

        with self.db() as db:
            rows = db.execute(
                "SELECT id, name, version, split FROM packages ORDER BY name, version"
            ).fetchall()
            out = []
            for package_id, name, version, split in rows:
                s = summary(db, package_id)
                out.append(
                    CampaignSummary(
                        package_id,
                        f"{name}-{version}",
                        split,
                        s["commits"],
                        s["triples"],
                        s["resolved_rate"],
                        s["outcomes"],
                        s["synthetic_pairs"],
                    )
                )
        return tuple(out)

    def campaign_commits(self, package_id: int) -> tuple[CampaignCommit, ...]:
        with self.db() as db:
            rows = db.execute(
                "SELECT c.sha, c.message, g.usable, t.outcome, COUNT(t.id) "
                "FROM commits c "
                "LEFT JOIN gold_results g ON g.package_id = c.package_id AND g.sha = c.sha "
                "LEFT JOIN triples t ON t.package_id = c.package_id AND t.sha = c.sha "
                "WHERE c.package_id = ? GROUP BY c.id, t.outcome ORDER BY c.id",
                [package_id],
            ).fetchall()
        commits: dict[str, dict] = {}
        for sha, message, usable, outcome, count in rows:
            entry = commits.setdefault(
                sha,
                {
                    "message": message,
                    "usable": None if usable is None else bool(usable),
                    "outcomes": dict.fromkeys(OUTCOMES, 0),
                },
            )
            if outcome is not None:
                entry["outcomes"][outcome] = count
        return tuple(
            CampaignCommit(
                sha,
                e["message"].splitlines()[0] if e["message"] else "",
                e["usable"],
                sum(e["outcomes"].values()),
                e["outcomes"],
            )
            for sha, e in commits.items()
        )

    def samples(self, package_id: int, sha: str) -> tuple[Sample, ...]:
        with self.db() as db:
            rows = db.execute(
                "SELECT sample, temperature, outcome, reason, stages, grading, diff, created_at "
                "FROM triples WHERE package_id = ? AND sha = ? ORDER BY sample",
                [package_id, sha],
            ).fetchall()
        return tuple(
            Sample(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6], r[7])
            for r in rows
        )

    # --- adapters ----------------------------------------------------------------------

    def stages(self) -> tuple[StageSummary, ...]:
        with self.db() as db:
            found = registry.adapters(db)
        counts = Counter((a.stage, a.status) for a in found)
        active = {a.stage: a.name for a in found if a.status == "active"}
        return tuple(
            StageSummary(
                stage,
                active.get(stage, "base"),
                sum(n for (s, _), n in counts.items() if s == stage),
                counts.get((stage, "candidate"), 0),
            )
            for stage in STAGES
        )

    def stage(self, stage: str) -> StageView:
        primary = METRICS[stage][0][0]
        with self.db() as db:
            entries = registry.versions(db, stage)
            found = decisions(db, stage, limit=500)  # newest first
            events = registry.history(db, stage)
        newest: dict[str, StoredDecision] = {}
        for decision in found:
            newest.setdefault(decision.candidate, decision)
        rows = tuple(
            AdapterRow(
                e.name,
                e.adapter.version,
                e.adapter.kind,
                e.adapter.status,
                e.servable,
                e.unservable_reason,
                e.adapter.dataset,
                e.adapter.created_at,
                _train_loss(e.adapter.metrics),
                newest.get(e.name),
            )
            for e in entries
        )
        active = next((r for r in rows if r.status == "active"), None)
        return StageView(
            stage,
            primary,
            active.name if active else "base",
            active.version if active else None,
            rows,
            _chart(stage, primary, rows, found),
            tuple(reversed(events)),
        )

    def rollback_preview(self, stage: str) -> tuple[str, str]:
        """(from, to) a plain rollback of `stage` would do, by the registry's own rule,
        changing nothing. Raises the registry's refusal (e.g. nothing active) as it would."""
        with self.db() as db:
            before, after = registry.rollback_target(db, stage)
        return (before.name if before else "base", after.name if after else "base")

    def decision_for(self, stage: str, candidate: str) -> StoredDecision | None:
        with self.db() as db:
            found = decisions(db, stage, limit=500)
        return next((d for d in found if d.candidate == candidate), None)

    # --- jobs and logs -----------------------------------------------------------------

    def jobs(self, limit: int = 200) -> tuple[jobs.Job, ...]:
        with self.db() as db:
            return tuple(jobs.jobs(db, limit=limit))

    def log_tail(self, log: str) -> LogTail:
        """The end of a job's log (`log` is relative to FORGE_HOME, as jobs record it)."""
        path = (self.config.home / log).resolve()
        if not path.is_relative_to(self.config.home.resolve()) or not path.is_file():
            return LogTail(log, "", 0, missing=True)
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
        text = data.decode("utf-8", errors="replace")
        if size > LOG_TAIL_BYTES:
            text = text.split("\n", 1)[-1]  # drop the partial first line
        return LogTail(log, text, size, missing=False)


def _rejection_reasons(path: Path) -> tuple[str, ...]:
    """The `- reason` lines of a quarantined package's REJECTED.txt."""
    try:
        text = path.read_text(errors="replace")[:REJECTED_BYTES]
    except OSError:
        return ("(no REJECTED.txt)",)
    return tuple(line[2:] for line in text.splitlines() if line.startswith("- "))


def _train_loss(metrics: dict) -> float | None:
    for key in ("train_loss", "final_loss", "loss"):
        value = metrics.get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def _chart(stage, primary, rows, found) -> tuple[MetricPoint, ...]:
    """The primary metric per version (the base first, if a decision measured it)."""
    points = []
    base = next((d for d in reversed(found) if d.baseline == "base"), None)
    if base is not None:
        metric = _metric(base.report, primary)
        if metric is not None:
            points.append(
                MetricPoint("base", metric["baseline"], tuple(metric["baseline_interval"]))
            )
    for row in rows:
        metric = _metric(row.decision.report, primary) if row.decision else None
        if metric is not None:
            points.append(
                MetricPoint(
                    f"v{row.version}", metric["candidate"], tuple(metric["candidate_interval"])
                )
            )
    return tuple(points)


def _metric(report: dict, name: str) -> dict | None:
    return next((m for m in report.get("metrics", []) if m.get("metric") == name), None)
