"""Benchmark: indexing the demo repository, and re-indexing it commit to commit.

    .venv/bin/python bench/index_bench.py [--repeat N] [--json] [--check]

1. Full index of the demo package's newest commit into an empty index: files per second,
   and where the time goes (listing and reading the tree, parsing symbols and imports,
   chunking, embedding, storing).
2. Incremental index of that commit when its parent is already indexed (the next commit,
   as a campaign meets it), as a ratio of the full index measured in the same run
   (goal ≤ 0.2), and the call for a commit already indexed.
3. The model: MiniLM load time (import of torch and transformers included, as a fresh
   process pays it) and embedding throughput on the commit's own chunks.

Works in a temporary FORGE_HOME with the demo package ingested; the database is a real
file. Exit 0 whatever the results, unless --check is given: then 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from _report import positive as _positive
from _report import progress as _progress
from _report import ratio as _ratio
from _report import seconds as _seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "repo_packages" / "demo"

INCREMENTAL_GOAL = 0.2
PHASES = (
    "listing and reading the tree",
    "parsing symbols and imports",
    "chunking",
    "embedding",
    "storing",
)


@dataclass
class Row:
    section: str
    name: str
    value: float  # seconds, or a rate as `unit` says
    unit: str = "s"
    ratio: float | None = None  # value / the section's baseline (or share of a total)
    goal: str = ""
    ok: bool | None = None  # None: informative, no goal


def _value(row: Row) -> str:
    return _seconds(row.value) if row.unit == "s" else f"{row.value:,.1f} {row.unit}"


# ---------------------------------------------------------------------------- setup


def _forge_home(tmp: Path):
    """A FORGE_HOME in `tmp` with the demo ingested: (db, package id, name, bare repo,
    [(sha, parent)] of its commits)."""
    home = tmp / "home"
    home.mkdir()
    (home / "forge.toml").write_text("[ingest]\nquiet_seconds = 0\n")
    os.environ["FORGE_HOME"] = str(home)
    os.environ.pop("FORGE_CONFIG", None)
    from appliance.config import load_config
    from appliance.packages.ingest import ingest
    from appliance.packages.split import no_rows
    from appliance.store import open_db

    config = load_config()
    config.ensure_dirs()
    db = open_db(config)
    results = ingest(config, db, DEMO, keep=True, trained_rows=no_rows)
    if not results or results[-1].outcome != "accepted":
        raise SystemExit(f"ingesting the demo failed: {[r.to_dict() for r in results]}")
    package = db.execute(
        "SELECT id, path, name || '-' || version FROM packages ORDER BY id DESC LIMIT 1"
    ).fetchone()
    commits = db.execute(
        "SELECT sha, parent FROM commits WHERE package_id = ? ORDER BY id", [package[0]]
    ).fetchall()
    return db, package[0], package[2], home / package[1] / "repo", commits


def _empty_index(db) -> None:
    """Remove every index row, so the next index_commit starts from nothing."""
    from appliance.store import transaction

    with transaction(db) as conn:
        for table in ("index_snapshots", "index_symbols", "index_chunk_vectors"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("INSERT INTO index_chunk_text (index_chunk_text) VALUES ('delete-all')")
        conn.execute("DELETE FROM index_chunks")
        conn.execute("DELETE FROM index_blobs")


class _Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, name: str, start: float) -> None:
        self.seconds[name] += time.perf_counter() - start


@contextmanager
def _instrumented(phases: _Phases):
    """Time index_commit's phases by wrapping the functions it calls (nothing else
    changes): names looked up in the indexer and analyse modules at call time."""
    from appliance.index import analyse, indexer

    def timed(module, name: str, phase: str, consume: bool = False):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = real(*args, **kwargs)
            if consume:  # a generator: its time is spent while it is read
                result = iter(list(result))
            phases.add(phase, start)
            return result

        return real, wrapper

    listing, parsing, chunking, embedding, storing = PHASES
    plan = [
        (indexer, "resolve_commit", listing, False),
        (indexer, "list_files", listing, False),
        (indexer, "known_blobs", listing, False),
        (indexer, "read_blobs", listing, True),
        (analyse, "analyse_python", parsing, False),
        (indexer, "_import_edges", parsing, False),
        (analyse, "split_lines", chunking, False),
        (analyse, "chunk_lines", chunking, False),
        (indexer, "store_blobs", storing, False),
        (indexer, "store_python", storing, False),
        (indexer, "store_snapshot", storing, False),
    ]
    saved = []
    try:
        for module, name, phase, consume in plan:
            real, wrapper = timed(module, name, phase, consume)
            saved.append((module, name, real))
            setattr(module, name, wrapper)
        yield
    finally:
        for module, name, real in saved:
            setattr(module, name, real)


class _TimedEmbedder:
    def __init__(self, inner, phases: _Phases) -> None:
        self.inner = inner
        self.phases = phases
        self.texts = 0

    def embed(self, texts):
        start = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.phases.add("embedding", start)
            self.texts += len(texts)


# ------------------------------------------------------------------------ benchmarks


def bench_model() -> tuple[object, float]:
    from appliance.index.embed import default_embedder

    _progress("loading MiniLM (torch and transformers imported here)")
    start = time.perf_counter()
    embedder = default_embedder()
    return embedder, time.perf_counter() - start


def bench_index(db, package_id: int, repo: Path, commits: list, embedder, repeat: int):
    from appliance import index

    newest, before = commits[-1]  # the newest task commit and its parent
    full, incremental, noop, chunks_embedded = [], [], [], []
    phases_runs: list[dict[str, float]] = []
    new_blobs = {}
    for i in range(repeat):
        _progress(f"run {i + 1}/{repeat}: full index of {newest[:12]}, then incremental")
        _empty_index(db)
        phases = _Phases()
        timed = _TimedEmbedder(embedder, phases)
        with _instrumented(phases):
            start = time.perf_counter()
            snapshot = index.index_commit(db, repo, newest, package_id=package_id, embedder=timed)
            full.append(time.perf_counter() - start)
        phases_runs.append(dict(phases.seconds) | {"total": full[-1]})
        chunks_embedded.append(timed.texts)
        new_blobs["full"] = snapshot.new_blobs
        files = snapshot.files

        start = time.perf_counter()
        index.index_commit(db, repo, newest, package_id=package_id, embedder=embedder)
        noop.append(time.perf_counter() - start)

        _empty_index(db)
        index.index_commit(db, repo, before, package_id=package_id, embedder=embedder)
        timed = _TimedEmbedder(embedder, _Phases())
        start = time.perf_counter()
        again = index.index_commit(db, repo, newest, package_id=package_id, embedder=timed)
        incremental.append(time.perf_counter() - start)
        new_blobs["incremental"] = again.new_blobs
        new_blobs["incremental_chunks_embedded"] = timed.texts
    base = statistics.median(full)
    inc = statistics.median(incremental)
    section = f"Indexing the demo's newest commit ({files} files)"
    rows = [
        Row(section, "full index, empty database (baseline)", base, ratio=1.0),
        Row(section, "files indexed per second (full)", files / base, "files/s"),
        Row(
            section,
            "incremental, its parent indexed before",
            inc,
            ratio=inc / base,
            goal=f"≤ {INCREMENTAL_GOAL}×",
            ok=inc / base <= INCREMENTAL_GOAL,
        ),
        Row(section, "already indexed (idempotent call)", statistics.median(noop), ratio=None),
    ]
    rows[-1].ratio = rows[-1].value / base
    median_phase = {
        name: statistics.median(run.get(name, 0.0) for run in phases_runs) for name in PHASES
    }
    where = [(name, median_phase[name]) for name in PHASES]
    where.append(("other (bookkeeping)", base - sum(s for _, s in where)))
    time_rows = [Row("where the time goes", name, s, ratio=s / base) for name, s in where]
    info = {
        "newest": newest,
        "before": before,
        "files": files,
        "new_blobs": new_blobs,
        "chunks_embedded_full": chunks_embedded[-1],
        "runs": {"full": full, "incremental": incremental, "already_indexed": noop},
    }
    return rows, time_rows, info


def bench_embedding(db, embedder, repeat: int) -> tuple[list[Row], dict]:
    texts = [row[0] for row in db.execute("SELECT text FROM index_chunks ORDER BY id")]
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        embedder.embed(texts)
        runs.append(time.perf_counter() - start)
    seconds = statistics.median(runs)
    rows = [Row("model", "embedding throughput", len(texts) / seconds, "chunks/s")]
    return rows, {"chunks": len(texts), "runs": runs, "threads": embedder.threads}


# ---------------------------------------------------------------- output


def _print_table(title: str, rows: list[Row], share: bool = False) -> None:
    head = f"  {'operation':<44} {'measured':>14} {'share' if share else 'ratio':>9}"
    print(title)
    head = head if share else f"{head}  {'goal':<10} result"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for row in rows:
        if share:
            print(f"  {row.name:<44} {_value(row):>14} {(row.ratio or 0) * 100:>7.1f} %")
            continue
        result = "" if row.ok is None else ("PASS" if row.ok else "MISS")
        line = f"  {row.name:<44} {_value(row):>14} {_ratio(row.ratio):>9}  {row.goal:<10} "
        print((line + result).rstrip())
    print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Ratios are measured / baseline, both from this run: below 1× is faster.",
    )
    parser.add_argument(
        "--repeat", type=_positive, default=3, help="full/incremental pairs (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    if not (DEMO / "manifest.json").is_file():
        print("repo_packages/demo/ is missing: run ./install.sh first", file=sys.stderr)
        return 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forge-index-bench-") as tmpdir:
        _progress("ingesting the demo into a temporary FORGE_HOME")
        db, package_id, package, repo, commits = _forge_home(Path(tmpdir))
        embedder, load_s = bench_model()
        rows, time_rows, info = bench_index(db, package_id, repo, commits, embedder, args.repeat)
        model_rows, model_info = bench_embedding(db, embedder, args.repeat)
        db.close()
    model_rows.insert(0, Row("model", "MiniLM load (imports included)", load_s))
    missed = [row.name for row in rows if row.ok is False]
    elapsed = time.perf_counter() - started
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "package": package,
        "elapsed_s": round(elapsed, 1),
    }
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine,
                    "rows": [asdict(row) for row in rows + model_rows],
                    "where_the_time_goes": [asdict(row) for row in time_rows],
                    "index": info,
                    "embedding": model_info,
                    "goals_met": not missed,
                    "missed": missed,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        print(
            f"\n{package}: {len(commits)} task commits, newest {info['newest'][:12]}; "
            f"{machine['cpus']} CPUs, Python {machine['python']}; median of {args.repeat} runs\n"
        )
        _print_table(rows[0].section, rows)
        _print_table("Where the time goes (full index)", time_rows, share=True)
        _print_table("Model", model_rows)
        print(
            f"  full index: {info['new_blobs']['full']} blobs, "
            f"{info['chunks_embedded_full']} chunks embedded; incremental: "
            f"{info['new_blobs']['incremental']} new blobs, "
            f"{info['new_blobs']['incremental_chunks_embedded']} chunks embedded; "
            f"embedding on {model_info['threads']} threads\n"
        )
        verdict = "all goals met" if not missed else f"goals MISSED: {', '.join(missed)}"
        print(f"{verdict} (whole benchmark: {elapsed:.0f} s)")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
