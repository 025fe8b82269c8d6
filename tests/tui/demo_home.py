"""A demo FORGE_HOME for the dashboard's screenshots and tests: packages, a quarantined
one, campaign triples, adapter versions with real gate decisions, jobs with a log — all
written into the real schema, with fixed times, so every screen renders the same each
time. Nothing here runs a model or a sandbox."""

from __future__ import annotations

import hashlib
import json

from appliance.config import Config
from appliance.evaluation import gate
from appliance.store import open_db, transaction

DAY = "2025-06-02"
BASE_SHA = "b" * 64


def at(hhmm: str, day: str = DAY) -> str:
    return f"{day}T{hhmm}:00+00:00"


# A fixed `appliance.resources.snapshot`: what the screenshots and snapshots show.
RESOURCES = {
    "cpu": {"cores": 32, "percent": 41.0, "load": [9.8, 8.1, 6.5]},
    "memory": {"total_bytes": 256 * 2**30, "used_bytes": 97 * 2**30, "percent": 37.9},
    "disk": {
        "path": "/var/lib/forge",
        "total_bytes": 4 * 2**40,
        "free_bytes": int(2.6 * 2**40),
        "percent": 35.0,
    },
    "gpus": [
        {"index": i, "name": "Tesla P40", "util_percent": u, "memory_used_bytes": m * 2**30,
         "memory_total_bytes": 24 * 2**30, "temperature_c": t}
        for i, (u, m, t) in enumerate([(97, 21, 71), (12, 6, 44), (0, 0, 31), (0, 0, 30)])
    ],
}  # fmt: skip

PACKAGES = [
    # name, version, split, ingested, commits (message, usable or None)
    ("calc", "1.0", "train", at("07:02"), [
        ("Add subtraction", True), ("Support negative exponents in pow", True),
        ("Fix rounding of halves", True), ("Add modulo with a zero check", True),
        ("Document the public functions", False),
    ]),
    ("textkit", "0.3", "train", at("07:05"), [
        ("Wrap long lines at word boundaries", True), ("Strip trailing whitespace", True),
        ("Add a slugify helper", None),
    ]),
    ("strutil", "2.1", "eval", at("07:09"), [
        ("Case-insensitive startswith", True), ("Add a title-case helper", True),
    ]),
]  # fmt: skip

# (package index, commit index) -> outcomes of samples 0, 1, 2
TRIPLES = {
    (0, 0): ("resolved", "resolved", "failed"),
    (0, 1): ("failed", "not_applied", "resolved"),
    (0, 2): ("resolved", "infra", "failed"),
    (0, 3): ("not_applied", "failed", "failed"),
    (1, 0): ("resolved", "resolved", "resolved"),
    (1, 1): ("failed", "resolved", "not_applied"),
}
REASONS = {
    "resolved": "every FAIL_TO_PASS passes, no PASS_TO_PASS broke",
    "failed": "1 of 2 FAIL_TO_PASS still fail",
    "not_applied": "the code stage gave no edits",
    "infra": "timeout: the test run passed its 120 s wall time",
}

# stage -> [(version, kind, status, dataset, loss, created, baseline, cand, base hits)]
ADAPTERS = {
    "scope": [
        (1, "sft", "inactive", "scope-sft-v1", 0.912, at("01:10", "2025-05-28"), "base", 70, 58),
        (2, "sft", "active", "scope-sft-v2", 0.744, at("01:40", "2025-05-30"), "scope-v1", 81, 70),
        (3, "dpo", "candidate", "scope-dpo-v1", 0.652, at("02:05"), "scope-v2", 79, 81),
    ],
    "task_analysis": [
        (1, "sft", "rejected", "task_analysis-sft-v1", 1.204, at("00:50", "2025-05-29"), "base",
         52, 61),
    ],
    "code": [
        (1, "sft", "active", "code-sft-v1", 0.583, at("03:15", "2025-05-31"), "base", 38, 29),
    ],
}  # fmt: skip
GATE_N = 120  # held-out items per metric


def _outcomes(hits: int, n: int, offset: int) -> list[int]:
    """n pass/fail outcomes with `hits` passes, spread deterministically."""
    return [1 if (i * 37 + offset) % n < hits else 0 for i in range(n)]


def _decision(stage: str, candidate_hits: int, baseline_hits: int) -> dict:
    from appliance.evaluation.metrics import METRICS

    results = []
    for k, (metric, kind) in enumerate(METRICS[stage]):
        if kind == "binary":
            results.append(gate.compare_binary(
                stage, metric, _outcomes(candidate_hits - 3 * k, GATE_N, 0),
                _outcomes(baseline_hits - 3 * k, GATE_N, 5),
            ))  # fmt: skip
        else:
            results.append(gate.compare_continuous(
                stage, metric, [float(v) for v in _outcomes(candidate_hits - 3 * k, GATE_N, 0)],
                [float(v) for v in _outcomes(baseline_hits - 3 * k, GATE_N, 5)], resamples=500,
            ))  # fmt: skip
    return gate.decide(stage, results, alpha=0.05, min_effect=0.0).to_dict()


def seed(config: Config) -> None:
    """Fill FORGE_HOME's database (migrated if new) and folders with the demo."""
    config.ensure_dirs()
    db = open_db(config)
    try:
        with transaction(db) as conn:
            _packages(conn)
            _solve_runs(conn)
            _adapters(conn)
            _jobs(conn)
    finally:
        db.conn.close()
    _quarantine(config)
    _logs(config)


def _packages(conn) -> None:
    for p, (name, version, split, ingested, commits) in enumerate(PACKAGES):
        package_id = conn.execute(
            "INSERT INTO packages (name, version, manifest_sha256, path, split, description, "
            "test_command, test_timeout_s, requirements, ingested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [name, version, f"{p:064x}", f"corpus/{name}-{version}", split, f"the {name} demo",
             json.dumps(["python", "-m", "pytest", "-q"]), 120.0, "[]", ingested],
        ).lastrowid  # fmt: skip
        conn.execute(
            "INSERT INTO ingest_events (at, source, outcome, package_id, reasons) "
            "VALUES (?, ?, 'accepted', ?, ?)",
            [ingested, f"{name}-{version}", package_id,
             json.dumps([f"split: {split} (chosen at ingest)"])],
        )  # fmt: skip
        for c, (message, usable) in enumerate(commits):
            sha = hashlib.sha1(f"{name}-{version}-{c}".encode()).hexdigest()
            conn.execute(
                "INSERT INTO commits (package_id, sha, parent, message, author_date, files, "
                "lines_added, lines_deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [package_id, sha, "0" * 40, message + "\n\nA longer body.", at("06:00"),
                 json.dumps([{"path": "src/calc.py"}]), 12 + c, 3],
            )  # fmt: skip
            if usable is not None:
                conn.execute(
                    "INSERT INTO gold_results (package_id, sha, inputs_key, status, usable, "
                    "reason, fail_to_pass, pass_to_pass, flaky, runs, duration_s, graded_at) "
                    "VALUES (?, ?, 'k', 'ok', ?, ?, ?, ?, '[]', '[]', 4.2, ?)",
                    [package_id, sha, int(usable),
                     "2 FAIL_TO_PASS" if usable else "no test fails before the commit",
                     json.dumps(["tests/test_calc.py::test_new", "tests/test_calc.py::test_edge"]
                                if usable else []),
                     json.dumps(["tests/test_calc.py::test_add"]), at("07:30")],
                )  # fmt: skip
            for sample, outcome in enumerate(TRIPLES.get((p, c), ())):
                _triple(conn, package_id, sha, sample, outcome, message)
            if (p, c) in TRIPLES:
                for stage in ("task_analysis", "scope", "precision"):
                    conn.execute(
                        "INSERT INTO synthetic_pairs (package_id, sha, stage, input, target, "
                        "created_at) VALUES (?, ?, ?, '{}', '{}', ?)",
                        [package_id, sha, stage, at("08:00")],
                    )
    conn.execute(
        "INSERT INTO ingest_events (at, source, outcome, quarantine_path, reasons) "
        "VALUES (?, 'mathlib-0.9', 'rejected', 'quarantine/mathlib-0.9', ?)",
        [at("07:12"), json.dumps(_REJECTED)],
    )
    conn.execute(
        "INSERT INTO ingest_events (at, source, outcome, package_id, reasons) "
        "VALUES (?, 'calc-1.0', 'duplicate', 1, '[]')",
        [at("07:20")],
    )


_REJECTED = [
    "wheels/numpy-2.0.0.tar.gz: an sdist (only wheels are allowed: an sdist runs code at install)",
    "manifest.json: sha256 of wheels/six-1.16.0-py2.py3-none-any.whl does not match",
    "repo/.git/hooks/post-checkout: a git hook (hooks never run)",
]


def _triple(conn, package_id: int, sha: str, sample: int, outcome: str, message: str) -> None:
    graded = outcome in ("resolved", "failed")
    f2p = {
        "tests/test_calc.py::test_new": "passed",
        "tests/test_calc.py::test_edge": "passed" if outcome == "resolved" else "failed",
    }
    grading = {
        "verdict": outcome, "reason": REASONS[outcome],
        "fail_to_pass": f2p, "pass_to_pass_broken": {}, "changed": ["src/calc.py"],
        "run": {"status": "ok", "detail": "", "returncode": 0 if outcome == "resolved" else 1,
                "duration_s": 3.1, "counts": {"passed": 3 if outcome == "resolved" else 2,
                                              "failed": 0 if outcome == "resolved" else 1},
                "collection_errors": []},
    } if graded else {}  # fmt: skip
    stages = {
        "task_analysis": {"stage": "task_analysis", "adapter": None, "error": None,
                          "call_id": 1, "output": {"summary": message,
                                                   "files": ["src/calc.py"]}},
        "scope": {"stage": "scope", "adapter": "scope-v2", "error": None, "call_id": 2,
                  "output": {"files": [{"path": "src/calc.py", "label": "relevant"},
                                       {"path": "tests/test_calc.py", "label": "supporting"}]}},
        "plan": {"stage": "plan", "adapter": None, "error": None, "call_id": 3,
                 "output": {"steps": [f"change src/calc.py: {message.lower()}"]}},
        "code": {"stage": "code", "adapter": "code-v1", "call_id": 4,
                 "error": "no edits in the answer" if outcome == "not_applied" else None,
                 "output": None if outcome == "not_applied" else
                 {"edits": [{"path": "src/calc.py", "search": "return a", "replace": "return b"}]}},
    }  # fmt: skip
    diff = (
        ""
        if outcome == "not_applied"
        else "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,2 +1,2 @@\n def f(a, b):\n"
        "-    return a\n+    return b\n"
    )
    conn.execute(
        "INSERT INTO triples (package_id, sha, sample, snapshot_sha, temperature, seed, stages, "
        "call_ids, edits, diff, outcome, reason, grading, alignment, seconds, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [package_id, sha, sample, "0" * 40, [0.2, 0.6, 1.0][sample], sample,
         json.dumps(stages), "[1, 2, 3, 4]", "[]", diff, outcome, REASONS[outcome],
         json.dumps(grading), "{}", json.dumps({"stages": 12.5, "sandbox": 3.1}),
         at(f"08:{10 + sample:02d}")],
    )  # fmt: skip


SOLVE_RUNS = [
    # task, repository, outcome, test verdict, applied, feedback, corrected patch
    ("Add a cube root helper", None, "diff", "passed", False, "good", False),
    ("Reject division by zero with a clear message", "/home/ada/calc", "diff", "failed", False,
     "bad", True),
    ("Explain the rounding mode in the docs", "/home/ada/calc", "no_diff", None, False, None,
     False),
]  # fmt: skip


def _solve_runs(conn) -> None:
    patch = "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1 +1 @@\n-x\n+y\n"
    for n, (task, repo, outcome, test, applied, feedback, corrected) in enumerate(SOLVE_RUNS):
        conn.execute(
            "INSERT INTO solve_runs (package_id, package, repo_path, snapshot_sha, contains, "
            "task, stages, call_ids, edits, patch, outcome, reason, seconds, started_at, "
            "finished_at, test, tested_at, applied_at, feedback, feedback_patch, feedback_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [1, "calc-1.0", repo, f"{n + 7:x}" * 40, "[]", task, "{}", "[]", "[]",
             patch if outcome == "diff" else "", outcome, "given", "{}", at(f"09:{n:02d}"),
             at(f"09:{n:02d}"), json.dumps({"verdict": test}) if test else None,
             at(f"09:{n:02d}") if test else None, at(f"09:{n:02d}") if applied else None,
             feedback, patch if corrected else None, at(f"10:{n:02d}") if feedback else None],
        )  # fmt: skip


def _adapters(conn) -> None:
    for stage, versions in ADAPTERS.items():
        for version, kind, status, dataset, loss, created, baseline, hits, base_hits in versions:
            name = f"{stage}-v{version}"
            conn.execute(
                "INSERT INTO adapters (stage, version, kind, status, dataset, base, base_sha256, "
                "hyperparameters, metrics, path, sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'smollm2-135m', ?, '{}', ?, ?, ?, ?)",
                [stage, version, kind, status, dataset, BASE_SHA,
                 json.dumps({"final_loss": loss, "steps": 200 if kind == "sft" else 40}
                            | ({"built_on": baseline} if kind == "dpo" else {})),
                 f"adapters/{name}.gguf", f"{version:064x}", created],
            )  # fmt: skip
            report = _decision(stage, hits, base_hits)
            report |= {"source": "eval_packages", "examples": GATE_N // 4,
                       "note": "held-out repositories (eval split)"}  # fmt: skip
            decision_id = conn.execute(
                "INSERT INTO gate_decisions (stage, candidate, baseline, verdict, report, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [stage, name, baseline, report["verdict"], json.dumps(report), created],
            ).lastrowid
            if status in ("active", "inactive"):
                before = None if baseline == "base" else int(baseline.rsplit("v", 1)[1])
                conn.execute(
                    "INSERT INTO adapter_events (stage, action, from_version, to_version, "
                    "decision_id, note, at) VALUES (?, 'promote', ?, ?, ?, '', ?)",
                    [stage, before, version, decision_id, created],
                )
            elif status == "rejected":
                conn.execute(
                    "INSERT INTO adapter_events (stage, action, from_version, to_version, "
                    "decision_id, note, at) VALUES (?, 'reject', NULL, ?, ?, '', ?)",
                    [stage, version, decision_id, created],
                )


JOBS = [
    # kind, args, status, attempts, queued, started, finished, error, progress, key, heavy
    ("backup", {}, "done", 1, "03:00", "03:00", "03:01", None, {}, "backup", 0),
    ("cycle", {}, "done", 1, "04:00", "04:00", "06:55", None, {}, "cycle", 1),
    ("train", {"stage": "precision"}, "failed", 3, "07:00", "07:40", "07:41",
     "precision-sft-v1 failed its gates: 3 rows (at least 20 needed)", {}, None, 1),
    ("ingest", {}, "done", 1, "07:00", "07:01", "07:21", None, {}, "ingest", 0),
    ("campaign", {"package": "calc"}, "running", 1, "08:00", "08:02", None, None,
     {"step": "campaign", "done": 14, "total": 24, "text": "calc: commit 5 of 8, sample 2"},
     "campaign", 1),
    ("evaluate", {"stage": "scope"}, "queued", 0, "08:05", None, None, None, {}, None, 1),
    ("backup", {}, "queued", 1, "08:06", "08:06", None, "disk full: 0 bytes free in backups/",
     {}, "backup", 0),
]  # fmt: skip


def _jobs(conn) -> None:
    for i, job in enumerate(JOBS, start=1):
        kind, args, status, attempts, queued, started, finished, error, progress, key, heavy = job
        not_before = at("08:16") if status == "queued" and attempts else at(queued)
        conn.execute(
            "INSERT INTO jobs (kind, args, key, heavy, status, attempts, max_attempts, "
            "not_before, queued_at, started_at, finished_at, error, log, progress) "
            "VALUES (?, ?, ?, ?, ?, ?, 3, ?, ?, ?, ?, ?, ?, ?)",
            [kind, json.dumps(args), key, heavy, status, attempts, not_before, at(queued),
             at(started) if started else None, at(finished) if finished else None, error,
             f"runs/jobs/job-{i}.log" if started else None, json.dumps(progress)],
        )  # fmt: skip


def _quarantine(config: Config) -> None:
    folder = config.dir("quarantine") / "mathlib-0.9"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["Forge rejected the repo package 'mathlib-0.9' on " + at("07:12") + ".", ""]
    lines += [f"- {reason}" for reason in _REJECTED]
    lines += ["", "Nothing from it entered the corpus."]
    (folder / "REJECTED.txt").write_text("\n".join(lines) + "\n")


def _logs(config: Config) -> None:
    logs = config.dir("runs") / "jobs"
    logs.mkdir(parents=True, exist_ok=True)
    for i, job in enumerate(JOBS, start=1):
        kind, _, status, *_ = job
        if job[5] is None:
            continue
        lines = [f"{at(job[5])} job {i} ({kind}) started, attempt {job[3]}"]
        if kind == "campaign":
            lines += [
                f"{at('08:0' + str(3 + n))} calc {sha} sample {s}: {outcome}"
                for n, (sha, s, outcome) in enumerate(
                    [("1a2b3c4d", 0, "resolved"), ("1a2b3c4d", 1, "resolved"),
                     ("2b3c4d5e", 0, "failed"), ("2b3c4d5e", 1, "not_applied")]
                )
            ]  # fmt: skip
        if status == "done":
            lines.append(f"{at(job[6])} job {i} done")
        elif job[7]:
            lines.append(f"{at(job[6] or job[5])} job {i} failed: {job[7]}")
        (logs / f"job-{i}.log").write_text("\n".join(lines) + "\n")
