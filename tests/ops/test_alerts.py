"""The alert rules raise and clear on a real database; the hook gets each change as JSON on
stdin; an acknowledged alert stays quiet until it clears and is raised anew."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from appliance.cli import cli
from appliance.ops import alerts, jobs
from appliance.ops.alerts import RULES, DoctorRule, evaluate
from appliance.store.backup import make_backup

NOW = datetime.now(UTC)
HOOK = """
import json, sys
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(json.load(sys.stdin)) + "\\n")
"""


def _with(config, **sections):
    """`config` with some keys of some sections changed."""
    settings = config.settings
    for name, values in sections.items():
        section = getattr(settings, name).model_copy(update=values)
        settings = settings.model_copy(update={name: section})
    return dataclasses.replace(config, settings=settings)


def _finish(db, kind, status, *, at=NOW, result=None):
    job, _ = jobs.enqueue(db, kind, max_attempts=1, now=at)
    jobs.claim(db, now=at)
    if status == "done":
        return jobs.done(db, job.id, result, now=at)
    return jobs.failed(db, job.id, "it broke", now=at)


def _only(rule):
    return {rule: RULES[rule]}


def _hooked(config, tmp_path):
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    out = tmp_path / "hook.jsonl"
    command = f"{sys.executable} {script} {out}"
    return _with(config, alerts={"command": command}), out


def _received(out) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_a_failed_job_raises_and_a_later_success_clears(forge_home, db, tmp_path):
    config, out = _hooked(forge_home, tmp_path)
    _finish(db, "train", "failed")
    [change] = evaluate(config, db, rules=_only("job_failed"))
    assert (change.event, change.alert.rule, change.alert.subject) == ("raised", "job_failed",
                                                                        "train")  # fmt: skip
    assert change.alert.severity == "critical" and "it broke" in change.alert.message
    [sent] = _received(out)
    assert sent["event"] == "raised" and sent["state"] == "raised" and sent["id"] == change.alert.id
    assert sent["rule"] == "job_failed" and sent["home"] == str(config.home)
    assert evaluate(config, db, rules=_only("job_failed")) == []  # still failing: no news
    _finish(db, "train", "done")
    [cleared] = evaluate(config, db, rules=_only("job_failed"))
    assert cleared.event == "cleared" and cleared.alert.cleared_at
    assert [s["event"] for s in _received(out)] == ["raised", "cleared"]
    assert alerts.alerts(db) == []


def test_an_acknowledged_alert_stays_quiet_until_it_is_raised_anew(forge_home, db, tmp_path):
    config, out = _hooked(forge_home, tmp_path)
    _finish(db, "cycle", "failed")
    [first] = evaluate(config, db, rules=_only("job_failed"))
    runner = CliRunner(env={"FORGE_HOME": str(config.home)})
    listed = runner.invoke(cli, ["alerts", "--json"])
    assert listed.exit_code == 1 and json.loads(listed.output)[0]["id"] == first.alert.id
    acked = runner.invoke(cli, ["alerts", "ack", str(first.alert.id), "--json"])
    assert acked.exit_code == 0 and json.loads(acked.output)["state"] == "acknowledged"
    _finish(db, "cycle", "failed")  # a new failure while acknowledged: still the same alert
    assert evaluate(config, db, rules=_only("job_failed")) == []
    assert [a.state for a in alerts.alerts(db)] == ["acknowledged"]
    assert runner.invoke(cli, ["alerts"]).exit_code == 0  # nothing raised and unseen
    assert len(_received(out)) == 1
    _finish(db, "cycle", "done")
    assert [c.event for c in evaluate(config, db, rules=_only("job_failed"))] == ["cleared"]
    _finish(db, "cycle", "failed")
    [again] = evaluate(config, db, rules=_only("job_failed"))
    assert again.event == "raised" and again.alert.id != first.alert.id
    assert again.alert.state == "raised"
    assert [s["event"] for s in _received(out)] == ["raised", "cleared", "raised"]
    refused = runner.invoke(cli, ["alerts", "ack", str(first.alert.id)])
    assert refused.exit_code == 2 and "cleared" in refused.output
    assert runner.invoke(cli, ["alerts", "ack", "999"]).exit_code == 2


def test_no_cycle_finished_for_too_long(forge_home, db):
    old = NOW - timedelta(hours=60)
    _finish(db, "cycle", "done", at=old)
    assert evaluate(forge_home, db, NOW - timedelta(hours=20), _only("cycle_stale")) == []
    [raised] = evaluate(forge_home, db, NOW, _only("cycle_stale"))
    assert raised.alert.rule == "cycle_stale" and "60 hours" in raised.alert.message
    _finish(db, "cycle", "done")
    assert [c.event for c in evaluate(forge_home, db, NOW, _only("cycle_stale"))] == ["cleared"]
    off = _with(forge_home, alerts={"cycle_stale_hours": 0})
    assert evaluate(off, db, NOW + timedelta(days=30), _only("cycle_stale")) == []


def test_the_gate_promoting_nothing_for_n_cycles(forge_home, db):
    config = _with(forge_home, alerts={"gate_cycles": 2})
    rejected = {"decisions": [{"stage": "scope", "action": "rejected"}]}
    insufficient = {"decisions": [{"stage": "plan", "action": "kept as a candidate"}]}
    _finish(db, "cycle", "done", result=rejected)
    _finish(db, "cycle", "done", result={"decisions": []})  # decided nothing: not counted
    assert evaluate(config, db, rules=_only("gate_stuck")) == []
    _finish(db, "evaluate", "done", result=insufficient)
    [raised] = evaluate(config, db, rules=_only("gate_stuck"))
    assert raised.alert.rule == "gate_stuck" and raised.alert.detail["actions"] == {
        "rejected": 1,
        "kept as a candidate": 1,
    }
    _finish(db, "cycle", "done", result={"decisions": [{"stage": "scope", "action": "promoted"}]})
    assert [c.event for c in evaluate(config, db, rules=_only("gate_stuck"))] == ["cleared"]


def test_free_disk_under_the_threshold(forge_home, db):
    config = _with(forge_home, alerts={"min_free_gb": 1e9})
    [raised] = evaluate(config, db, rules=_only("disk_low"))
    assert raised.alert.severity == "warning" and "alerts.min_free_gb" in raised.alert.message
    # Below the guard's floor too: critical, and it says work waits.
    worse = _with(config, doctor={"min_free_gb": 1e9})
    assert evaluate(worse, db, rules=_only("disk_low")) == []  # the same alert, refreshed
    [alert] = alerts.alerts(db)
    assert alert.severity == "critical" and "wait" in alert.message
    ok = _with(forge_home, alerts={"min_free_gb": 0})
    assert [c.event for c in evaluate(ok, db, rules=_only("disk_low"))] == ["cleared"]


def test_a_backup_older_than_a_day(forge_home, db):
    later = NOW + timedelta(hours=30)
    [raised] = evaluate(forge_home, db, later, _only("backup_stale"))
    assert "no backup" in raised.alert.message
    make_backup(forge_home, now=NOW)  # made at NOW, however late this test runs
    assert [c.event for c in evaluate(forge_home, db, NOW, _only("backup_stale"))] == ["cleared"]
    [again] = evaluate(forge_home, db, later, _only("backup_stale"))
    assert "newest backup is 30 hours old" in again.alert.message


def test_a_model_file_failing_doctor(tmp_path, monkeypatch, forge_home, db):
    from appliance.digest import sha256_file

    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    manifest = tmp_path / "models.toml"
    manifest.write_text(f'[bases.tiny]\npath = "{model}"\nsha256 = "{"0" * 64}"\n')
    config = _with(forge_home, models={"manifest": str(manifest)})
    rule = {"doctor": DoctorRule()}
    changes = evaluate(config, db, rules=rule)
    raised = [c.alert for c in changes if c.alert.subject == "model tiny"]
    assert raised and raised[0].rule == "doctor" and "sha256" in raised[0].message
    # The right sha256 (the file is still no real model: architecture is checked too).
    manifest.write_text(f'[bases.tiny]\npath = "{model}"\nsha256 = "{sha256_file(model)}"\n')
    evaluate(config, db, rules=rule)
    [still] = [a for a in alerts.alerts(db) if a.subject == "model tiny"]
    assert "sha256" not in still.message
    model.unlink()
    manifest.unlink()
    changes = evaluate(config, db, rules=rule)
    assert "model tiny" not in [c.alert.subject for c in changes if c.event == "raised"]
    assert [a for a in alerts.alerts(db) if a.subject == "model tiny"] == []


def test_a_rule_that_cannot_look_keeps_its_alerts(forge_home, db):
    _finish(db, "train", "failed")
    evaluate(forge_home, db, rules=_only("job_failed"))

    def broken(config, db, now):
        raise OSError("disk unreadable")

    assert evaluate(forge_home, db, rules={"job_failed": broken}) == []
    assert [a.rule for a in alerts.alerts(db)] == ["job_failed"]


def test_a_hook_that_hangs_is_killed_at_its_timeout(forge_home, db, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(60)\n")
    config = _with(forge_home, alerts={"command": f"{sys.executable} {script}",
                                       "command_timeout_s": 1})  # fmt: skip
    _finish(db, "train", "failed")
    started = datetime.now(UTC)
    [change] = evaluate(config, db, rules=_only("job_failed"))
    assert (datetime.now(UTC) - started).total_seconds() < 10
    assert not alerts.hook(config, change)


def test_status_shows_the_open_alerts(forge_home, db):
    _finish(db, "train", "failed")
    evaluate(forge_home, db, rules=_only("job_failed"))
    runner = CliRunner(env={"FORGE_HOME": str(forge_home.home)})
    out = runner.invoke(cli, ["status", "--json"])
    assert [a["rule"] for a in json.loads(out.output)["alerts"]] == ["job_failed"]
    text = runner.invoke(cli, ["status"]).output
    assert "1 raised" in text and "job_failed" in text
