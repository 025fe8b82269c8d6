"""Benchmark: what `forge serve` costs over the model pool called directly.

    .venv/bin/python bench/serve_bench.py [--tokens N] [--repeat K] [--json] [--check]

`forge serve --port 0` runs as its own process, as it is deployed (the real SmolLM2 from
models.toml, a temporary FORGE_HOME); this process is its client and also holds a
`ModelPool` of the same models.toml, logging to the same call log. For each of a few
prompts, K times, the same greedy completion is made twice, taking turns which goes
first (never both at once): through HTTP with streaming (a plain http.client reading the
server-sent events, the usage from `stream_options.include_usage`) and through the pool
called directly (its text taken with `on_text`, as the server does). Each call evaluates
its prompt from an empty cache (a seed is given).

Printed: tokens/s of each (the medians of the runs; goal: HTTP ≥ 0.9× direct), and the
time to the first token of each, with what HTTP adds to it at p50 and p95 (per pair of
runs). Both answers are checked to be the same text. The load average at the start and
the end is printed: on a shared machine the absolute speeds drift, the ratios hold better.
Exit 0 whatever the results, unless --check is given: then 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from _report import positive as _positive
from _report import progress as _progress
from _report import ratio as _ratio
from _report import seconds as _seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RATIO_GOAL = 0.9
MODEL = "coder"
PROMPTS = (
    "def fibonacci(n):",
    "The three laws of thermodynamics are",
    "import json\n\ndef load_config(path):",
    "class Stack:\n    def __init__(self):",
)


@dataclass(frozen=True)
class Run:
    way: str  # "http" or "direct"
    tokens: int
    seconds: float
    first_token_s: float
    text: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def over_http(url: str, prompt: str, tokens: int) -> Run:
    where = urlsplit(url)
    asked = {"model": MODEL, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "seed": 0,
             "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    body = json.dumps(asked)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=600)
    started = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    first, text, usage = None, [], None
    for line in answer:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices", []):
            if choice["text"]:
                first = first or time.perf_counter()
                text.append(choice["text"])
    ended = time.perf_counter()
    conn.close()
    return Run("http", usage["completion_tokens"], ended - started, first - started, "".join(text))


def direct(pool, prompt: str, tokens: int) -> Run:
    first: list[float] = []

    def on_text(_: str) -> None:
        if not first:
            first.append(time.perf_counter())

    started = time.perf_counter()
    done = pool.complete(MODEL, prompt, max_tokens=tokens, temperature=0, top_k=0, top_p=1.0,
                         seed=0, on_text=on_text)  # fmt: skip
    ended = time.perf_counter()
    return Run("direct", done.completion_tokens, ended - started, first[0] - started, done.text)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_server(home: str) -> tuple[subprocess.Popen, str]:
    """`forge serve --port 0` in its own process; (it, its base URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--port", "0"], cwd=ROOT,
                            env={**os.environ, "FORGE_HOME": home}, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    found = re.search(r"listening on (\S+/v1)", proc.stdout.readline())
    if not found:
        proc.kill()
        raise SystemExit("forge serve did not start")
    return proc, found[1]


def measure(home: str, tokens: int, repeat: int) -> dict:
    from appliance.config import load_config
    from appliance.models.manifest import read_manifest
    from appliance.serving.calllog import CallLog
    from appliance.serving.pool import ModelPool

    config = load_config()
    config.ensure_dirs()
    proc, url = start_server(home)
    pool = ModelPool(read_manifest(config.models_manifest), log=CallLog(config.db_path))
    pairs: list[tuple[Run, Run]] = []
    try:
        over_http(url, PROMPTS[0], 8)  # warm-up: the first request's own costs
        direct(pool, PROMPTS[0], 8)
        for k in range(repeat):
            for i, prompt in enumerate(PROMPTS):
                _progress(f"run {k + 1}/{repeat}, prompt {i + 1}/{len(PROMPTS)}")
                if (k + i) % 2:
                    pool_run = direct(pool, prompt, tokens)
                    http_run = over_http(url, prompt, tokens)
                else:
                    http_run = over_http(url, prompt, tokens)
                    pool_run = direct(pool, prompt, tokens)
                if http_run.text != pool_run.text:
                    raise SystemExit(f"the answers differ for {prompt!r}")
                pairs.append((http_run, pool_run))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        pool.close()
    http_tps = statistics.median(h.tokens_per_s for h, _ in pairs)
    direct_tps = statistics.median(d.tokens_per_s for _, d in pairs)
    added = [h.first_token_s - d.first_token_s for h, d in pairs]
    return {
        "runs": len(pairs),
        "tokens_per_run": statistics.median(h.tokens for h, _ in pairs),
        "http_tokens_per_s": http_tps,
        "direct_tokens_per_s": direct_tps,
        "ratio": http_tps / direct_tps,
        "pair_ratio_p50": statistics.median(h.tokens_per_s / d.tokens_per_s for h, d in pairs),
        "http_first_token_s_p50": _quantile([h.first_token_s for h, _ in pairs], 0.5),
        "direct_first_token_s_p50": _quantile([d.first_token_s for _, d in pairs], 0.5),
        "added_first_token_s_p50": _quantile(added, 0.5),
        "added_first_token_s_p95": _quantile(added, 0.95),
        "pairs": [[asdict(h), asdict(d)] for h, d in pairs],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=_positive, default=128, help="max_tokens per run")
    parser.add_argument("--repeat", type=_positive, default=3, help="rounds over the prompts")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as home:
        os.environ["FORGE_HOME"] = home
        os.environ.pop("FORGE_CONFIG", None)
        results = measure(home, args.tokens, args.repeat)
    results |= {"load_before": load_before, "load_after": os.getloadavg(), "goal": RATIO_GOAL,
                "cpus": os.cpu_count(), "machine": platform.machine()}  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"forge serve vs the pool called directly: {results['runs']} runs of "
              f"{results['tokens_per_run']:.0f} tokens (greedy, {MODEL}), {results['cpus']} CPUs, "
              f"load {load_before[0]:.2f} → {results['load_after'][0]:.2f}")  # fmt: skip
        print(f"  tokens/s  HTTP streaming {results['http_tokens_per_s']:.1f}, direct "
              f"{results['direct_tokens_per_s']:.1f}: {_ratio(results['ratio'])} "
              f"(goal ≥ {RATIO_GOAL}×; run by run: p50 "
              f"{_ratio(results['pair_ratio_p50'])})")  # fmt: skip
        print(f"  first token  HTTP {_seconds(results['http_first_token_s_p50'])}, direct "
              f"{_seconds(results['direct_first_token_s_p50'])} (p50); HTTP adds "
              f"{_seconds(results['added_first_token_s_p50'])} at p50, "
              f"{_seconds(results['added_first_token_s_p95'])} at p95")  # fmt: skip
    return 1 if args.check and results["ratio"] < RATIO_GOAL else 0


if __name__ == "__main__":
    raise SystemExit(main())
