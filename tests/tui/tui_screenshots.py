"""`python tests/tui/tui_screenshots.py OUTDIR`: seed a demo FORGE_HOME (in a temp
folder) and save SVG screenshots of the Overview and Adapters screens as OUTDIR/tui-overview.svg and
OUTDIR/tui-adapters.svg (the pictures in docs/)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from demo_home import RESOURCES, seed

from appliance.config import load_config
from appliance.status import gather
from tui.app import ForgeApp
from tui.data import Reader

SIZE = (140, 44)


def fixed_gather(config, db) -> dict:
    """`forge status` data with the demo's fixed resources, so the pictures are stable."""
    return gather(config, db, resources=RESOURCES)


async def _shoot(app, outdir: Path) -> list[Path]:
    saved = []
    async with app.run_test(size=SIZE) as pilot:
        for key, name in (("1", "overview"), ("4", "adapters")):
            await pilot.press(key)
            await settle(pilot)
            saved.append(Path(app.save_screenshot(f"tui-{name}.svg", str(outdir))))
    return saved


async def settle(pilot) -> None:
    """Wait until the screen's reads are done and on screen: no worker running and the
    screen not loading, three times in a row (a read on screen may start another: a
    highlighted row's detail, a reload asked for while the first read ran)."""
    quiet = 0
    for _ in range(100):  # a bound, not a timer: a busy machine only takes longer
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        busy = getattr(pilot.app.screen, "_loading", False) or any(
            worker.is_running for worker in pilot.app.workers
        )
        quiet = 0 if busy else quiet + 1
        if quiet == 3:
            break
    await pilot.pause()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python tests/tui/tui_screenshots.py OUTDIR", file=sys.stderr)
        return 2
    outdir = Path(args[0])
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="forge-demo-") as tmp:
        os.environ["FORGE_HOME"] = str(Path(tmp) / "forge")
        os.environ.pop("FORGE_CONFIG", None)

        config = load_config()
        seed(config)
        app = ForgeApp(config, Reader(config, gather=fixed_gather), refresh_s=None)
        for path in asyncio.run(_shoot(app, outdir)):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
