"""Training rows from campaign data, with their provenance.

SFT rows are the messages exactly as a stage's model saw them (from the call log) and
the answer to learn: the answer of a sample that resolved its task, or the real commit's
answer (its synthetic pair). DPO rows pair answers to the same prompt of the same task:
a resolved sample's answer (or, failing that, the real commit's, or a sample much better
aligned with the real commit) over a worse sample's. Rows never pair across tasks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections import defaultdict
from collections.abc import Callable

from appliance.config import FORGE_ROOT

GOOD = "resolved"
# infra says nothing about the answers. A tampered answer (its run rewrote what its tests
# said) is a rejected side only: never an SFT row, never chosen, not even over another.
# So is a resolved answer that edited test infrastructure (grading's flags: conftest,
# startup hooks, pytest configuration or internals): resolving that way must not be learned.
FLAGGED = "resolved_flagged"
BAD = ("failed", "not_applied", "tampered", FLAGGED)
REJECTED_ONLY = ("tampered", FLAGGED)
ALIGNMENT_MARGIN = 0.5


@functools.cache
def forge_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(FORGE_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def row_key(row: dict) -> str:
    answer = [row.get("completion")] if row["kind"] == "sft" else [row["chosen"], row["rejected"]]
    data = json.dumps([row["stage"], row["kind"], row["prompt"], *answer])
    return hashlib.sha256(data.encode()).hexdigest()


def _calls(db, ids) -> dict[int, dict]:
    ids = [i for i in ids if i is not None]
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        "SELECT id, messages, prompt, output, finish_reason, params, base_sha256, adapter "
        f"FROM model_calls WHERE id IN ({marks})",
        ids,
    ).fetchall()
    keys = ("id", "messages", "prompt", "output", "finish_reason", "params", "base", "adapter")
    return {r[0]: dict(zip(keys, r, strict=True)) for r in rows}


def _alignment_score(alignment: dict) -> float:
    parts = [alignment.get(k, {}).get("recall") for k in ("plan_files", "edit_files")]
    known = [p for p in parts if p is not None]
    return sum(known) / len(known) if known else 0.0


def candidate_rows(db, stage: str, trainable: Callable[[str | None, str], bool]) -> list[dict]:
    """Every SFT and DPO row the campaign data implies for `stage`, best sources first
    within each task (the per-task cap keeps the first ones). `trainable(split, sha)` says
    whether a commit may be trained on: eval packages and held-out commits may not."""
    triples = db.execute(
        "SELECT t.package_id, p.name, t.sha, t.sample, t.outcome, t.stages, t.alignment, "
        "p.split, t.grading FROM triples t JOIN packages p ON p.id = t.package_id "
        "WHERE p.split IS NOT 'eval' ORDER BY t.package_id, t.sha, t.sample"
    ).fetchall()
    by_task: dict[tuple, list] = defaultdict(list)
    for package_id, name, sha, sample, outcome, stages, alignment, split, grading in triples:
        if not trainable(split, sha):
            continue
        if outcome == GOOD and json.loads(grading).get("flags"):
            outcome = FLAGGED
        result = json.loads(stages).get(stage)
        if result is None or result.get("call_id") is None:
            continue
        by_task[(package_id, name, sha)].append(
            {"sample": sample, "outcome": outcome, "call_id": result["call_id"],
             "alignment": _alignment_score(json.loads(alignment))}
        )  # fmt: skip
    calls = _calls(db, [s["call_id"] for samples in by_task.values() for s in samples])
    rows = []
    for (package_id, name, sha), samples in by_task.items():
        truth = db.execute(
            "SELECT target FROM synthetic_pairs WHERE package_id = ? AND sha = ? AND stage = ?",
            [package_id, sha, stage],
        ).fetchone()
        real = json.dumps(json.loads(truth[0])) if truth else None
        rows.extend(_task_rows(stage, f"{name}@{sha}", samples, calls, real))
    return rows


def _row(stage, kind, task, call, sample, source, **answer) -> dict:
    return {
        "stage": stage,
        "kind": kind,
        "task": task,
        "source": source,
        "messages": json.loads(call["messages"]),
        "prompt": call["prompt"],
        "finish_reason": answer.pop("finish_reason", "stop"),
        **answer,
        "provenance": {
            "task": task,
            "sample": sample["sample"],
            "call_id": call["id"],
            "base_sha256": call["base"],
            "adapter": call["adapter"],
            "forge_revision": forge_revision(),
            "params": json.loads(call["params"]),
        },
    }


def _task_rows(stage, task, samples, calls, real) -> list[dict]:
    samples = [s for s in samples if s["call_id"] in calls]
    good = [s for s in samples if s["outcome"] == GOOD]
    bad = [s for s in samples if s["outcome"] in BAD]
    rows = []
    for s in good:  # what worked, as the model saw it
        call = calls[s["call_id"]]
        rows.append(
            _row(stage, "sft", task, call, s, "resolved sample", completion=call["output"],
                 finish_reason=call["finish_reason"])
        )  # fmt: skip
    if real is not None and samples:  # the real commit's answer, in a context a model saw
        first = samples[0]
        rows.append(_row(stage, "sft", task, calls[first["call_id"]], first, "real commit",
                         completion=real))  # fmt: skip
    for s in bad:
        call = calls[s["call_id"]]
        if good:
            chosen, source = calls[good[0]["call_id"]]["output"], "resolved over not resolved"
        elif real is not None:
            chosen, source = real, "real commit over sample"
        else:
            continue
        if chosen != call["output"]:
            rows.append(_row(stage, "dpo", task, call, s, source, chosen=chosen,
                             rejected=call["output"]))  # fmt: skip
    ranked = sorted(
        (s for s in bad if s["outcome"] not in REJECTED_ONLY), key=lambda s: -s["alignment"]
    )
    if not good and len(ranked) >= 2:
        top, low = ranked[0], ranked[-1]
        if top["alignment"] - low["alignment"] >= ALIGNMENT_MARGIN:
            chosen, rejected = calls[top["call_id"]]["output"], calls[low["call_id"]]["output"]
            if chosen != rejected:
                source = "better aligned sample"
                call = calls[low["call_id"]]
                rows.append(
                    _row(stage, "dpo", task, call, low, source, chosen=chosen, rejected=rejected)
                )
    return rows
