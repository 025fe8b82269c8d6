"""forged leaves the GPUs `forge serve` holds (serve.gpus) to it: heavy jobs get the
others, or none at all (the CPU) when serve holds every one."""

from __future__ import annotations

from appliance.config import load_config
from appliance.resources import job_gpus
from daemon.forged import Daemon


def test_job_gpus_are_the_visible_ones_but_serves(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert job_gpus() == ["0", "1", "2"]
    assert job_gpus([1]) == ["0", "2"]
    assert job_gpus([0, 1, 2]) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert job_gpus() == []


def _daemon(forge_home, gpus: str) -> Daemon:
    path = forge_home.home / "forge.toml"
    path.write_text(path.read_text() + f"[serve]\ngpus = {gpus}\n")
    daemon = Daemon(load_config())
    daemon.db.close()
    return daemon


def test_forged_gives_heavy_jobs_only_the_gpus_serve_does_not_hold(forge_home, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    daemon = _daemon(forge_home, "[1]")
    assert daemon.job_gpus == ["0", "2"] and daemon.slots == 2
    assert daemon._gpu_env(daemon.job_gpus[1]) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert daemon.state()["serve_gpus"] == [1]


def test_when_serve_holds_every_gpu_heavy_jobs_see_none(forge_home, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    daemon = _daemon(forge_home, "[0, 1]")
    assert daemon.job_gpus == [] and daemon.slots == 1
    assert daemon._gpu_env(None) == {"CUDA_VISIBLE_DEVICES": ""}
