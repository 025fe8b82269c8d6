"""Alerts: a few rules over the box's state, evaluated by forged, and what they found.

This module owns the table `alerts` (m019_alerts in appliance/store/migrations.py). An
alert is *raised* when its rule finds something, may be *acknowledged* by the operator
(`forge alerts ack ID`: it stays quiet while the rule goes on finding it), and is
*cleared* when the rule no longer finds it; found again after that, it is a new alert.
Each raise and clear is written to the journal (forged's log) and handed to the
operator's hook, `alerts.command`, as JSON on stdin (childproc.run_command, with a
timeout). What each alert means and what to do: docs/operations.md.

The rules (one function each; the subject says what an alert is about):
- job_failed (per job kind): the newest finished job of that kind failed its last attempt;
- cycle_stale: no cycle finished in alerts.cycle_stale_hours;
- gate_stuck: the last alerts.gate_cycles cycles that decided candidates promoted none;
- disk_low: less than alerts.min_free_gb free in FORGE_HOME;
- backup_stale: the newest backup is older than alerts.backup_max_age_hours;
- doctor (per check): the sandbox or a model file fails `forge doctor`'s check.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from appliance.childproc import run_command
from appliance.clock import now_iso
from appliance.config import Config
from appliance.diskspace import GB, free_bytes
from appliance.doctor import health_checks
from appliance.errors import ForgeError, UsageError
from appliance.ops import jobs
from appliance.records import as_json, from_row
from appliance.store import open_db, transaction
from appliance.store.backup import backups
from appliance.store.migrations import created_at

log = logging.getLogger("forged")
STATES = ("raised", "acknowledged", "cleared")


@dataclass(frozen=True)
class Finding:
    """What a rule found now."""

    rule: str
    subject: str
    severity: str  # warning | critical
    message: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    id: int
    rule: str
    subject: str
    severity: str
    state: str
    message: str
    detail: dict
    raised_at: str
    seen_at: str
    acknowledged_at: str | None
    cleared_at: str | None

    def to_dict(self) -> dict:
        return as_json(self)


@dataclass(frozen=True)
class Change:
    """An alert raised or cleared by one evaluation."""

    event: str  # raised | cleared
    alert: Alert


# --- the rules ------------------------------------------------------------------------------


def _hours_since(iso: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(iso)).total_seconds() / 3600


def job_failed(config: Config, db, now: datetime) -> list[Finding]:
    return [
        Finding(
            "job_failed",
            kind,
            "critical",
            f"job {job.id} ({kind}) failed its last attempt ({job.attempts} of "
            f"{job.max_attempts}): {(job.error or '')[:300]}",
            {"job": job.id, "finished_at": job.finished_at, "error": job.error},
        )  # fmt: skip
        for kind, job in sorted(jobs.latest_finished(db).items())
        if job.status == "failed"
    ]


def cycle_stale(config: Config, db, now: datetime) -> list[Finding]:
    limit = config.settings.alerts.cycle_stale_hours
    if not limit:
        return []
    done = jobs.finished(db, ("cycle",), limit=1)
    since = done[0].finished_at if done else jobs.first_queued_at(db, "cycle")
    if since is None or _hours_since(since, now) <= limit:
        return []  # no cycle was ever asked for, or one finished recently
    hours = _hours_since(since, now)
    what = "no cycle has finished" if done else "no cycle has ever finished"
    return [Finding("cycle_stale", "", "warning",
                    f"{what} for {hours:.0f} hours (alerts.cycle_stale_hours = {limit:g})",
                    {"since": since, "last_cycle_job": done[0].id if done else None})]  # fmt: skip


def gate_stuck(config: Config, db, now: datetime) -> list[Finding]:
    n = config.settings.alerts.gate_cycles
    if not n:
        return []
    deciding = [j for j in jobs.finished(db, ("cycle", "evaluate"), limit=500)
                if (j.result or {}).get("decisions")][:n]  # fmt: skip
    if len(deciding) < n:
        return []
    actions = Counter(d.get("action", "") for j in deciding for d in j.result["decisions"])
    if actions["promoted"]:
        return []
    return [Finding("gate_stuck", "", "warning",
                    f"the gate promoted nothing in the last {n} cycles that decided "
                    f"candidates ({sum(actions.values())} candidates decided)",
                    {"jobs": [j.id for j in deciding], "actions": dict(actions)})]  # fmt: skip


def disk_low(config: Config, db, now: datetime) -> list[Finding]:
    free = free_bytes(config.home)
    warn, floor = config.settings.alerts.min_free_gb, config.settings.doctor.min_free_gb
    if free >= warn * GB:
        return []
    below_floor = free < floor * GB
    message = f"{free / GB:.1f} GB free in {config.home} (alerts.min_free_gb = {warn:g})"
    if below_floor:
        message += f"; below doctor.min_free_gb ({floor:g} GB) heavy jobs and ingest wait"
    return [Finding("disk_low", "", "critical" if below_floor else "warning", message,
                    {"free_bytes": free, "path": str(config.home)})]  # fmt: skip


def backup_stale(config: Config, db, now: datetime) -> list[Finding]:
    limit = config.settings.alerts.backup_max_age_hours
    found = backups(config)
    if found:
        since, what = found[-1].at.isoformat(), "the newest backup is"
    else:
        since, what = created_at(db), "there is no backup; the database is"
    if since is None or _hours_since(since, now) <= limit:
        return []
    hours = _hours_since(since, now)
    detail = {"since": since, "backup": str(found[-1].path) if found else None}
    message = f"{what} {hours:.0f} hours old (alerts.backup_max_age_hours = {limit:g})"
    return [Finding("backup_stale", "", "warning", message, detail)]


class DoctorRule:
    """The sandbox and each model file, as `forge doctor` checks them. A model file whose
    sha256 was found right is not read again while its size and time are unchanged."""

    def __init__(self) -> None:
        self.verified: dict = {}

    def __call__(self, config: Config, db, now: datetime) -> list[Finding]:
        return [
            Finding(
                "doctor",
                check.name,
                "critical",
                f"{check.name}: {check.detail}",
                {"fix": check.fix},
            )  # fmt: skip
            for check in health_checks(config, self.verified)
            if not check.ok
        ]


Rule = Callable[[Config, object, datetime], list[Finding]]
RULES: dict[str, Rule] = {"job_failed": job_failed, "cycle_stale": cycle_stale,
                          "gate_stuck": gate_stuck, "disk_low": disk_low,
                          "backup_stale": backup_stale}  # fmt: skip


def find(config: Config, db, now: datetime, rules: dict[str, Rule]) -> tuple[list, set]:
    """What every rule finds now, and the rules that could not look (their alerts stay as
    they are: a rule that fails to look has not found a problem gone)."""
    findings, failed = [], set()
    for name, rule in rules.items():
        try:
            findings += rule(config, db, now)
        except Exception as exc:  # one broken rule must not silence the others
            log.warning("alert rule %s could not be evaluated: %s", name, exc)
            failed.add(name)
    return findings, failed


# --- the table ------------------------------------------------------------------------------


def _alert(row: dict) -> Alert:
    return from_row(Alert, row, json_columns=("detail",))


def alerts(db, *, cleared: bool = False, limit: int = 100) -> list[Alert]:
    """Open alerts (raised, then acknowledged), newest first; with `cleared`, the recently
    cleared ones after them."""
    states = STATES if cleared else STATES[:2]
    marks = ",".join("?" * len(states))
    rows = db.query(
        f"SELECT * FROM alerts WHERE state IN ({marks}) "
        "ORDER BY state = 'cleared', state = 'acknowledged', id DESC LIMIT ?",
        [*states, limit],
    )
    return [_alert(r) for r in rows]


def get(db, alert_id: int) -> Alert:
    rows = list(db.query("SELECT * FROM alerts WHERE id = ?", [alert_id]))
    if not rows:
        raise UsageError(f"no alert {alert_id}", "forge alerts lists them")
    return _alert(rows[0])


def acknowledge(db, alert_id: int, now: datetime | None = None) -> Alert:
    """The operator has seen it: it stays quiet until it clears and is raised anew."""
    alert = get(db, alert_id)
    if alert.state == "cleared":
        raise UsageError(f"alert {alert_id} was cleared at {alert.cleared_at}: nothing to "
                         "acknowledge", "forge alerts lists the open ones")  # fmt: skip
    if alert.state == "raised":
        with transaction(db):
            db.execute(
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at = ? WHERE id = ? "
                "AND state = 'raised'",
                [now_iso(at=now), alert_id],
            )
    return get(db, alert_id)


def record(db, findings: list[Finding], now: datetime, skip_rules: set = frozenset()) -> list:
    """Store what the rules found: new findings raise alerts, known ones are refreshed
    (an acknowledged one stays acknowledged), open alerts no longer found are cleared,
    except those of `skip_rules`. The raises and clears, as Changes."""
    stamp = now_iso(at=now)
    raised, cleared = [], []
    with transaction(db):
        open_ = {(a.rule, a.subject): a for a in alerts(db, limit=10_000)}
        for f in findings:
            known = open_.pop((f.rule, f.subject), None)
            if known is not None:
                db.execute(
                    "UPDATE alerts SET severity = ?, message = ?, detail = ?, seen_at = ? "
                    "WHERE id = ?",
                    [f.severity, f.message, json.dumps(f.detail, default=str), stamp, known.id],
                )
                continue
            cursor = db.execute(
                "INSERT INTO alerts (rule, subject, severity, state, message, detail, "
                "raised_at, seen_at) VALUES (?, ?, ?, 'raised', ?, ?, ?, ?)",
                [
                    f.rule,
                    f.subject,
                    f.severity,
                    f.message,
                    json.dumps(f.detail, default=str),
                    stamp,
                    stamp,
                ],  # fmt: skip
            )
            raised.append(cursor.lastrowid)
        for alert in open_.values():
            if alert.rule in skip_rules:
                continue
            db.execute(
                "UPDATE alerts SET state = 'cleared', cleared_at = ? WHERE id = ?",
                [stamp, alert.id],
            )
            cleared.append(alert.id)
    return [Change("raised", get(db, i)) for i in raised] + [
        Change("cleared", get(db, i)) for i in cleared
    ]


# --- telling the operator -------------------------------------------------------------------


def announce(config: Config, changes: list[Change]) -> None:
    """Each change to the journal, and to the operator's hook when one is set."""
    for change in changes:
        a = change.alert
        line = "alert %d %s (%s %s%s): %s"
        level = logging.WARNING if change.event == "raised" else logging.INFO
        log.log(level, line, a.id, change.event, a.severity, a.rule,
                f" {a.subject}" if a.subject else "", a.message)  # fmt: skip
        if config.settings.alerts.command:
            hook(config, change)


def hook(config: Config, change: Change) -> bool:
    """Run alerts.command with the alert (and `event`: raised or cleared) as JSON on stdin;
    whether it exited 0. A hook that fails is logged, never retried."""
    settings = config.settings.alerts
    payload = {**change.alert.to_dict(), "event": change.event, "home": str(config.home)}
    try:
        result = run_command(shlex.split(settings.command), json.dumps(payload).encode(),
                             settings.command_timeout_s)  # fmt: skip
    except (ForgeError, ValueError) as exc:  # not startable, or quotes that do not close
        log.warning("alerts.command could not run for alert %d: %s", change.alert.id, exc)
        return False
    if not result.ok:
        why = (f"timed out after {settings.command_timeout_s:g} s" if result.timed_out
               else f"exit {result.returncode}")  # fmt: skip
        log.warning("alerts.command failed for alert %d (%s): %s", change.alert.id, why,
                    result.output.strip()[-500:])  # fmt: skip
    return result.ok


def evaluate(config: Config, db, now: datetime | None = None, rules=None) -> list[Change]:
    """One evaluation: find, store, announce. `rules` defaults to every rule, the doctor
    checks included."""
    now = now or datetime.now(UTC)
    findings, failed = find(config, db, now, rules or {**RULES, "doctor": DoctorRule()})
    changes = record(db, findings, now, failed)
    announce(config, changes)
    return changes


class Watch:
    """forged's alert thread: every alerts.every_s, one evaluation (model files hashed
    once, then again only when they change)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules: dict[str, Rule] = {**RULES, "doctor": DoctorRule()}

    def run(self, stopping: threading.Event) -> None:
        db = open_db(self.config, migrate=False)
        try:
            while not stopping.is_set():
                try:
                    evaluate(self.config, db, rules=self.rules)
                except Exception as exc:  # the next round tries again; the daemon goes on
                    log.warning("alerts could not be evaluated: %s", exc)
                stopping.wait(self.config.settings.alerts.every_s)
        finally:
            db.conn.close()
