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
    folder.mkdir(parents=True, exist_ok=True)
    data = {path: text.encode() for path, text in files.items()}
    return write_wheel(folder / f"{dist}-py3-none-any.whl", data, zipfile.ZIP_STORED)


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(path: Path, files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    """A wheel at `path` holding `files` (dist-info included), with a RECORD made for them."""
    dist_info = next(p.split("/")[0] for p in files if p.endswith(".dist-info/WHEEL"))
    files = {k: v for k, v in files.items() if k != f"{dist_info}/RECORD"}
    record = [_record_line(name, data) for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def build_from(source: str, output: Path, links: Path, **options):
    """Build a package from `source` into `output`, taking wheels from `links`."""
    return build_package(
        BuildOptions(source=source, output=output, find_links=links, **options),
        cache_dir=output.parent / ".uv-cache",
    )
