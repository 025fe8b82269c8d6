"""forged's /metrics: Prometheus text on loopback, from the real database at each scrape."""

from __future__ import annotations

import dataclasses
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from appliance.ops import alerts, jobs
from appliance.ops.alerts import RULES
from daemon import metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_answer_on_loopback_with_jobs_decisions_disk_and_alerts(forge_home, db):
    job, _ = jobs.enqueue(db, "train", max_attempts=1, heavy=True)
    jobs.claim(db)
    jobs.failed(db, job.id, "it broke")
    jobs.enqueue(db, "backup")
    alerts.evaluate(forge_home, db, rules={"job_failed": RULES["job_failed"]})
    port = _free_port()
    config = dataclasses.replace(forge_home, settings=forge_home.settings.model_copy(
        update={"daemon": forge_home.settings.daemon.model_copy(
            update={"metrics_port": port})}))  # fmt: skip
    server = metrics.serve(config)
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
    found = _samples(text)
    assert found[("forge_jobs", (("state", "failed"),))] == 1
    assert found[("forge_jobs", (("state", "queued"),))] == 1
    assert found[("forge_jobs_waiting_for_disk", ())] == 0
    assert found[("forge_alerts", (("rule", "job_failed"), ("state", "raised")))] == 1
    assert found[("forge_disk_free_bytes", (("path", str(config.home)),))] > 0
    assert "forge_campaign_samples" in text and "forge_gate_decisions" in text
    assert "forge_gpu_memory_used_bytes" in text


def test_metrics_are_off_by_default(forge_home):
    assert forge_home.settings.daemon.metrics_port == 0
    assert metrics.serve(forge_home) is None
