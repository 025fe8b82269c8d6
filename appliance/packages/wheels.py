"""Wheel checks: each file in packages/ is a real wheel, matches its hash, and is no bomb."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from appliance.config import PackageLimits
from appliance.digest import sha256_file
from appliance.packages.problems import Problem

MB = 1 << 20
MAX_MEMBERS = 100_000


def check_wheel(path: Path, rel: str, limits: PackageLimits) -> list[Problem]:
    """Is `path` a well-formed wheel within the size and compression limits?"""
    infos = _members(path, rel)
    if isinstance(infos, Problem):
        return [infos]
    return _layout_problems(infos, rel) + _size_problems(infos, rel, limits)


def _members(path: Path, rel: str) -> list[zipfile.ZipInfo] | Problem:
    """The wheel's members, or why it is not a wheel at all."""
    try:
        parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        return Problem(
            "not-a-wheel",
            rel,
            f"not a wheel file name: {exc}",
            "use the wheel exactly as pip downloaded or built it",
        )
    if not zipfile.is_zipfile(path):
        return Problem(
            "not-a-wheel",
            rel,
            "named .whl but is not a zip archive",
            "replace it with the real wheel",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return Problem(
            "not-a-wheel",
            rel,
            f"unreadable zip archive: {exc}",
            "replace it with the real wheel",
        )


def _layout_problems(infos: list[zipfile.ZipInfo], rel: str) -> list[Problem]:
    """Too many members, no *.dist-info/WHEEL, a member that escapes the install dir."""
    problems = []
    if len(infos) > MAX_MEMBERS:
        problems.append(
            Problem(
                "wheel-bomb",
                rel,
                f"{len(infos)} members",
                f"a wheel may hold at most {MAX_MEMBERS} files",
            )
        )
    names = [i.filename for i in infos]
    if not any(
        PurePosixPath(n).name == "WHEEL"
        and n.count("/") == 1
        and n.split("/")[0].endswith(".dist-info")
        for n in names
    ):
        problems.append(
            Problem(
                "not-a-wheel", rel, "no *.dist-info/WHEEL inside", "replace it with the real wheel"
            )
        )
    for name in names:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or "\\" in name:
            problems.append(
                Problem(
                    "wheel-path",
                    rel,
                    f"member {name!r} escapes the install dir",
                    "remove this wheel; it is malformed or hostile",
                )
            )
            break
    return problems


def _size_problems(infos: list[zipfile.ZipInfo], rel: str, limits: PackageLimits) -> list[Problem]:
    """Unpacks to more than the limit, or a member compressed like a zip bomb (the first)."""
    unpacked = sum(i.file_size for i in infos)
    if unpacked > limits.max_wheel_uncompressed_mb * MB:
        return [
            Problem(
                "wheel-bomb",
                rel,
                f"unpacks to {unpacked / MB:.0f} MB; the limit is "
                f"{limits.max_wheel_uncompressed_mb:g} MB",
                "remove it, or raise packages.max_wheel_uncompressed_mb in forge.toml",
            )
        ]
    for info in infos:
        if info.file_size > MB and info.file_size > limits.max_compression_ratio * max(
            info.compress_size, 1
        ):
            return [
                Problem(
                    "wheel-bomb",
                    rel,
                    f"member {info.filename!r} expands "
                    f"{info.file_size / max(info.compress_size, 1):.0f}×"
                    f" (limit {limits.max_compression_ratio:g}×)",
                    "remove this wheel; real wheels do not compress like that",
                )
            ]
    return []


def check_wheels(
    packages_dir: Path, expected: dict[str, str], limits: PackageLimits
) -> list[Problem]:
    """Every wheel listed with a matching hash, every file listed, each file a sound wheel."""
    problems = []
    present = {p.name: p for p in packages_dir.iterdir()} if packages_dir.is_dir() else {}
    for name in sorted(set(present) - set(expected)):
        problems.append(
            Problem(
                "wheel-unlisted",
                f"packages/{name}",
                "file is not listed in manifest.json 'wheels'",
                "remove it, or rebuild the package so the manifest lists it",
            )
        )
    for name, want in sorted(expected.items()):
        rel = f"packages/{name}"
        path = present.get(name)
        if path is None:
            problems.append(
                Problem(
                    "wheel-missing",
                    rel,
                    "listed in manifest.json but absent",
                    "copy the package again; it is incomplete",
                )
            )
            continue
        if not path.is_file() or path.is_symlink():
            continue  # reported by the file rules
        got = sha256_file(path)
        if got != want:
            problems.append(
                Problem(
                    "wheel-hash",
                    rel,
                    f"sha256 is {got}, manifest says {want}",
                    "the file was altered or damaged; copy the package again",
                )
            )
            continue
        problems.extend(check_wheel(path, rel, limits))
    return problems
