"""The sandbox limits' defaults are forge.toml's [sandbox] defaults: written once, agreeing."""

from __future__ import annotations

import dataclasses

from appliance.config import SandboxSettings
from appliance.sandbox import Limits


def test_a_default_request_has_the_limits_of_a_default_config():
    defaults = Limits()
    assert Limits.from_settings(SandboxSettings(), defaults.wall_s) == defaults
    assert (defaults.memory_mb, defaults.processes, defaults.output_bytes) == (4096, 256, 64 << 20)


def test_each_sandbox_setting_reaches_its_limit():
    """A changed setting changes the limit it names (none is dropped on the way)."""
    same = dict(memory_mb=100, processes=9, file_size_mb=2, open_files=65, tmp_mb=17,
                disk_mb=18, shm_mb=4, cpu_s=5)  # fmt: skip
    limits = Limits.from_settings(SandboxSettings(**same, output_mb=3), 30)
    assert limits == Limits(wall_s=30, output_bytes=3 << 20, **same)
    unset = {f.name for f in dataclasses.fields(Limits)} - {"wall_s"}
    assert all(getattr(limits, name) != getattr(Limits(), name) for name in unset)
    assert Limits.from_settings(SandboxSettings(), 30).cpu_s == 30  # cpu_s 0: the wall-time limit
