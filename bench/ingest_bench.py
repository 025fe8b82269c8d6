"""Benchmark: what validating and ingesting the demo package costs, relative to copying it.

    .venv/bin/python bench/ingest_bench.py [--repeat N]

The baseline — a plain recursive copy of the same package — is measured in the same run,
so the ratios hold on a noisy machine where absolute times drift. Needs ./install.sh
(it builds repo_packages/demo/).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "repo_packages" / "demo"


def _fresh_config(tmp: Path):
    home = Path(tempfile.mkdtemp(dir=tmp))
    (home / "forge.toml").write_text("[ingest]\nquiet_seconds = 0\n")
    os.environ["FORGE_HOME"] = str(home)
    from appliance.config import load_config

    config = load_config()
    config.ensure_dirs()
    return config


def measure(setup: Callable[[], object], run: Callable[[object], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        state = setup()
        start = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not (DEMO / "manifest.json").is_file():
        print("repo_packages/demo/ is missing: run ./install.sh first", file=sys.stderr)
        return 1
    from appliance.packages.ingest import ingest
    from appliance.packages.rules import check_files
    from appliance.packages.split import no_rows
    from appliance.packages.validate import validate
    from appliance.store import open_db

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)

        def copy_target():
            return Path(tempfile.mkdtemp(dir=tmp)) / "demo"

        def with_uv_cache():
            config = _fresh_config(tmp)
            validate(DEMO, config)  # warm the uv cache, as on a box that has ingested before
            return config

        def ingest_state():
            config = with_uv_cache()
            return config, open_db(config)

        rows = [
            (
                "copy the package (baseline)",
                measure(copy_target, lambda dest: shutil.copytree(DEMO, dest), args.repeat),
            ),
            (
                "file rules only",
                measure(
                    lambda: _fresh_config(tmp),
                    lambda c: check_files(DEMO, c.settings.packages),
                    args.repeat,
                ),
            ),
            (
                "validate, no dry run",
                measure(with_uv_cache, lambda c: validate(DEMO, c, dry_run=False), args.repeat),
            ),
            (
                "validate (full, dry run in sandbox)",
                measure(with_uv_cache, lambda c: validate(DEMO, c), args.repeat),
            ),
            (
                "ingest (copy + validate + clean repo + record)",
                measure(
                    ingest_state,
                    lambda s: ingest(s[0], s[1], DEMO, keep=True, trained_rows=no_rows),
                    args.repeat,
                ),
            ),
        ]
    base = rows[0][1]
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    print(f"demo package: {size / 1e6:.1f} MB; median of {args.repeat} runs each\n")
    print(f"{'operation':<50} {'ratio':>8}")
    print("-" * 59)
    for name, seconds in rows:
        print(f"{name:<50} {seconds / base:>7.1f}×")
    print(f"\nbaseline: {base * 1000:.1f} ms on this machine, this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
