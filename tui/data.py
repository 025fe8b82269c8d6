"""The dashboard's read-only query layer: everything a screen shows comes from here.

Each call opens its own connection (so it can run in a worker thread, off the UI) and
closes it again; nothing here writes. What the operator asks Forge to do is in
`tui.steering`. `gather` (the `forge status` data) and `now` can be replaced, so that
tests and the screenshot script render a fixed snapshot of the box's resources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance import registry
from appliance.campaign import store as campaign_store
from appliance.campaign.store import StageRecord
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.evaluation.metrics import METRICS
from appliance.evaluation.store import StoredDecision, decisions
from appliance.harness.results import GoldCounts, gold_counts, gold_usable
from appliance.ops import alerts, jobs
from appliance.ops.control import request
from appliance.packages import corpus
from appliance.packages.corpus import IngestEvent, RepoPackage
from appliance.registry import AdapterEvent
from appliance.solve import runs as solve_runs
from appliance.stages import STAGES
from appliance.status import gather as gather_status
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
    stages: dict[str, StageRecord]  # stage -> its output, error, adapter, call id
    grading: dict  # verdict, fail_to_pass {test: outcome}, pass_to_pass_broken, run
    diff: str
    created_at: str


@dataclass(frozen=True)
class SolveRunRow:
    """A `forge solve` run as the dashboard lists it, with the operator's feedback."""

    id: int
    started_at: str
    package: str
    snapshot: str
    where: str  # the operator's checkout, or "package"
    outcome: str  # diff | no_diff
    test: str | None  # the test verdict; None: not tested
    applied: bool
    feedback: str | None  # good | bad; None: none yet
    corrected: bool  # the feedback came with a corrected patch
    task: str


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
    steps: int | None = None  # optimizer steps it was trained for
    built_on: str | None = None  # DPO: the SFT version it continued (its reference)


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


def _corpus_package(package: RepoPackage, commits: int, gold: GoldCounts) -> CorpusPackage:
    return CorpusPackage(
        package.id,
        package.name,
        package.version,
        package.split,
        package.ingested_at,
        commits,
        gold.graded,
        gold.usable,
        gold.infra,
    )


class Reader:
    """The queries of the dashboard, against one FORGE_HOME."""

    def __init__(
        self,
        config: Config,
        *,
        gather: Callable[[Config, object], dict] | None = None,
    ) -> None:
        self.config = config
        self._gather = gather or gather_status

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

    def raised_alerts(self) -> tuple[str, ...]:
        """What each raised, not acknowledged alert says, newest first."""
        with self.db() as db:
            return tuple(f"#{a.id} {a.message}" for a in alerts.alerts(db) if a.state == "raised")

    def daemon_running(self) -> bool:
        """Whether forged answers on its control socket."""
        try:
            return bool(request(self.config, "ping", timeout=2))
        except ForgeError:
            return False

    # --- packages ----------------------------------------------------------------------

    def packages(self, history_limit: int = 100) -> PackagesView:
        with self.db() as db:
            commits = corpus.commit_counts(db)
            gold = gold_counts(db)
            packages = tuple(
                _corpus_package(p, commits.get(p.id, 0), gold.get(p.id, GoldCounts()))
                for p in corpus.packages(db)
            )
            history = tuple(corpus.events(db, history_limit))
        return PackagesView(packages, self._quarantine(), history, self._waiting())

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
        with self.db() as db:
            out = []
            for package in corpus.packages(db):
                s = campaign_store.summary(db, package.id)
                out.append(
                    CampaignSummary(
                        package.id,
                        package.label,
                        package.split,
                        s.commits,
                        s.triples,
                        s.resolved_rate,
                        s.outcomes,
                        s.synthetic_pairs,
                    )
                )
        return tuple(out)

    def campaign_commits(self, package_id: int) -> tuple[CampaignCommit, ...]:
        with self.db() as db:
            commits = corpus.commits_of(db, package_id)
            usable = gold_usable(db, package_id)
            triples = campaign_store.outcomes_by_commit(db, package_id)
        found = []
        for c in commits:
            outcomes = dict.fromkeys(OUTCOMES, 0) | triples.get(c.sha, {})
            found.append(
                CampaignCommit(
                    c.sha,
                    c.message.splitlines()[0] if c.message else "",
                    usable.get(c.sha),
                    sum(outcomes.values()),
                    outcomes,
                )
            )
        return tuple(found)

    def samples(self, package_id: int, sha: str) -> tuple[Sample, ...]:
        with self.db() as db:
            found = campaign_store.triples(db, package_id, sha)
        return tuple(
            Sample(
                t.sample,
                t.temperature,
                t.outcome,
                t.reason,
                {s.stage: s for s in t.stages},
                t.grading,
                t.diff,
                t.created_at,
            )
            for t in found
        )

    def solve_runs(self, limit: int = 100) -> tuple[SolveRunRow, ...]:
        """The newest `forge solve` runs and their feedback."""
        with self.db() as db:
            found = solve_runs.runs(db, limit=limit)
        return tuple(
            SolveRunRow(
                r.id,
                r.started_at,
                r.package,
                r.snapshot_sha[:10],
                r.repo_path or "package",
                r.outcome,
                r.test["verdict"] if r.test else None,
                r.applied_at is not None,
                r.feedback,
                bool(r.feedback_patch),
                r.task.splitlines()[0] if r.task else "",
            )
            for r in found
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
                e.adapter.metrics.get("steps"),
                e.adapter.metrics.get("built_on"),
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
