"""The systemd unit and `install.sh --system` (daemon/install-system.sh): rendered into a
DESTDIR (no user made, no systemctl), checked with systemd-analyze where it exists."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "daemon" / "install-system.sh"
# Hardening options that would break the bwrap sandbox (see the unit's comment).
BREAKS_BWRAP = ("RestrictNamespaces", "PrivateUsers", "SystemCallFilter", "ProtectKernelTunables",
                "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProtectHostname",
                "PrivateDevices", "ProtectClock")  # fmt: skip


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def install(destdir: Path, root: Path = ROOT) -> subprocess.CompletedProcess:
    env = os.environ | {"DESTDIR": str(destdir)}
    return subprocess.run([str(SCRIPT), str(root)], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_the_unit_is_type_notify_with_watchdog_restart_user_and_hardening():
    service = unit(ROOT / "daemon" / "forged.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure" and service["WatchdogSec"]
    assert service["User"] == "forge" and service["Group"] == "forge"
    assert service["StateDirectory"] == "forge"  # FORGE_HOME=/var/lib/forge via STATE_DIRECTORY
    assert service["ProtectSystem"] == "strict" and service["ProtectHome"] == "yes"
    assert service["NoNewPrivileges"] == "yes" and service["IPAddressDeny"] == "any"
    # SIGTERM stops forged within 30 s; systemd waits longer than that before SIGKILL.
    assert int(service["TimeoutStopSec"].rstrip("s")) > 30
    assert not set(BREAKS_BWRAP) & set(service)


def test_the_serve_unit_runs_forge_serve_as_forge_on_loopback_only():
    """forge-serve.service: the same user and state as forged, no sandbox to make room
    for (so namespaces and the syscall set are restricted), and loopback only."""
    service = unit(ROOT / "daemon" / "forge-serve.service")["Service"]
    assert service["ExecStart"] == "/opt/forge/.venv/bin/forge serve"
    assert service["User"] == "forge" and service["StateDirectory"] == "forge"
    assert service["IPAddressDeny"] == "any" and service["IPAddressAllow"] == "localhost"
    assert service["RestrictNamespaces"] == "yes" and service["NoNewPrivileges"] == "yes"
    assert "PrivateDevices" not in service  # the GPUs of serve.gpus stay visible


def test_install_system_renders_the_unit_for_this_tree(tmp_path):
    if not (ROOT / ".venv" / "bin" / "forged").exists():
        pytest.fail("the venv is missing: run ./install.sh")
    done = install(tmp_path / "dest")
    assert done.returncode == 0, done.stderr
    rendered = tmp_path / "dest" / "etc/systemd/system/forged.service"
    service = unit(rendered)["Service"]
    assert service["ExecStart"] == f"{ROOT}/.venv/bin/forged"
    assert "/opt/forge" not in rendered.read_text()
    state = tmp_path / "dest" / "var/lib/forge"
    assert state.is_dir() and oct(state.stat().st_mode & 0o7777) == "0o2770"
    assert "FORGE_HOME=/var/lib/forge" in (tmp_path / "dest/etc/profile.d/forge.sh").read_text()
    assert (tmp_path / "dest/usr/local/bin/forge").resolve() == (ROOT / ".venv/bin/forge").resolve()
    assert (tmp_path / "dest/etc/forge/forge.toml").is_file()
    serve = unit(tmp_path / "dest" / "etc/systemd/system/forge-serve.service")["Service"]
    assert serve["ExecStart"] == f"{ROOT}/.venv/bin/forge serve"
    again = install(tmp_path / "dest")  # re-running is safe
    assert again.returncode == 0, again.stderr
    if shutil.which("systemd-analyze"):  # the unit as systemd itself parses it
        verify = subprocess.run(["systemd-analyze", "verify", str(rendered)],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        problems = [line for line in verify.stderr.splitlines()
                    if "forged.service" in line and "user" not in line.lower()]  # fmt: skip
        serve_unit = rendered.with_name("forge-serve.service")
        verify_serve = subprocess.run(["systemd-analyze", "verify", str(serve_unit)],
                                      capture_output=True, text=True, timeout=60)  # fmt: skip
        problems += [line for line in verify_serve.stderr.splitlines()
                     if "forge-serve.service" in line and "user" not in line.lower()]  # fmt: skip
        assert verify.returncode == 0 or not problems, verify.stderr


def test_install_system_refuses_a_tree_under_home_and_a_missing_venv(tmp_path):
    bare = tmp_path / "forge"
    (bare / "daemon").mkdir(parents=True)
    shutil.copy(ROOT / "daemon" / "forged.service", bare / "daemon")
    done = install(tmp_path / "dest", bare)
    assert done.returncode == 1 and "run ./install.sh first" in done.stderr
    assert not (tmp_path / "dest").exists()  # nothing written
    home = Path("/home/forge-test-tree")
    if not Path("/home").is_dir() or home.exists():
        return
    home.mkdir()
    try:
        done = install(tmp_path / "dest", home)
        assert done.returncode == 1 and "ProtectHome" in done.stderr
    finally:
        home.rmdir()
