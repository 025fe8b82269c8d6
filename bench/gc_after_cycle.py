"""Check: what `forge gc` leaves after `forge cycle --demo`, and that every adapter still
loads and serves (issue 21).

    .venv/bin/python bench/gc_after_cycle.py [--home DIR] [--json]

In a new FORGE_HOME (or --home, which must not exist yet): `forge init`, `forge cycle
--demo`, then `forge gc`. Printed: the size of runs/ before and after, what gc freed, the
checkpoints left under runs/ (none of a finished run should be), and for each registered
adapter a short greedy answer through the model pool with that adapter loaded. The cycle
takes about half an hour on a 2-core machine. Exit 1 when a checkpoint of a finished run
is left or an adapter does not load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORGE = [sys.executable, "-m", "appliance"]


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def forge(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"FORGE_HOME": str(home)}
    env.pop("FORGE_CONFIG", None)
    return subprocess.run([*FORGE, *args], cwd=ROOT, env=env, capture_output=True, text=True)


def serve_each_adapter(home: Path) -> list[dict]:
    os.environ["FORGE_HOME"] = str(home)
    os.environ.pop("FORGE_CONFIG", None)
    sys.path.insert(0, str(ROOT))
    from appliance.config import load_config
    from appliance.serving.pool import Adapter, ModelPool
    from appliance.stages import STAGE_ROLES
    from appliance.store import open_db

    config = load_config()
    db = open_db(config)
    rows = db.execute("SELECT stage, version, status, path FROM adapters ORDER BY id").fetchall()
    pool = ModelPool.from_config(config, log=False)
    served = []
    try:
        for stage, version, status, path in rows:
            name = f"{stage}-v{version}"
            file = Path(path) if Path(path).is_absolute() else config.home / path
            try:
                answer = pool.chat(STAGE_ROLES[stage], [{"role": "user", "content": "Say hi."}],
                                   adapter=Adapter(name, file), max_tokens=8)  # fmt: skip
                served.append({"adapter": name, "status": status, "ok": True,
                               "tokens": answer.completion_tokens,
                               "text": answer.text})  # fmt: skip
            except Exception as exc:  # reported, not raised: every adapter is tried
                served.append({"adapter": name, "status": status, "ok": False, "error": str(exc)})
    finally:
        pool.close()
    return served


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="a FORGE_HOME to make (default: a temp one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forge-gc-check-") as tmp:
        home = args.home or Path(tmp) / "home"
        if home.exists():
            parser.error(f"{home} exists: give a new folder")
        for step in (["init"], ["cycle", "--demo"]):
            print(f"… forge {' '.join(step)}", file=sys.stderr, flush=True)
            done = forge(home, *step)
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
                return 1
        before = size(home / "runs")
        gc = json.loads(forge(home, "gc", "--json").stdout)
        after = size(home / "runs")
        left = sorted(str(p.relative_to(home)) for p in (home / "runs").rglob("checkpoints"))
        served = serve_each_adapter(home)
    report = {"runs_bytes_before": before, "runs_bytes_after": after, "gc": gc,
              "checkpoints_left": left, "adapters": served}  # fmt: skip
    ok = not left and served and all(a["ok"] for a in served)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"runs/: {before / 1e6:.0f} MB after the cycle, {after / 1e6:.0f} MB after gc")
        print(f"checkpoints left under runs/: {left or 'none'}")
        for a in served:
            shown = f"{a['tokens']} tokens: {a['text']!r}" if a["ok"] else f"FAILED: {a['error']}"
            print(f"  {a['adapter']} ({a['status']}): {shown}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
