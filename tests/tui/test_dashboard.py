"""The dashboard driven through Textual's Pilot on the seeded demo FORGE_HOME."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading

from textual.widgets import DataTable, Log
from tui_screenshots import settle

from appliance import registry
from appliance.ops import jobs
from appliance.store import open_db
from tui.screens.adapters import AdaptersScreen
from tui.screens.campaigns import CampaignsScreen
from tui.screens.commit import CommitScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.jobs import JobsScreen
from tui.screens.overview import OverviewScreen
from tui.screens.packages import PackagesScreen
from tui.widgets.banner import AlertBanner, DaemonBanner
from tui.widgets.tables import selected_key

SIZE = (140, 44)


def sync(test):
    """Run an async test on its own event loop (no pytest async plugin is installed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


async def go(pilot, *keys: str) -> None:
    await settle(pilot)
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def rows(screen, table_id: str) -> list[list[str]]:
    table = screen.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def screen_text(app) -> str:
    """What the terminal shows now, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def active_version(config, stage: str) -> int | None:
    db = open_db(config, migrate=False)
    try:
        found = registry.active(db, stage)
        return None if found is None else found.version
    finally:
        db.conn.close()


@sync
async def test_every_screen_is_reached_by_its_key(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot)
        assert isinstance(app.screen, OverviewScreen)

        await go(pilot, "2")
        assert isinstance(app.screen, PackagesScreen)
        assert [r[0] for r in rows(app.screen, "corpus-table")] == ["calc", "strutil", "textkit"]

        await go(pilot, "3")
        assert isinstance(app.screen, CampaignsScreen)
        assert rows(app.screen, "campaign-table")[0][:5] == ["calc-1.0", "train", "4", "12", "0.36"]
        # enter on the commit table drills into that commit's samples
        app.screen.query_one("#commit-table", DataTable).focus()
        await go(pilot, "enter")
        assert isinstance(app.screen, CommitScreen)
        assert [r[2] for r in rows(app.screen, "sample-table")] == [
            "resolved",
            "resolved",
            "failed",
        ]
        await go(pilot, "escape")
        assert isinstance(app.screen, CampaignsScreen)

        await go(pilot, "4")
        assert isinstance(app.screen, AdaptersScreen)
        assert app.screen.data.view.stage == "scope"  # the first stage with one in service

        await go(pilot, "5")
        assert isinstance(app.screen, JobsScreen)
        # the running job is picked, and its log shown
        assert selected_key(app.screen.query_one("#job-table", DataTable)) == "5"
        log = app.screen.query_one("#job-log", Log)
        assert "calc 2b3c4d5e sample 1: not_applied" in "\n".join(log.lines)

        await go(pilot, "1")
        assert isinstance(app.screen, OverviewScreen)
        await pilot.press("q")
    assert not app.is_running


@sync
async def test_footer_shows_the_screen_keys(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot, "4")
        shown = {b.key: b.description for _, b, enabled, _ in app.active_bindings.values()}
        for key, title in [("1", "Overview"), ("2", "Packages"), ("3", "Campaigns"),
                           ("4", "Adapters"), ("5", "Jobs"), ("q", "Quit"),
                           ("b", "Roll back stage")]:  # fmt: skip
            assert shown[key] == title


@sync
async def test_rollback_through_the_confirmation_changes_the_active_adapter(make_app, demo):
    assert active_version(demo, "scope") == 2
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot, "4", "b")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert "take scope-v2 out of service and put scope-v1 back" in dialog.question
        report = "\n".join(dialog.report)
        assert "scope-v2 vs scope-v1 on 30 examples" in report  # the gate report behind it
        assert "scope/accuracy (continuous, n=120 tasks)" in report

        await go(pilot, "y")
        assert isinstance(app.screen, AdaptersScreen)
        assert active_version(demo, "scope") == 1
        db = open_db(demo, migrate=False)
        try:
            last = registry.history(db, "scope")[-1]
        finally:
            db.conn.close()
        assert (last.action, last.from_name, last.to_name) == ("rollback", "scope-v2", "scope-v1")
        # the screen reads it back: v1 is the one marked in service now
        marked = [r[1] for r in rows(app.screen, "version-table") if r[0] == "●"]
        assert marked == ["v1"]


@sync
async def test_with_forged_running_the_rollback_is_done_by_the_daemon(make_app, demo):
    """The real forged on the seeded home: the dialog's rollback goes over its socket and
    the daemon's log says it did it."""
    from tests.daemon.test_forged import start, stop

    db = open_db(demo, migrate=False)
    try:  # the seeded live jobs would start real work in forged: not this test's business
        for job in jobs.jobs(db, jobs.LIVE):
            jobs.cancel(db, job.id)
    finally:
        db.conn.close()
    proc = start(demo)
    try:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await go(pilot, "4", "b")
            assert isinstance(app.screen, ConfirmScreen)
            await go(pilot, "y")
            assert active_version(demo, "scope") == 1
            assert not app.screen.query_one(DaemonBanner).display  # a daemon runs: no banner
    finally:
        stop(proc)
    assert "rollback scope: scope-v2 → scope-v1" in proc.stdout.read()


@sync
async def test_a_rollback_not_confirmed_changes_nothing(make_app, demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot, "4", "b")
        assert isinstance(app.screen, ConfirmScreen)
        await go(pilot, "n")
        assert isinstance(app.screen, AdaptersScreen)
    assert active_version(demo, "scope") == 2


@sync
async def test_a_refused_rollback_is_a_notification_not_a_traceback(make_app, demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot, "4")
        stages = app.screen.query_one("#stage-table", DataTable)
        stages.focus()
        stages.move_cursor(row=2)  # precision: nothing trained, it uses the base
        await go(pilot)
        assert app.screen.data.view.stage == "precision"
        await go(pilot, "b")
        assert isinstance(app.screen, AdaptersScreen)  # no dialog
        messages = [n.message for n in app._notifications]
        assert any("nothing is active for precision" in m for m in messages)
        assert app.is_running


@sync
async def test_banner_without_a_daemon(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot)
        assert app.daemon_running is False
        banner = app.screen.query_one(DaemonBanner)
        assert banner.display
        assert "forged is not running" in str(banner.render())
        await go(pilot, "4")
        assert app.screen.query_one(DaemonBanner).display  # on every screen
        # steering that needs the daemon says so
        await go(pilot, "1", "s")
        messages = [n.message for n in app._notifications]
        assert any("forged is not running" in m for m in messages)


@sync
async def test_a_raised_alert_shows_a_banner_until_acknowledged(make_app, demo):
    from appliance.ops import alerts

    db = open_db(demo)  # the demo's training job failed its last attempt
    [change] = alerts.evaluate(demo, db, rules={"job_failed": alerts.RULES["job_failed"]})
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot)
        banner = app.screen.query_one(AlertBanner)
        assert banner.display and "failed its gates" in str(banner.render())
        alerts.acknowledge(db, change.alert.id)
        app.probe_daemon()
        await go(pilot, "2")
        assert not app.screen.query_one(AlertBanner).display
    db.close()


@sync
async def test_live_refresh_shows_a_new_job(make_app, demo):
    app = make_app(refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot, "5")
        assert len(rows(app.screen, "job-table")) == 7
        db = open_db(demo, migrate=False)
        try:
            job, _ = jobs.enqueue(db, "cycle", key="cycle-now")
        finally:
            db.conn.close()
        for _ in range(150):  # up to 15 s on a slow, busy box; 0.2 s is the refresh
            await asyncio.sleep(0.1)
            await settle(pilot)
            if len(rows(app.screen, "job-table")) == 8:
                break
        assert rows(app.screen, "job-table")[0][:3] == [f"#{job.id}", "cycle", "queued"]


class StandInDaemon:
    """Answers forged's control socket protocol (one JSON line each way) for the dashboard's
    daemon path; it records what it was asked."""

    def __init__(self, home) -> None:
        self.asked: list[dict] = []
        self.state = "paused"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(home / "forged.sock"))
        self.server.listen()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def daemon(self) -> dict:
        return {"state": self.state, "pid": 4242, "since": "2025-06-02T06:00:00+00:00",
                "gpus": 4, "heavy_slots": 4, "job_gpus": {"5": ["0", "1", "2"]},
                "campaign_window": "22:00-06:00",
                "next_runs": {"ingest": "2025-06-02T08:30:00+00:00", "cycle": None}}  # fmt: skip

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                request = json.loads(conn.makefile().readline())
                self.asked.append(request)
                command = request["command"]
                if command in ("pause", "resume"):
                    self.state = "paused" if command == "pause" else "running"
                answer = {"ok": True, "daemon": self.daemon(), "running": [], "queue": []}
                conn.sendall((json.dumps(answer) + "\n").encode())

    def close(self) -> None:
        self.server.close()


@sync
async def test_with_a_daemon_no_banner_and_pause_goes_through_its_socket(make_app, demo):
    daemon = StandInDaemon(demo.home)
    try:
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await go(pilot)
            assert app.daemon_running is True
            assert not app.screen.query_one(DaemonBanner).display
            shown = screen_text(app)
            assert "forged paused" in shown and "22:00-06:00" in shown
            assert "next ingest      2025-06-02 08:30" in shown
            assert "job #5           GPU 0, 1, 2" in shown  # the GPUs the job holds
            await go(pilot, "s")  # paused: s resumes
            assert {"command": "resume"} in daemon.asked
            messages = [n.message for n in app._notifications]
            assert "forged is running" in messages
    finally:
        daemon.close()


@sync
async def test_command_palette_reaches_screens_and_actions(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await go(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"Go to Jobs")
        await pilot.pause(0.5)
        await go(pilot, "enter")
        assert isinstance(app.screen, JobsScreen)
        await go(pilot, "4")
        await pilot.press("ctrl+p")
        await pilot.press(*"Roll back stage")
        await pilot.pause(0.5)
        await go(pilot, "enter")
        assert isinstance(app.screen, ConfirmScreen)  # the same dialog as the key b
