"""Helpers the package tests share: wheels made on the spot, and a build from a source."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from appliance.packages.build import BuildOptions, build_package


def make_wheel(
    folder: Path, name: str, version: str, requires: tuple[str, ...] = (), module: str = ""
) -> Path:
    """A real, minimal pure-Python wheel (one module), as a build backend would make it."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}.py": module or "VALUE = 1\n",
        f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: forge-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def build_from(source: str, output: Path, links: Path, **options):
    """Build a package from `source` into `output`, taking wheels from `links`."""
    return build_package(
        BuildOptions(source=source, output=output, find_links=links, **options),
        cache_dir=output.parent / ".uv-cache",
    )
