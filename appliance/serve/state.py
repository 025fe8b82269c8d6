"""What `forge serve` is doing, for `forge status` and the dashboard; and whether it must
pause for forged.

The running server keeps FORGE_HOME/serve.json current (its pid, where it listens, paused
or not, requests served and refused, the queue) and removes it when it stops; a file left
by a server that died is read as not running (its pid is gone). With
`serve.yield_to_jobs` (for a CPU box, whose cores a heavy job needs) the server answers
503 while forged runs a heavy job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from appliance.config import Config
from appliance.ops import jobs
from appliance.records import as_json
from appliance.store.backup import daemon_pid

STATE_FILE = "serve.json"


@dataclass(frozen=True)
class ServeState:
    pid: int
    url: str  # the OpenAI base URL, http://HOST:PORT/v1
    started: str
    paused: str | None  # why requests get 503 now ("job 7 (train) running"); None: serving
    served: int  # requests answered with a completion
    refused: int  # requests answered with an error (4xx, 5xx)
    waiting: int  # requests queued behind a running one
    in_flight: int
    keys_required: bool
    updated: str


def write_state(home: Path, state: ServeState) -> None:
    """Replace serve.json in one rename (a reader never sees half of it)."""
    path = home / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(as_json(state)) + "\n")
    os.replace(tmp, path)


def clear_state(home: Path, pid: int) -> None:
    """Remove serve.json if it is this server's."""
    path = home / STATE_FILE
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass  # none, or another server's being replaced: nothing of ours to remove


def read_state(config: Config) -> dict:
    """serve's state as plain data: `running` false when no server writes it."""
    try:
        data = json.loads((config.home / STATE_FILE).read_text())
    except FileNotFoundError:
        return {"running": False}
    except (OSError, ValueError) as exc:
        return {"running": False, "error": f"{STATE_FILE} is unreadable: {exc}"}
    pid = data.get("pid") if isinstance(data, dict) else None
    if not isinstance(pid, int) or pid <= 0 or not psutil.pid_exists(pid):
        return {"running": False}
    return {"running": True, **data}


def heavy_job(config: Config, db) -> jobs.Job | None:
    """The heavy job forged is running now, if any (a job row left 'running' by a forged
    that is gone does not count: nothing runs it)."""
    if daemon_pid(config) is None:
        return None
    running = [j for j in jobs.jobs(db, ("running",)) if j.heavy]
    return running[0] if running else None
