"""Jobs and logs: the job history, and the log of the job picked, followed while it runs."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Log

from appliance.ops.jobs import Job
from tui import steering
from tui.data import LogTail
from tui.render import DASH, progress, status, when
from tui.screens.base import ForgeScreen
from tui.widgets.tables import fill, selected_key


@dataclass(frozen=True)
class JobsData:
    jobs: tuple[Job, ...]
    job_id: int | None
    log: LogTail | None


class JobsScreen(ForgeScreen):
    TITLE = "Jobs"
    BINDINGS = [
        Binding("x", "cancel", "Cancel job"),
        Binding("n", "run('cycle')", "Run cycle now"),
        Binding("i", "run('ingest')", "Ingest now"),
    ]

    def body(self) -> ComposeResult:
        table = DataTable(id="job-table", cursor_type="row", zebra_stripes=True)
        table.border_title = "Job history"
        table.add_columns(
            "job", "kind", "status", "attempt", "queued", "started", "finished", "progress / error"
        )
        yield table
        log = Log(id="job-log", highlight=False, auto_scroll=True)
        log.border_title = "Log"
        yield log

    def selection(self) -> int | None:
        key = selected_key(self.query_one("#job-table", DataTable))
        return None if key is None else int(key)

    def fetch(self, job_id: int | None) -> JobsData:
        reader = self.app.reader
        found = reader.jobs()
        if job_id not in {j.id for j in found}:
            # the running job first, else the newest
            running = [j for j in found if j.status == "running"]
            job_id = (running or found)[0].id if found else None
        job = next((j for j in found if j.id == job_id), None)
        log = reader.log_tail(job.log) if job is not None and job.log else None
        return JobsData(found, job_id, log)

    def show(self, data: JobsData) -> None:
        self.data = data
        fill(
            self.query_one("#job-table", DataTable),
            [
                (
                    str(j.id),
                    (
                        f"#{j.id}",
                        j.kind,
                        status(j.status),
                        f"{j.attempts}/{j.max_attempts}",
                        when(j.queued_at),
                        when(j.started_at),
                        when(j.finished_at),
                        _detail(j),
                    ),
                )
                for j in data.jobs
            ],
            select=None if data.job_id is None else str(data.job_id),
        )
        self._show_log(data)

    def _show_log(self, data: JobsData) -> None:
        log = self.query_one("#job-log", Log)
        job = next((j for j in data.jobs if j.id == data.job_id), None)
        shown = getattr(self, "_log_shown", None)  # (job id, size) on screen now
        if job is None:
            log.border_title = "Log"
            log.clear()
            self._log_shown = None
            return
        following = " (following)" if job.status == "running" else ""
        tail = data.log
        if tail is None or tail.missing:
            log.border_title = f"Log of job #{job.id}"
            log.clear()
            log.write_line("no log" if tail is None else f"{tail.path} is not there (yet)")
            self._log_shown = (job.id, -1)
            return
        log.border_title = f"Log of job #{job.id}: {tail.path}{following}"
        if shown == (job.id, tail.size):
            return  # nothing new
        log.clear()
        log.write(tail.text)
        self._log_shown = (job.id, tail.size)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        shown = getattr(self, "data", None)
        if event.row_key is not None and (
            shown is None or str(shown.job_id) != event.row_key.value
        ):
            self.reload()

    def action_cancel(self) -> None:
        job_id = self.selection()
        if job_id is None:
            self.app.notify("pick a job first", severity="warning")
            return
        self.app.steer(
            lambda config: steering.cancel(config, job_id),
            done=lambda job: f"job #{job['id']} {job['status']}",
        )

    def action_run(self, kind: str) -> None:
        self.app.steer(
            lambda config: steering.run_job(config, kind),
            done=lambda r: (
                f"{kind} job #{r['job']['id']} "
                f"{'queued' if r['queued'] else 'is already queued or running'}"
            ),
        )


def _detail(job: Job) -> Text:
    if job.status == "running":
        return progress(job.progress or {})
    if job.error:
        return Text(job.error.splitlines()[0], style="red")
    if job.status == "queued" and job.not_before:
        return Text(f"not before {when(job.not_before)}", style="dim")
    return Text(DASH, style="dim")
