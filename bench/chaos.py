"""Kill forged with SIGKILL at chosen and random moments of real work, restart it each
time, and check afterwards that nothing was lost, nothing doubled, the database is sound
and the registry consistent.

The daemon runs on a temporary FORGE_HOME with the demo package dropped into ingest/
and one cycle (ingest → campaign → datasets → train → evaluate → decide) queued. Each
kill is aimed at a phase. Ingest, campaign, train and evaluate: the driver waits until
the daemon's job says it is in that step, waits a random moment more, and kills.
Datasets, decide and promote: the driver arms a fault point (bench/faults, test-only,
switched on for the daemon through its environment) and kills once a process stands in
it: inside datasets.build's transaction, inside the registry transaction of the cycle's
decision (promote or reject, as the gate said), and, once the cycle is over, inside the
transaction of an operator's `forge promote --force` sent to the daemon (sent again after
the restart). Each kill's record says where it landed. Then come `--random` kills at
random moments during one more cycle; each cycle is left to finish before the next is
queued, and the checks run at the end.

    .venv/bin/python bench/chaos.py                 # the longer run: 2 cycles + 4 random
    .venv/bin/python bench/chaos.py --rounds 1 --random 0 --seed 7

tests/daemon/test_chaos.py runs a bounded version (every phase once).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "repo_packages" / "demo"
PHASES = ("ingest", "campaign", "datasets", "train", "evaluate", "decide", "promote")
# The phases a kill is aimed at through a fault point, and the point.
FAULT_POINTS = {"datasets": "dataset-build", "decide": "registry-change",
                "promote": "registry-change"}  # fmt: skip
STAGE = "scope"
# Small work, so a whole cycle takes minutes on a CPU box; checkpoints every step.
SETTINGS = """
[ingest]
quiet_seconds = 0
[harness]
gold_runs = 1
[campaign]
samples = 1
max_tokens = 64
context_tokens = 384
[training]
max_steps = 4
checkpoint_every = 1
max_seq_len = 512
threads = 1
[evaluation]
max_examples = 2
max_tokens = 64
min_tasks = 1  # two examples: the kills are under test here, not the evidence
[cycle]
stages = ["scope"]
min_new_rows = 1
commits = 1
[daemon]
ingest_every_s = 1
cycle_every_minutes = 0
"""


@dataclass
class Report:
    kills: list[dict] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # name → "ok" or what was wrong
    seconds: float = 0.0
    cycle: dict | None = None

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    def to_dict(self) -> dict:
        return {"ok": self.ok, "kills_survived": len(self.kills), "kills": self.kills,
                "checks": self.checks, "seconds": round(self.seconds, 1)}  # fmt: skip


class Chaos:
    def __init__(self, home: Path, seed: int, log=print, settings: str = SETTINGS) -> None:
        # Here, not at the top: run as a script, the repository joins sys.path in main.
        from bench.faults import FaultPoints

        self.home, self.rng, self.log, self.settings = home, random.Random(seed), log, settings
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.cycle_queued = False
        self.faults = FaultPoints(home.with_name(home.name + "-faults"))
        self.promotions: list[int] = []  # versions the operator promoted (forced)
        self.env = os.environ | {"FORGE_HOME": str(home)}
        self.env.pop("FORGE_CONFIG", None)
        self.env.pop("NOTIFY_SOCKET", None)
        self.env = self.faults.env(self.env)

    # --- the daemon ----------------------------------------------------------------------

    def start(self) -> None:
        from appliance.config import load_config
        from appliance.ops.control import request

        self.starts += 1
        out = (self.home / f"forged-{self.starts}.log").open("w")
        command = [sys.executable, "-m", "daemon.forged"]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        os.environ["FORGE_HOME"] = str(self.home)
        config = load_config()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"forged exited {self.proc.returncode}; see {out.name}")
            answer = request(config, "ping", timeout=2)
            if answer and answer.get("ok"):
                return
            time.sleep(0.1)
        raise RuntimeError("forged did not answer within 60 s")

    def kill(self) -> list[int]:
        """SIGKILL the daemon; the pids of children that outlived it (there must be none)."""
        family = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        _, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:  # leave nothing behind for the next round, but report it
            p.kill()
        return [p.pid for p in alive]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    # --- what the daemon is doing --------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.home / 'forge.db'}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def phase(self) -> tuple[str | None, dict]:
        with self.db() as conn:
            rows = conn.execute(
                "SELECT id, kind, progress FROM jobs WHERE status = 'running'"
            ).fetchall()
        for row in rows:
            progress = json.loads(row["progress"])
            if row["kind"] == "ingest":
                return "ingest", {"job": row["id"]}
            step = progress.get("step")
            shown = {"job": row["id"], "step": step, "done": progress.get("done"),
                     "total": progress.get("total"), "text": progress.get("text")}  # fmt: skip
            if step in ("campaign", "datasets", "train", "evaluate"):
                return step, shown
        return None, {}

    def cycle_job(self) -> dict | None:
        with self.db() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE kind = 'cycle' ORDER BY id DESC"
            ).fetchone()
        return dict(row) if row else None

    def finished(self) -> dict:
        """What is finished now, each a set of keys that must survive every later kill."""
        with self.db() as conn:
            q = lambda sql: {tuple(r) for r in conn.execute(sql)}  # noqa: E731
            return {
                "packages": q("SELECT name, version FROM packages"),
                "triples": q("SELECT p.name, t.sha, t.sample FROM triples t "
                             "JOIN packages p ON p.id = t.package_id"),
                "dataset_versions": q("SELECT stage, kind, version FROM dataset_versions"),
                "adapters": q("SELECT stage, version FROM adapters"),
                "decisions": q("SELECT id FROM gate_decisions"),
                "events": q("SELECT id FROM adapter_events"),
                "jobs_done": q("SELECT id FROM jobs WHERE status = 'done'"),
            }  # fmt: skip

    # --- the run -------------------------------------------------------------------------

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "forge.toml").write_text(self.settings)
        incoming = self.home / "ingest" / ".copying-demo"
        shutil.copytree(DEMO, incoming, symlinks=True)
        (incoming / "READY").write_text("")
        incoming.rename(self.home / "ingest" / "demo")

    def wait_for(self, phase: str, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.queue_cycle_once()
            now, detail = self.phase()
            if now == phase:
                return detail
            if self._past(phase):
                return None
            time.sleep(0.05)
        return None

    def _past(self, phase: str) -> bool:
        job = self.cycle_job()
        if phase == "ingest":
            with self.db() as conn:
                return conn.execute("SELECT COUNT(*) FROM packages").fetchone()[0] > 0
        if job is None:
            return False
        if job["status"] == "done":
            return True
        step = json.loads(job["progress"]).get("step")
        order = ("campaign", "datasets", "train", "evaluate")
        if phase == "decide":  # the last thing a cycle does: past once the job is done
            return False
        return phase in order and step in order and order.index(step) > order.index(phase)

    def queue_cycle_once(self) -> None:
        """Queue the cycle once the package is in (the daemon keeps it across kills)."""
        from appliance.config import load_config
        from appliance.ops.control import request

        if self.cycle_queued or not self._past("ingest"):
            return
        os.environ["FORGE_HOME"] = str(self.home)
        answer = request(load_config(), "run", kind="cycle")
        assert answer and answer["ok"], answer
        self.cycle_queued = True

    def busy(self) -> bool:
        """Whether work remains: the package not in yet, or the cycle not finished."""
        job = self.cycle_job()
        return job is None or job["status"] in ("queued", "running")

    def run(self, rounds: int, random_kills: int, timeout_s: float) -> Report:
        """`rounds` cycles, each killed once in each of its phases (ingest only in the
        first: the package comes once), then, with `random_kills`, one more cycle killed
        at random moments; each cycle runs to its end before the next is queued."""
        report, clock = Report(), time.monotonic()
        deadline = clock + timeout_s
        kept: list[dict] = []
        self.prepare()
        self.start()
        plans = [list(PHASES)] + [[p for p in PHASES if p != "ingest"]] * (rounds - 1)
        if random_kills:
            plans.append(["random"] * random_kills)
        for n, plan in enumerate(plans):
            if n:  # the next cycle, once this one is over
                self.finish(deadline)
                self.cycle_queued = False
            for target in plan:
                hit = self.aim(target, deadline)
                if hit is None:
                    continue
                kept.append(self.finished())
                orphans = self.kill()
                self.faults.clear()
                phase, detail = hit
                kill = {"aimed_at": target, "phase": phase, **detail, "orphans": orphans,
                        "at_s": round(time.monotonic() - clock, 1)}  # fmt: skip
                report.kills.append(kill)
                self.log(f"  kill {len(report.kills)}: aimed at {target}, hit "
                         f"{phase or 'idle'} {json.dumps(detail)}")  # fmt: skip
                self.start()
                if target == "promote":  # the operator, told nothing, tries again
                    answer = self.promote(self.promotions[-1])
                    self.log(f"  promote sent again: {json.dumps(answer)}")
        self.finish(deadline)
        self.stop()
        report.seconds = time.monotonic() - clock
        job = self.cycle_job()
        report.cycle = job
        report.checks = self.check(kept, job, report.kills)
        return report

    def aim(self, target: str, deadline: float) -> tuple[str | None, dict] | None:
        """Wait for the moment to kill at: in `target`'s phase, or a random one; None when
        there is none (the phase went by too quickly, the work is done, or time is up)."""
        if target in FAULT_POINTS:
            return self.aim_at_point(target, deadline)
        if target == "random":
            until = time.monotonic() + self.rng.uniform(2.0, 20.0)
            while time.monotonic() < until:
                self.queue_cycle_once()
                time.sleep(0.1)
            if not self.busy():
                self.log("  random kill: the work is done, no kill")
                return None
            return self.phase()
        if self.wait_for(target, deadline - time.monotonic()) is None:
            self.log(f"  phase {target}: not reached (passed or too quick), no kill")
            return None
        quick = {"ingest": 0.2, "promote": 1.5}.get(target, 3.0)  # a moment only
        time.sleep(self.rng.uniform(0.0, quick))
        return self.phase()

    def aim_at_point(self, target: str, deadline: float) -> tuple[str, dict] | None:
        """Arm `target`'s fault point and wait until a process stands in it: (the phase the
        point names, what the job shows and where the process stands); None when the
        moment passed without one. For "promote", the operator's promotion is sent first."""
        point = FAULT_POINTS[target]
        sender = None
        if target == "promote":
            self.finish(deadline)  # the operator promotes once the cycle is over
            if self.busy():
                self.log("  promote: the cycle did not finish in time, no kill")
                return None
            version = self.promotable()
            if version is None:
                self.log("  promote: the stage has no version, no kill")
                return None
            self.promotions.append(version)
        self.faults.arm(point)
        if target == "promote":  # its answer never comes: the kill cuts it off
            sender = threading.Thread(target=self.promote, args=(version,), daemon=True)
            sender.start()

        def gone_by() -> bool:
            self.queue_cycle_once()
            return not sender.is_alive() if sender else self._past(target)

        inside = self.faults.wait_inside(deadline - time.monotonic(), gone_by)
        self.faults.disarm(point)
        if inside is None:
            self.log(f"  phase {target}: its fault point was not reached, no kill")
            return None
        _, shown = self.phase()
        where = {"landed": inside.where, "transaction_open": inside.transaction_open}
        return inside.phase, {**shown, **where}

    def promotable(self) -> int | None:
        """The newest version of the stage; if the gate put it in service, the operator
        rolls back to the base first, so that promoting it changes the registry."""
        with self.db() as conn:
            row = conn.execute(
                "SELECT version, status FROM adapters WHERE stage = ? ORDER BY version DESC",
                [STAGE],
            ).fetchone()
        if row is None:
            return None
        if row["status"] == "active":
            answer = self.ask("rollback", stage=STAGE, to_base=True)
            self.log(f"  rollback to the base first: {json.dumps(answer)}")
        return row["version"]

    def promote(self, version: int) -> dict | None:
        """`forge promote STAGE VERSION --force`, as the operator's CLI sends it."""
        return self.ask("promote", stage=STAGE, version=version, force=True)

    def ask(self, command: str, **args) -> dict | None:
        """The daemon's answer to a control request; None when none came (it was killed)."""
        from appliance.config import load_config
        from appliance.errors import ForgeError
        from appliance.ops.control import request

        os.environ["FORGE_HOME"] = str(self.home)
        try:
            return request(load_config(), command, timeout=60, **args)
        except ForgeError:
            return None

    def finish(self, deadline: float) -> None:
        """Let the cycle run to its end (or the deadline)."""
        while time.monotonic() < deadline:
            self.queue_cycle_once()
            job = self.cycle_job()
            if self.cycle_queued and job and job["status"] in ("done", "failed", "cancelled"):
                return
            time.sleep(1)

    # --- the checks ----------------------------------------------------------------------

    def check(self, kept: list[dict], job: dict | None, kills: list[dict]) -> dict[str, str]:
        checks: dict[str, str] = {}

        def expect(name: str, bad) -> None:
            checks[name] = "ok" if not bad else str(bad)[:500]

        self.check_database(expect)

        final = self.finished()
        lost = [
            f"{name}: {sorted(before[name] - final[name])[:5]}"
            for before in kept
            for name in before
            if before[name] - final[name]
        ]
        expect("nothing finished lost", lost)
        expect("the cycle job finished", None if job and job["status"] == "done" else job)
        report = json.loads(job["result"]) if job and job.get("result") else {}
        expect("the cycle ran every step", None if report.get("ok") else report.get("steps"))
        expect("no child outlived a kill", [k["orphans"] for k in kills if k["orphans"]])
        corpus = [p.name for p in (self.home / "corpus").iterdir()] if (
            self.home / "corpus").is_dir() else []  # fmt: skip
        expect("one copy of the package in the corpus", None if len(corpus) == 1 else corpus)
        leftovers = [p.name for p in (self.home / "ingest").iterdir()]
        expect("ingest/ emptied", leftovers)
        with sqlite3.connect(self.home / "scheduler.db") as conn:
            expect("scheduler store sound", [r[0] for r in conn.execute("PRAGMA integrity_check")
                                             if r[0] != "ok"])  # fmt: skip
        return checks

    def check_database(self, expect: Callable[[str, object], None]) -> None:
        """The database's own checks: sound, nothing doubled, the registry consistent."""
        with self.db() as conn:
            expect("integrity_check", [r[0] for r in conn.execute("PRAGMA integrity_check")
                                       if r[0] != "ok"])  # fmt: skip
            expect("foreign_key_check", conn.execute("PRAGMA foreign_key_check").fetchall())
            dup = lambda sql: [tuple(r) for r in conn.execute(sql)]  # noqa: E731
            expect(
                "no duplicated triples",
                dup(
                    "SELECT p.name, t.sha, t.sample, COUNT(*) FROM triples t JOIN packages p "
                    "ON p.id = t.package_id GROUP BY p.name, t.sha, t.sample HAVING COUNT(*) > 1"
                ),
            )
            expect(
                "no duplicated packages",
                dup(
                    "SELECT name, version FROM packages GROUP BY name, version HAVING COUNT(*) > 1"
                ),
            )
            expect(
                "no duplicated dataset rows",
                dup(
                    "SELECT stage, kind, key FROM dataset_rows GROUP BY stage, kind, key "
                    "HAVING COUNT(*) > 1"
                ),
            )
            expect(
                "one adapter per dataset",
                dup(
                    "SELECT stage, dataset FROM adapters GROUP BY stage, dataset "
                    "HAVING COUNT(*) > 1"
                ),
            )
            expect(
                "one decision per candidate's evidence",
                dup(
                    "SELECT stage, candidate, candidate_run, baseline_run FROM gate_decisions "
                    "GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1"
                ),
            )
            expect(
                "at most one active version per stage",
                dup(
                    "SELECT stage FROM adapters WHERE status = 'active' GROUP BY stage "
                    "HAVING COUNT(*) > 1"
                ),
            )
            missing = [r["path"] for r in conn.execute("SELECT path FROM adapters")
                       if not (self.home / r["path"]).is_file()]  # fmt: skip
            expect("every registered adapter's file is there", missing)
            undecided = conn.execute(  # older candidates may stay: the newest is decided
                "SELECT stage || '-v' || version FROM adapters a WHERE status = 'candidate' "
                "AND version = (SELECT MAX(version) FROM adapters b WHERE b.stage = a.stage)"
            ).fetchall()
            expect("the newest candidate of each stage decided", [r[0] for r in undecided])
            trained = conn.execute("SELECT COUNT(*) FROM adapters").fetchone()[0]
            expect("an adapter was trained", None if trained else "none")
            forced = dict(conn.execute(
                "SELECT to_version, COUNT(*) FROM adapter_events WHERE stage = ? AND "
                "action = 'promote' AND forced = 1 GROUP BY to_version", [STAGE]
            ).fetchall())  # fmt: skip
            expect("each operator promotion done once",
                   [f"v{v}: {forced.get(v, 0)}" for v in self.promotions
                    if forced.get(v, 0) != 1])  # fmt: skip
            running = conn.execute("SELECT id FROM jobs WHERE status IN ('running', 'queued') "
                                   "AND kind != 'ingest'").fetchall()  # fmt: skip
            expect("no job left running or queued", [r[0] for r in running])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2,
                        help="cycles, each killed once in each phase")  # fmt: skip
    parser.add_argument("--random", type=int, default=4, help="kills at random moments")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--home", type=Path, help="FORGE_HOME to use (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    import tempfile

    home = options.home or Path(tempfile.mkdtemp(prefix="forge-chaos-")) / "home"
    chaos = Chaos(home, options.seed, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"chaos on {home}: {options.rounds} cycle(s) killed in each phase, then "
          f"{options.random} random kills", file=sys.stderr)  # fmt: skip
    report = chaos.run(options.rounds, options.random, options.timeout)
    if options.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        hit = {}
        for kill in report.kills:
            # A kill at a fault point landed inside a transaction; the others in a step.
            name = (kill["phase"] or "idle") + (" (in its transaction)" if "landed" in kill else "")
            hit[name] = hit.get(name, 0) + 1
        print(f"kills survived: {len(report.kills)} in {report.seconds:.0f} s "
              f"({', '.join(f'{k} {v}' for k, v in sorted(hit.items()))})")  # fmt: skip
        for name, verdict in report.checks.items():
            print(f"  {'ok  ' if verdict == 'ok' else 'FAIL'} {name}"
                  + ("" if verdict == "ok" else f": {verdict}"))  # fmt: skip
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
