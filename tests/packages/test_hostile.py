"""A corpus of hostile and broken repo packages: each is rejected for the right reason,
goes to quarantine with REJECTED.txt, and nothing reaches the corpus or the database."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from appliance.packages.ingest import ingest
from appliance.packages.split import no_rows
from tests.conftest import TEST_V1, RepoBuilder, build, copy_package, git


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


def _write_manifest(pkg: Path, data: dict) -> None:
    (pkg / "manifest.json").write_text(json.dumps(data, indent=2))


def _wheel_name(pkg: Path, project: str) -> str:
    return next(p.name for p in (pkg / "packages").iterdir() if p.name.startswith(project + "-"))


def path_traversal(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    name = _wheel_name(pkg, "pluggy")
    data["wheels"]["../../" + name] = data["wheels"].pop(name)
    _write_manifest(pkg, data)


def symlink_to_file_outside(pkg: Path, outside: Path) -> None:
    secret = outside / "secret.txt"
    secret.write_text("do not read")
    name = _wheel_name(pkg, "pluggy")
    (pkg / "packages" / name).unlink()
    (pkg / "packages" / name).symlink_to(secret)


def symlink_to_directory(pkg: Path, outside: Path) -> None:
    (outside / "objects").mkdir()
    (pkg / "repo" / "objects" / "ab").symlink_to(outside / "objects", target_is_directory=True)


def executable_outside_packages(pkg: Path, outside: Path) -> None:
    script = pkg / "repo" / "info" / "exclude"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\necho owned\n")
    script.chmod(0o755)


def sdist_in_packages(pkg: Path, outside: Path) -> None:
    (pkg / "packages" / "evil-1.0.tar.gz").write_bytes(b"\x1f\x8b" + b"\0" * 64)


def non_wheel_disguised(pkg: Path, outside: Path) -> None:
    name = _wheel_name(pkg, "pluggy")
    fake = pkg / "packages" / name
    fake.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    data = _manifest(pkg)
    data["wheels"][name] = hashlib.sha256(fake.read_bytes()).hexdigest()  # hash matches
    _write_manifest(pkg, data)


def wheel_hash_mismatch(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    data["wheels"][_wheel_name(pkg, "pluggy")] = "0" * 64
    _write_manifest(pkg, data)


def missing_wheel(pkg: Path, outside: Path) -> None:
    name = _wheel_name(pkg, "pluggy")
    (pkg / "packages" / name).unlink()
    data = _manifest(pkg)
    del data["wheels"][name]
    _write_manifest(pkg, data)


def invalid_json(pkg: Path, outside: Path) -> None:
    (pkg / "manifest.json").write_text('{"schema_version": 1, "name": ')


def unknown_schema(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    data["schema_version"] = 99
    _write_manifest(pkg, data)


def commit_not_in_repo(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    data["commits"][0]["sha"] = "1234567890abcdef1234567890abcdef12345678"
    _write_manifest(pkg, data)


def wrong_parent(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    data["commits"][0]["parent"] = data["commits"][0]["sha"]
    _write_manifest(pkg, data)


def hooks_present(pkg: Path, outside: Path) -> None:
    hook = pkg / "repo" / "hooks" / "post-checkout"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(f"#!/bin/sh\ntouch {outside}/HOOK-RAN\n")


def fsmonitor_in_config(pkg: Path, outside: Path) -> None:
    # Executable script outside the package: if git ever consulted the fsmonitor, it runs.
    monitor = outside / "fsmonitor.sh"
    monitor.write_text(f"#!/bin/sh\ntouch {outside}/FSMONITOR-RAN\n")
    monitor.chmod(0o755)
    with (pkg / "repo" / "config").open("a") as fh:
        fh.write(f"\tfsmonitor = {monitor}\n")


def alternates_outside(pkg: Path, outside: Path) -> None:
    (outside / "objects").mkdir()
    info = pkg / "repo" / "objects" / "info"
    info.mkdir(exist_ok=True)
    (info / "alternates").write_text(f"{outside / 'objects'}\n")


def oversized_file(pkg: Path, outside: Path) -> None:
    big = pkg / "packages" / "big-1.0-py3-none-any.whl"
    with big.open("wb") as fh:
        fh.truncate(3 << 20)  # sparse: over the 2 MB limit set for this case, costs nothing


def zip_bomb_wheel(pkg: Path, outside: Path) -> None:
    bomb = pkg / "packages" / "bomb-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        with zf.open("bomb/zeros.bin", "w") as member:
            chunk = b"\0" * (1 << 20)
            for _ in range(64):
                member.write(chunk)
    data = _manifest(pkg)
    data["wheels"][bomb.name] = hashlib.sha256(bomb.read_bytes()).hexdigest()
    _write_manifest(pkg, data)


def hardlink(pkg: Path, outside: Path) -> None:
    os.link(pkg / "manifest.json", outside / "manifest-link.json")


def fifo(pkg: Path, outside: Path) -> None:
    os.mkfifo(pkg / "repo" / "refs" / "heads" / "pipe")


def unlisted_wheel(pkg: Path, outside: Path) -> None:
    src = next((pkg / "packages").iterdir())
    (pkg / "packages" / "extra-1.0-py3-none-any.whl").write_bytes(src.read_bytes())


def archive_outside_packages(pkg: Path, outside: Path) -> None:
    (pkg / "repo" / "info").mkdir(exist_ok=True)
    (pkg / "repo" / "info" / "exclude").write_bytes(b"PK\x03\x04" + b"\0" * 60)


def manifest_symlink(pkg: Path, outside: Path) -> None:
    real = outside / "manifest.json"
    real.write_text((pkg / "manifest.json").read_text())
    (pkg / "manifest.json").unlink()
    (pkg / "manifest.json").symlink_to(real)


def unpinned_requirement(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    data["requirement_sets"][0].append("requests>=2")
    _write_manifest(pkg, data)


def nesting_bomb(pkg: Path, outside: Path) -> None:
    (pkg / "manifest.json").write_text('{"commits": ' + "[" * 100_000)


def five_thousand_digits(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    data["schema_version"] = "SV"
    (pkg / "manifest.json").write_text(json.dumps(data).replace('"SV"', "1" * 5000))


def string_bomb(pkg: Path, outside: Path) -> None:
    data = _manifest(pkg)
    data["description"] = "x" * (2 << 20)
    _write_manifest(pkg, data)


CASES = {
    "manifest nested 100,000 deep": (nesting_bomb, "manifest"),
    "5,000-digit number": (five_thousand_digits, "manifest"),
    "2 MB string": (string_bomb, "manifest"),
    "path traversal": (path_traversal, "manifest"),
    "symlink to a file outside": (symlink_to_file_outside, "symlink"),
    "symlink to a directory": (symlink_to_directory, "symlink"),
    "executable outside packages/": (executable_outside_packages, "executable"),
    "sdist in packages/": (sdist_in_packages, "sdist"),
    "non-wheel disguised as .whl": (non_wheel_disguised, "not-a-wheel"),
    "wheel hash mismatch": (wheel_hash_mismatch, "wheel-hash"),
    "missing wheel for a requirement": (missing_wheel, "wheel-missing"),
    "invalid JSON": (invalid_json, "manifest"),
    "unknown schema version": (unknown_schema, "manifest"),
    "commit not in repo": (commit_not_in_repo, "commit-missing"),
    "wrong parent": (wrong_parent, "commit-parent"),
    "hooks present": (hooks_present, "git-hooks"),
    "core.fsmonitor in config": (fsmonitor_in_config, "git-config"),
    "alternates pointing outside": (alternates_outside, "git-alternates"),
    "oversized file": (oversized_file, "file-too-large"),
    "zip bomb wheel": (zip_bomb_wheel, "wheel-bomb"),
    "hard link": (hardlink, "hardlink"),
    "FIFO": (fifo, "special-file"),
    "unlisted wheel": (unlisted_wheel, "wheel-unlisted"),
    "archive outside packages/": (archive_outside_packages, "archive"),
    "manifest is a symlink": (manifest_symlink, "symlink"),
    "unpinned requirement": (unpinned_requirement, "manifest"),
}
# Cases judged against a lowered limit (so the test need not write gigabytes).
LIMITS = {"oversized file": "max_file_mb = 2"}
EXPECTED_WORDS = {
    "manifest nested 100,000 deep": "JSON nested more than 32 deep",
    "5,000-digit number": "a number 5000 characters long",
    "2 MB string": "the limit is 1048576 per string",
    "unknown schema version": "unknown schema_version",
    "path traversal": "not a plain wheel file name",
    "unpinned requirement": "not pinned",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_package_is_rejected(case, calc_package, forge_home, db, tmp_path):
    mutate, rule = CASES[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    if case in LIMITS:
        (forge_home.home / "forge.toml").write_text(
            f"[ingest]\nquiet_seconds = 0\n[packages]\n{LIMITS[case]}\n"
        )
        from appliance.config import load_config

        forge_home = load_config()
    pkg = copy_package(calc_package, forge_home.dir("ingest") / "hostile")
    mutate(pkg, outside)

    results = ingest(forge_home, db, trained_rows=no_rows)

    assert [r.outcome for r in results] == ["rejected"], results
    reasons = "\n".join(results[0].reasons)
    assert f"[{rule}]" in reasons, reasons
    if case in EXPECTED_WORDS:
        assert EXPECTED_WORDS[case] in reasons
    # Nothing reached the corpus or the database; the package sits in quarantine.
    assert list(forge_home.dir("corpus").iterdir()) == []
    assert db.execute("SELECT COUNT(*) FROM packages").fetchone()[0] == 0
    assert not (forge_home.dir("ingest") / "hostile").exists()
    quarantined = Path(results[0].path)
    assert quarantined.parent == forge_home.dir("quarantine")
    assert f"[{rule}]" in (quarantined / "REJECTED.txt").read_text()
    assert (quarantined / "hostile").exists() or (quarantined / "hostile").is_symlink()
    event = db.execute("SELECT outcome, reasons FROM ingest_events").fetchall()
    assert [e[0] for e in event] == ["rejected"]
    # Nothing from the package ever ran, and no file outside it was read into the corpus.
    assert not (outside / "HOOK-RAN").exists()
    assert not (outside / "FSMONITOR-RAN").exists()


def test_fsmonitor_never_runs_even_on_a_worktree_of_the_corpus_copy(
    calc_repo, wheelhouse, forge_home, db, tmp_path
):
    """A package whose config passes the rules is still stored with Forge's own config:
    a checkout of the corpus copy, and `git status` in it, never consult the package's."""
    built = build(calc_repo, tmp_path / "pkg", wheelhouse, name="calc", version="2.0").path
    pkg = copy_package(built, forge_home.dir("ingest") / "calc")
    with (pkg / "repo" / "config").open("a") as fh:
        fh.write('[remote "origin"]\n\turl = https://example.invalid/calc.git\n')
    [result] = ingest(forge_home, db, trained_rows=no_rows)
    assert result.outcome == "accepted", result
    corpus_repo = Path(result.path) / "repo"
    assert "example.invalid" not in (corpus_repo / "config").read_text()
    assert not (corpus_repo / "hooks").exists()
    # Plant an fsmonitor in the corpus copy's config as an attacker would have to, then
    # show Forge's git wrapper overrides it: the marker never appears.
    marker = tmp_path / "RAN"
    monitor = tmp_path / "monitor.sh"
    monitor.write_text(f"#!/bin/sh\ntouch {marker}\n")
    monitor.chmod(0o755)
    (corpus_repo / "config").chmod(0o644)
    with (corpus_repo / "config").open("a") as fh:
        fh.write(f"[core]\n\tfsmonitor = {monitor}\n")
    from appliance.packages import gitsafe

    work = tmp_path / "work"
    gitsafe.git(["worktree", "add", "--detach", str(work), "HEAD"], git_dir=corpus_repo)
    gitsafe.git(["status", "--porcelain"], cwd=work)
    assert not marker.exists()
    # Plain git, without Forge's wrapper, would have run it: the test can tell.
    git(work, "status", "--porcelain")
    assert marker.exists()


def test_package_still_being_copied_is_left_alone(calc_package, forge_home, db):
    (forge_home.home / "forge.toml").write_text("[ingest]\nquiet_seconds = 3600\n")
    from appliance.config import load_config

    config = load_config()
    pkg = copy_package(calc_package, config.dir("ingest") / "copying")
    results = ingest(config, db, trained_rows=no_rows)
    assert [r.outcome for r in results] == ["waiting"]
    assert pkg.exists() and (pkg / "manifest.json").exists()
    assert list(config.dir("corpus").iterdir()) == []
    assert list(config.dir("quarantine").iterdir()) == []
    # The copier finishing with a READY marker makes it complete at once.
    (pkg / "READY").write_text("")
    [result] = ingest(config, db, trained_rows=no_rows)
    assert result.outcome == "accepted"
    assert not pkg.exists()


def test_network_during_dry_run_is_rejected(tmp_path, wheelhouse, forge_home, db):
    repo = RepoBuilder(tmp_path / "net-src")
    repo.commit(
        "Create calculator with addition",
        {
            "pyproject.toml": "[tool.pytest.ini_options]\npythonpath = ['src']\n",
            "src/calc.py": "def add(a, b):\n    return a + b\n",
            "tests/test_calc.py": TEST_V1,
        },
    )
    repo.commit(
        "Fetch the exchange rates in the test setup",
        {
            "tests/conftest.py": (
                "import socket\n\nsocket.create_connection(('192.0.2.1', 80), timeout=5).close()\n"
            ),
            "src/calc.py": "def add(a, b):\n    return a + b\n\n\nRATE = 1\n",
        },
    )
    pkg = build(repo, forge_home.dir("ingest") / "net", wheelhouse, name="net", version="1")
    [result] = ingest(forge_home, db, trained_rows=no_rows)
    assert result.outcome == "rejected"
    assert any("[dry-run-network]" in r for r in result.reasons), result.reasons
    assert list(forge_home.dir("corpus").iterdir()) == []
    assert pkg.path.exists() is False
