"""`forge teacher run` (the connected side): a stronger model answers Forge's own stage
prompts on a repo package's train commits, the harness grades its edits, and what it got
right (and the pairs its samples imply) becomes a data package for the air-gapped box.

Everything the student would see is made by Forge's own code: the index of the commit's
parent, `ContextBuilder` sized by the student's tokenizer and window, `run_pipeline`
with the campaign's settings (`campaign.max_tokens` and `context_tokens` size the
prompts; the teacher answers within `max_tokens` of its own). Only the model calls go
to the endpoint (`endpoint.Teacher`). Each sample's edits are graded by the harness in
the sandbox against the commit's FAIL_TO_PASS and PASS_TO_PASS, as a campaign grades.

A unit is (commit, sample). Its prompts, answers and verdict are written to the run's
state (`state.RunState`, in the output folder) as it ends, so a run started again skips
what is done; the data package is made from the state alone, at the end of every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from appliance import index
from appliance.clock import now_iso
from appliance.config import STAGES, Config
from appliance.datapackages.format import DataManifest
from appliance.datapackages.write import write_data_package
from appliance.datasets.versions import rows_made_from
from appliance.errors import UsageError
from appliance.harness.grading import GoldResult, grade_patch
from appliance.harness.results import gold_for
from appliance.harness.spec import CommitSpec, package_specs
from appliance.packages.corpus import RepoPackage, find_package
from appliance.packages.ingest import DATA_KIND, declared_kind, ingest
from appliance.packages.split import Holdout
from appliance.serving.pool import ModelPool
from appliance.stages import STAGE_ROLES
from appliance.stages.context import ContextBuilder
from appliance.stages.pipeline import StageSettings, run_pipeline
from appliance.store import open_db
from appliance.teacher.endpoint import PromptRefused, RateLimit, Teacher, api_key, public_url
from appliance.teacher.state import RunState

GENERATOR = "forge teacher run"
RESOLVED = "resolved"
# A sample whose answer lost: a resolved sample's answer to the same prompt is preferred.
# ("infra" and "refused" say nothing of the answer.)
LOST = ("failed", "not_applied", "tampered")
_NAME = re.compile(r"[^a-z0-9._-]+")

Event = Callable[[str, dict], None]


@dataclass(frozen=True)
class TeacherOptions:
    endpoint: str
    model: str
    license: str
    api_key_env: str = "OPENAI_API_KEY"
    commits: int | None = None
    samples: int | None = None  # None: campaign.samples
    concurrency: int = 1
    rate: float = 0.0  # requests a minute; 0: no limit
    max_tokens: int = 2048  # the teacher's answer, per stage
    name: str | None = None  # the data package's; default PACKAGE-teacher
    version: str | None = None  # default: the time it is written
    retries: int = 2
    timeout_s: float = 600


@dataclass
class TeacherReport:
    package: str
    model: str
    out: str
    commits: list[str] = field(default_factory=list)
    skipped: int = 0  # samples already in the state
    ran: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # over every sample in the state
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> kind -> n
    data_package: str | None = None
    calls: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_package(config: Config, db: sqlite_utils.Database, given: str) -> RepoPackage:
    """PACKAGE as `forge teacher run` takes it: a repo package folder (ingested into this
    FORGE_HOME first, left in place; nothing happens when it is already here) or the name
    of an ingested one (NAME, NAME@VERSION)."""
    path = Path(given)
    if not path.is_dir():
        return find_package(db, given)
    if declared_kind(path) == DATA_KIND:
        raise UsageError(f"{given} is a data package", "give a repo package (its folder or name)")
    if not (path / "manifest.json").is_file():
        raise UsageError(
            f"{given} is a folder but no repo package (it has no manifest.json)",
            "give a repo package made by forge package build, or an ingested package's name",
        )
    results = ingest(
        config, db, path, keep=True, trained_rows=functools.partial(rows_made_from, db)
    )
    last = results[-1] if results else None
    if last is None or last.outcome not in ("accepted", "duplicate") or not last.name:
        said = "; ".join(last.reasons) if last else "nothing was ingested"
        raise UsageError(
            f"the repo package {given} cannot be ingested ({last.outcome if last else '?'}): "
            f"{said}",
            "forge package validate DIR says what is wrong",
        )
    return find_package(db, f"{last.name}@{last.version}")


def train_commits(
    config: Config, db, package: RepoPackage, commits: int | None, on_event: Event
) -> list[tuple[CommitSpec, GoldResult]]:
    """The first `commits` usable train commits, as a campaign plans them: never an eval
    package's, never one held out for evaluation; graded by the harness first."""
    if package.split == "eval":
        raise UsageError(
            f"{package.label} is an eval package: no model may learn from its commits",
            "run the teacher on a train package",
        )
    holdout = Holdout.of(config, db)
    usable = []
    for spec in package_specs(config, db, package):
        if not holdout.trainable(package.name, package.split, spec.sha):
            continue  # held out for evaluation: no row may be about it
        on_event("gold", {"sha": spec.sha})
        gold, _ = gold_for(config, db, spec)
        if gold.usable:
            usable.append((spec, gold))
        if commits is not None and len(usable) >= commits:
            break
    return usable


def _seed(sha: str, sample: int) -> int:
    return int(hashlib.sha256(f"{sha}:{sample}".encode()).hexdigest()[:8], 16)


class _Samples:
    """Runs one sample; called from several threads, each sample with a database
    connection of its own (a connection belongs to the thread that opened it)."""

    def __init__(self, config: Config, teacher: Teacher, settings: StageSettings) -> None:
        self.config = config
        self.teacher = teacher
        self.settings = settings

    def __call__(self, spec: CommitSpec, gold: GoldResult, snapshot, sample: int,
                 temperature: float) -> dict:  # fmt: skip
        db = open_db(self.config, migrate=False)
        try:
            return self._sample(db, spec, gold, snapshot, sample, temperature)
        finally:
            db.close()

    def _sample(self, db, spec: CommitSpec, gold: GoldResult, snapshot, sample: int,
                temperature: float) -> dict:  # fmt: skip
        started = time.monotonic()
        session = self.teacher.session()
        builder = ContextBuilder(
            db, snapshot, lambda text: self.teacher.count_tokens(STAGE_ROLES["scope"], text)
        )
        settings = StageSettings(
            temperature=temperature, seed=_seed(spec.sha, sample),
            max_tokens=self.settings.max_tokens, context_tokens=self.settings.context_tokens,
        )  # fmt: skip
        record = {"sha": spec.sha, "sample": sample, "temperature": temperature,
                  "seed": settings.seed, "stages": []}  # fmt: skip
        try:
            result = run_pipeline(session, builder, spec.message, settings=settings)
        except PromptRefused as exc:
            return record | {"outcome": "refused", "reason": exc.message,
                             "seconds": round(time.monotonic() - started, 3)}  # fmt: skip
        if len(session.calls) != len(result.stages):
            raise AssertionError("one teacher call per stage")
        for (stage, got), call in zip(result.stages.items(), session.calls, strict=True):
            record["stages"].append({
                "stage": stage, "messages": call.messages, "answer": call.text,
                "finish_reason": call.finish_reason, "error": got.error,
            })  # fmt: skip
        if not result.edits:
            code = result.stages.get("code")
            why = f" ({code.error})" if code is not None and code.error else ""
            outcome, reason = "not_applied", f"the code stage gave no edits{why}"
        else:
            verdict = grade_patch(self.config, spec, gold, "search_replace", result.edits)
            outcome, reason = verdict.verdict, verdict.reason
        return record | {"outcome": outcome, "reason": reason,
                         "seconds": round(time.monotonic() - started, 3)}  # fmt: skip


def teacher_run(
    config: Config,
    db: sqlite_utils.Database,
    given: str,
    out: Path,
    options: TeacherOptions,
    *,
    student: ModelPool | None = None,
    on_event: Event | None = None,
) -> TeacherReport:
    """Run the teacher on PACKAGE's train commits into `out` (resuming what is there) and
    write the data package from the run's state. `on_event(kind, info)`: "gold", "commit",
    "planned", "sample" (a finished sample's record), "written"."""
    tell = on_event or (lambda kind, info: None)
    if options.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    key = api_key(options.api_key_env)  # before any work: a missing key is a usage error
    package = resolve_package(config, db, given)
    campaign = config.settings.campaign
    samples = options.samples or campaign.samples
    identity = {
        "package": package.label,
        "manifest_sha256": package.manifest_sha256,
        "model": options.model,
        "max_tokens": campaign.max_tokens,
        "context_tokens": campaign.context_tokens,
    }
    state = RunState.open(Path(out), identity)
    state.identity = identity | {"endpoint": public_url(options.endpoint)}
    own_student = student is None
    student = student or ModelPool.from_config(config, log=False)
    teacher = Teacher(
        options.endpoint, options.model, key, student, max_tokens=options.max_tokens,
        rate=RateLimit(options.rate), timeout_s=options.timeout_s, retries=options.retries,
    )  # fmt: skip
    report = TeacherReport(package.label, options.model, str(out))
    try:
        teacher.check()
        _run(config, db, package, state, teacher, options, samples, report, tell)
    finally:
        report.calls = teacher.calls
        if own_student:
            student.close()
    _write(package, state, options, report, tell)
    return report


def _run(config, db, package, state: RunState, teacher: Teacher, options: TeacherOptions,
         samples: int, report: TeacherReport, tell: Event) -> None:  # fmt: skip
    campaign = config.settings.campaign
    temps = campaign.temperatures
    settings = StageSettings(max_tokens=campaign.max_tokens, context_tokens=campaign.context_tokens)
    work = _Samples(config, teacher, settings)
    commits = train_commits(config, db, package, options.commits, tell)
    report.commits = [spec.sha for spec, _ in commits]
    todo = [(spec, i) for spec, _ in commits for i in range(samples)
            if not state.done(spec.sha, i)]  # fmt: skip
    report.skipped = len(commits) * samples - len(todo)
    tell("planned", {"commits": len(commits), "samples": len(todo), "skipped": report.skipped})
    pending: set[Future] = set()
    pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="teacher")

    def collect(block: bool) -> None:
        if not pending:
            return
        done, rest = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        pending.intersection_update(rest)
        failed = [f.exception() for f in done if f.exception() is not None]
        for future in done:
            if future.exception() is None:
                state.record(future.result())
                report.ran += 1
                tell("sample", future.result())
        if failed:
            raise failed[0]  # an endpoint error ends the run (what finished is kept)

    try:
        for spec, gold in commits:
            mine = [i for s, i in todo if s.sha == spec.sha]
            if not mine:
                continue
            tell("commit", {"sha": spec.sha, "message": spec.message.splitlines()[0]})
            snapshot = index.index_commit(db, spec.repo, spec.parent, package_id=spec.package_id)
            for i in mine:
                while len(pending) >= options.concurrency:
                    collect(block=True)
                pending.add(pool.submit(work, spec, gold, snapshot, i, temps[i % len(temps)]))
            collect(block=False)
        while pending:
            collect(block=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future in pending:  # stopped early: keep what finished meanwhile
            if future.done() and not future.cancelled() and future.exception() is None:
                state.record(future.result())


def rows_of(package_name: str, state: RunState) -> dict[str, list[dict]]:
    """The data package's rows from the run's samples: SFT, every usable stage answer of
    each resolved sample; DPO, per stage and prompt, each resolved sample's answer over
    each different answer of a sample that failed. Each row names the package and commit."""
    rows: dict[str, list[dict]] = {stage: [] for stage in STAGES}
    seen: set[tuple] = set()
    by_prompt: dict[tuple, dict] = {}
    for key in sorted(state.samples):
        sample = state.samples[key]
        outcome = sample.get("outcome")
        for stage in sample.get("stages", []):
            if stage["error"] is not None:
                continue  # not an answer (unparsable): nothing to learn or compare
            prompt = (stage["stage"], sample["sha"], json.dumps(stage["messages"]))
            entry = by_prompt.setdefault(prompt, {"won": [], "lost": []})
            if outcome == RESOLVED:
                entry["won"].append(stage)
            elif outcome in LOST:
                entry["lost"].append(stage)
    for (stage, sha, _), entry in by_prompt.items():
        about = {"package": package_name, "commit": sha}
        for won in entry["won"]:
            sft = {"kind": "sft", **about, "source": "teacher resolved sample",
                   "messages": won["messages"], "completion": won["answer"],
                   "finish_reason": won["finish_reason"]}  # fmt: skip
            mark = ("sft", stage, json.dumps(sft, sort_keys=True))
            if mark not in seen:
                seen.add(mark)
                rows[stage].append(sft)
            for lost in entry["lost"]:
                if lost["answer"] == won["answer"]:
                    continue
                dpo = {"kind": "dpo", **about, "source": "teacher resolved over failed sample",
                       "messages": won["messages"], "chosen": won["answer"],
                       "rejected": lost["answer"]}  # fmt: skip
                mark = ("dpo", stage, json.dumps(dpo, sort_keys=True))
                if mark not in seen:
                    seen.add(mark)
                    rows[stage].append(dpo)
    return {stage: found for stage, found in rows.items() if found}


def _package_name(given: str | None, package: RepoPackage) -> str:
    if given:
        return given
    return (_NAME.sub("-", package.name.lower()).strip("-._")[:55] or "package") + "-teacher"


def _write(package: RepoPackage, state: RunState, options: TeacherOptions,
           report: TeacherReport, tell: Event) -> None:  # fmt: skip
    """The data package of every sample in the state, into OUT/NAME-VERSION (the one an
    earlier run wrote there is replaced)."""
    counts = Counter(s.get("outcome", "?") for s in state.samples.values())
    report.outcomes = dict(sorted(counts.items()))
    rows = rows_of(package.name, state)
    report.rows = {
        stage: dict(sorted(Counter(r["kind"] for r in found).items()))
        for stage, found in rows.items()
    }
    if not rows:
        report.note = (
            "no sample resolved: no rows, so no data package was written"
            if state.samples
            else f"no usable train commit in {package.label}: nothing was asked"
        )
        return
    version = options.version or datetime.now(UTC).strftime("%Y%m%d.%H%M%S")
    name = _package_name(options.name, package)
    target = state.folder / f"{name}-{version}"
    if target.exists() and target.name != state.written:
        raise UsageError(f"{target} exists already", "give another --version")
    fresh = state.folder / f".{target.name}.new"
    shutil.rmtree(fresh, ignore_errors=True)
    written: DataManifest = write_data_package(
        fresh,
        {
            "name": name,
            "version": version,
            "description": f"teacher {options.model} on {package.label}: "
            + ", ".join(f"{n} {k}" for k, n in report.outcomes.items()),
            "source": {
                "generator": GENERATOR,
                "model": options.model,
                "license": options.license,
                "created": now_iso(),
            },  # fmt: skip
        },
        rows,
    )
    earlier = state.written
    shutil.rmtree(target, ignore_errors=True)  # only ever the package this run wrote before
    os.rename(fresh, target)
    state.written = target.name
    state.save()
    if earlier and earlier != target.name and "/" not in earlier:
        shutil.rmtree(state.folder / earlier, ignore_errors=True)
    report.data_package = str(target)
    tell("written", {"path": str(target), "label": written.label})
