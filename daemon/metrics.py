"""forged's /metrics: Prometheus text on 127.0.0.1:daemon.metrics_port (0: off), made by
prometheus-client from the database and the box at each scrape (nothing is cached).

jobs by state (and those waiting for disk), campaign samples by outcome, gate decisions by
verdict, open alerts, free and total disk of FORGE_HOME, GPU memory where NVML sees GPUs."""

from __future__ import annotations

import logging
import shutil

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from appliance.campaign.store import outcome_counts
from appliance.config import Config
from appliance.evaluation.store import verdict_counts
from appliance.ops import alerts, jobs
from appliance.resources import gpus
from appliance.store import open_db

log = logging.getLogger("forged")
LOOPBACK = "127.0.0.1"


class ForgeCollector:
    """What a scrape reads (prometheus_client's custom-collector protocol)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def collect(self):
        db = open_db(self.config, migrate=False)
        try:
            yield from self._database(db)
        finally:
            db.conn.close()
        yield from self._box()

    def _database(self, db):
        family = GaugeMetricFamily("forge_jobs", "Jobs in the queue by state", labels=["state"])
        for state, n in jobs.counts(db).items():
            family.add_metric([state], n)
        yield family
        waiting = [j for j in jobs.jobs(db, ("queued",), limit=1000) if "waiting" in j.progress]
        yield GaugeMetricFamily("forge_jobs_waiting_for_disk",
                                "Queued jobs held by the disk-pressure guard",
                                value=len(waiting))  # fmt: skip
        family = CounterMetricFamily("forge_campaign_samples", "Campaign samples recorded, "
                                     "by outcome", labels=["outcome"])  # fmt: skip
        for outcome, n in sorted(outcome_counts(db).items()):
            family.add_metric([outcome], n)
        yield family
        family = CounterMetricFamily("forge_gate_decisions", "The gate's decisions, by verdict",
                                     labels=["verdict"])  # fmt: skip
        for verdict, n in sorted(verdict_counts(db).items()):
            family.add_metric([verdict], n)
        yield family
        family = GaugeMetricFamily("forge_alerts", "Open alerts", labels=["rule", "state"])
        for (rule, state), n in sorted(_open_alerts(db).items()):
            family.add_metric([rule, state], n)
        yield family

    def _box(self):
        disk = shutil.disk_usage(self.config.home)
        home = str(self.config.home)
        for name, value, text in (("free", disk.free, "Free"), ("total", disk.total, "Total")):
            family = GaugeMetricFamily(f"forge_disk_{name}_bytes", f"{text} bytes of the file "
                                       "system holding FORGE_HOME", labels=["path"])  # fmt: skip
            family.add_metric([home], value)
            yield family
        found = gpus()
        used = GaugeMetricFamily("forge_gpu_memory_used_bytes", "GPU memory in use (NVML)",
                                 labels=["gpu", "name"])  # fmt: skip
        total = GaugeMetricFamily("forge_gpu_memory_total_bytes", "GPU memory (NVML)",
                                  labels=["gpu", "name"])  # fmt: skip
        for gpu in found:
            used.add_metric([str(gpu["index"]), gpu["name"]], gpu["memory_used_bytes"])
            total.add_metric([str(gpu["index"]), gpu["name"]], gpu["memory_total_bytes"])
        yield used
        yield total


def _open_alerts(db) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for alert in alerts.alerts(db):
        counts[(alert.rule, alert.state)] = counts.get((alert.rule, alert.state), 0) + 1
    return counts


def serve(config: Config):
    """Start the endpoint when daemon.metrics_port is set; the server (for shutdown()) or
    None."""
    port = config.settings.daemon.metrics_port
    if not port:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ForgeCollector(config))
    server, _thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    log.info("metrics on http://%s:%d/metrics", LOOPBACK, port)
    return server
