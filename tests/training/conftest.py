"""Training helpers shared by the tests that train a real adapter."""

from __future__ import annotations

from pathlib import Path

from appliance.serving.pool import Adapter, ModelPool


def logprobs_without_and_with(config, row, name: str, path: Path) -> tuple:
    """The reasoning base's last-token logprobs over `row`'s prompt and the first tokens of
    its completion, without an adapter and with adapter `name` at `path` (real llama.cpp)."""
    pool = ModelPool.from_config(config, log=False)
    base = pool.base_for("reasoning")
    try:
        with base.lock:
            prompt, has_bos = base.render(row.messages)
            tokens = base.tokenize(prompt, has_bos) + base.tokenize(row.completion)[:8]
            base.use(None)
            plain = base.last_logprobs(tokens)
            base.use(Adapter(name, path))
            return plain, base.last_logprobs(tokens)
    finally:
        pool.close()
