"""The `forge` command as an operator runs it: real subprocesses, real state."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import copy_package

COMMANDS = [
    [],
    ["init"],
    ["status"],
    ["doctor"],
    ["ingest"],
    ["package"],
    ["package", "build"],
    ["package", "validate"],
    ["data-package"],
    ["data-package", "list"],
    ["data-package", "validate"],
    ["teacher"],
    ["teacher", "run"],
    ["datasets", "sources"],
]


def forge(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "forge")
def test_every_command_has_help(command):
    proc = forge(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


def test_status_json_reports_corpus_and_disk(calc_package, forge_home):
    copy_package(calc_package, forge_home.dir("ingest") / "calc")
    proc = forge("ingest", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["outcome"] == "accepted"
    proc = forge("status", "--json")
    data = json.loads(proc.stdout)
    assert data["corpus"]["packages"] == 1 and data["corpus"]["commits"] == 1
    assert data["ingest"]["last"]["outcome"] == "accepted"
    assert data["database"]["bytes"] > 0 and data["disk"]["free_bytes"] > 0
    human = forge("status")
    assert "calc 1.0" in human.stdout


def test_validate_exit_codes_and_json(calc_package, tmp_path, forge_home):
    ok = forge("package", "validate", str(calc_package), "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["checks"] == {
        "files": "pass",
        "manifest": "pass",
        "git": "pass",
        "wheels": "pass",
        "dry_run": "pass",
    }
    broken = copy_package(calc_package, tmp_path / "broken")
    (broken / "manifest.json").write_text("{")
    bad = forge("package", "validate", str(broken))
    assert bad.returncode == 1
    assert "[manifest] manifest.json: not valid JSON" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr
    missing = forge("package", "validate", str(tmp_path / "nope"), "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["problems"][0]["rule"] == "missing"


def test_bad_config_is_an_error_not_a_traceback(tmp_path):
    cfg = tmp_path / "forge.toml"
    cfg.write_text("[packages]\nmax_file_mb = 'big'\n")
    proc = forge("status", env={"FORGE_CONFIG": str(cfg), "FORGE_HOME": str(tmp_path / "h")})
    assert proc.returncode == 1
    assert "packages.max_file_mb" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_rejects_bad_arguments(tmp_path, forge_home):
    not_git = tmp_path / "plain"
    not_git.mkdir()
    proc = forge("package", "build", str(not_git), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "is not a git repository" in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = forge("package", "build", str(not_git), "-o", str(tmp_path / "o"), "--max-commits", "0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_build_reports_filters_and_output_validates(calc_repo, wheelhouse, tmp_path, forge_home):
    calc_repo.commit("wip", {"notes.py": "x = 1\n"})
    calc_repo.commit("Document the calculator", {"README.md": "# calc\n"})
    out = tmp_path / "pkg"
    proc = forge(
        "package",
        "build",
        str(calc_repo.path),
        "-o",
        str(out),
        "--json",
        "--find-links",
        str(wheelhouse),
        "--name",
        "calc",
        *[a for pin in ["pytest==9.2.0"] for a in ("-r", pin)],
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["scanned"] == 4 and data["kept"] == 1
    assert data["removed"]["root"] == 1 and data["removed"]["message"] == 1
    assert data["removed"]["docs-or-ci-only"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert "pytest==9.2.0" in manifest["requirement_sets"][0]
    assert forge("package", "validate", str(out)).returncode == 0
    again = forge("package", "build", str(calc_repo.path), "-o", str(out))
    assert again.returncode == 1 and "not empty" in again.stderr


def test_doctor_passes_on_an_installed_box(forge_home):
    # Free space is the machine's business; its check has a test of its own below.
    (forge_home.home / "forge.toml").write_text("[doctor]\nmin_free_gb = 0\n")
    proc = forge("doctor", "--json")
    data = json.loads(proc.stdout)
    failed = [c for c in data["checks"] if not c["ok"]]
    assert proc.returncode == 0 and not failed, failed
    names = {c["name"] for c in data["checks"]}
    assert {"database", "sqlite-vec", "llama.cpp", "uv", "sandbox (bwrap)", "disk"} <= names
    assert any(n.startswith("model ") for n in names)
    (sandbox,) = [c for c in data["checks"] if c["name"] == "sandbox (bwrap)"]
    uid = int(re.search(r"uid (\d+)", sandbox["detail"]).group(1))
    assert uid != 0  # says who the tests run as, and it is never root


def test_doctor_reports_low_disk(forge_home):
    (forge_home.home / "forge.toml").write_text("[doctor]\nmin_free_gb = 1000000\n")
    proc = forge("doctor", "--json")
    assert proc.returncode == 1
    [disk] = [c for c in json.loads(proc.stdout)["checks"] if c["name"] == "disk"]
    assert not disk["ok"] and "want ≥ 1e+06 GB" in disk["detail"] and disk["fix"]


def test_doctor_names_a_tampered_model(tmp_path, forge_home):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    models = tmp_path / "models.toml"
    models.write_text(f'[bases.tiny]\npath = "{gguf}"\nsha256 = "{"0" * 64}"\n')
    (forge_home.home / "forge.toml").write_text(f'[models]\nmanifest = "{models}"\n')
    proc = forge("doctor")
    assert proc.returncode == 1
    assert "model tiny" in proc.stdout and "sha256" in proc.stdout
    assert "1 problem(s) found" in proc.stdout


def test_unwritable_forge_home_is_an_error_not_a_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = forge("status", env={"FORGE_HOME": str(blocker / "home")})
    assert proc.returncode == 1
    assert "cannot create the state directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_database_is_reported_by_status_and_doctor(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "forge.db").write_bytes(b"not a database at all" * 400)
    env = {"FORGE_HOME": str(home)}
    status = forge("status", env=env)
    assert status.returncode == 1
    assert "file is not a database" in status.stderr and "Traceback" not in status.stderr
    doctor = forge("doctor", "--json", env=env)
    assert doctor.returncode == 1
    [check] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "database"]
    assert not check["ok"] and "not a database" in check["detail"]
