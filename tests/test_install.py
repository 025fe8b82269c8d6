"""install.sh's argument handling (the full install is what CI runs before the tests)."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT


def test_help_lists_the_options():
    proc = subprocess.run(
        ["bash", str(ROOT / "install.sh"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for option in ("--dev", "--fetch-wheels", "FORGE_CUDA"):
        assert option in proc.stdout


def test_unknown_option_is_refused_before_doing_anything():
    proc = subprocess.run(
        ["bash", str(ROOT / "install.sh"), "--frobnicate"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown option '--frobnicate'" in proc.stderr
    assert proc.stdout == ""
