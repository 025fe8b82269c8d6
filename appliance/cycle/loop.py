"""One cycle, top to bottom: ingest → campaign on new train commits → datasets → train
candidates for the stages with enough new data → evaluate → promote or reject → report.

Every step is idempotent, so an interrupted cycle run again picks up where it stopped:
ingest recognises packages it has, campaign units already recorded are skipped, a
dataset version is made only from new rows, a stage is not trained twice on one dataset
version (and a killed training run resumes from its checkpoints), a finished evaluation
run is reused, and a candidate that was already decided is not decided again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance import registry
from appliance.campaign.run import run_campaign
from appliance.clock import now_iso
from appliance.config import Config
from appliance.datapackages.take import take_data_package
from appliance.datasets.versions import build, latest, rows_made_from
from appliance.errors import ForgeError
from appliance.evaluation.compare import evaluate_many, head_to_head
from appliance.packages import corpus
from appliance.packages.ingest import ingest
from appliance.records import as_json
from appliance.training.job import train_stage

STEPS = ("ingest", "campaign", "datasets", "train", "evaluate")


@dataclass(frozen=True)
class Step:
    """What one step of the cycle did: its status, what it reports, how long it took."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    detail: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class CycleReport:
    """The steps that ran, the gate's decisions, and where the report was saved."""

    started_at: str
    steps: tuple[Step, ...] = ()
    decisions: tuple[dict, ...] = ()  # each as the cycle report's JSON shows it
    path: str = ""

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    def to_dict(self) -> dict:
        return as_json(self, "started_at", "ok", "steps", "decisions", report=self.path)


class Progress:
    """What the loop tells whoever shows it (the CLI's progress bars; the daemon's log)."""

    def step(self, name: str, text: str) -> None: ...
    def advance(self, name: str, done: int, total: int, text: str = "") -> None: ...
    def done(self, step: Step) -> None: ...
    def workers(self, busy: dict[str, str]) -> None:
        """What each device's worker does now ({device: text, "" when idle}), when a
        campaign or an evaluation is spread over devices."""


def run_cycle(
    config: Config,
    db,
    *,
    source: Path | None = None,
    keep: bool = False,
    commits: int | None = None,
    progress: Progress | None = None,
    only: tuple[str, ...] | None = None,
    resume: dict[str, dict] | None = None,
) -> CycleReport:
    """The whole loop, or with `only` just those steps (the daemon's campaign, train and
    evaluate jobs are parts of it: the same idempotent steps). `resume` holds the steps
    an interrupted run of the same job finished (name → Step fields): they are not run
    again, so a cycle killed while training resumes that training rather than starting a
    campaign on the next commit first."""
    unknown = set(only or ()) - set(STEPS)
    if unknown:
        raise ForgeError(f"unknown cycle steps: {sorted(unknown)}; the steps: {', '.join(STEPS)}")
    progress = progress or Progress()
    started_at = now_iso()
    settings = config.settings.cycle
    commits = commits if commits is not None else (settings.commits or None)
    steps: list[Step] = []
    decisions: list[dict] = []  # _evaluate adds the gate's decisions as it acts on them

    def step(name: str, fn: Callable[[], Step]) -> None:
        if only is not None and name not in only:
            return
        if resume and name in resume:
            steps.append(Step(**resume[name]))
            return
        progress.step(name, name)
        clock = time.monotonic()
        try:
            done = fn()
        except ForgeError as exc:  # the later steps still run on what exists
            done = Step(name, "failed", {"error": exc.message, "hint": exc.hint})
        done = dataclasses.replace(done, seconds=round(time.monotonic() - clock, 1))
        steps.append(done)
        progress.done(done)

    step("ingest", lambda: _ingest(config, db, source, keep))
    step("campaign", lambda: _campaign(config, db, commits, progress))
    step("datasets", lambda: _datasets(config, db))
    step("train", lambda: _train(config, db, progress))
    step("evaluate", lambda: _evaluate(config, db, progress, decisions))
    return _save(config, CycleReport(started_at, tuple(steps), tuple(decisions)))


def _ingest(config: Config, db, source: Path | None, keep: bool) -> Step:
    trained_rows = functools.partial(rows_made_from, db)
    take_data = functools.partial(take_data_package, config, db)
    results = ingest(config, db, source, keep=keep, trained_rows=trained_rows, take_data=take_data)
    detail: dict = dict(Counter(r.outcome for r in results))
    detail["packages"] = [f"{r.name or r.source}: {r.outcome}" for r in results]
    if "rejected" not in detail:
        return Step("ingest", "ok", detail)
    detail["error"] = "some packages were rejected (see forge status and quarantine/)"
    return Step("ingest", "failed", detail)


def _campaign(config: Config, db, commits: int | None, progress: Progress) -> Step:
    outcomes: Counter = Counter()
    packages = corpus.names(db, include_eval=False)
    for package in packages:
        planned = {"n": 0}

        def on_planned(units, usable, planned=planned):
            planned["n"] = len(units)

        results = run_campaign(config, db, package, commits=commits, on_planned=on_planned,
                               new=True, on_workers=progress.workers)  # fmt: skip
        for i, result in enumerate(results, 1):
            outcomes[result.outcome] += 1
            progress.advance("campaign", i, planned["n"], f"{package}: {result.outcome}")
    detail = {"packages": packages, "units": sum(outcomes.values()), **outcomes}
    if not outcomes:
        return Step("campaign", "skipped", detail | {"why": "no new train commits"})
    return Step("campaign", "ok", detail)


def _datasets(config: Config, db) -> Step:
    """A new SFT and a new DPO version of each stage, where there are new rows."""
    made = []
    for stage in config.settings.cycle.stages:
        for kind in ("sft", "dpo"):
            version = build(config, db, stage, kind)
            if version is not None:
                made.append({"name": version.name, "kind": kind, "rows": version.rows,
                             "new_rows": version.new_rows, "status": version.status,
                             "reasons": version.reasons})  # fmt: skip
    if not made:
        return Step("datasets", "skipped", {"versions": made, "why": "no new rows"})
    return Step("datasets", "ok", {"versions": made})


def _train(config: Config, db, progress: Progress) -> Step:
    """Train each stage whose latest SFT dataset passed its gates, was not trained on yet,
    and brought at least `cycle.min_new_rows` new rows; then DPO on top of the stage's
    newest SFT candidate (see _dpo_why_not)."""
    trained, passed, failed = [], [], []
    stages = config.settings.cycle.stages
    for stage in stages:
        progress.advance("train", len(trained), len(stages), f"{stage}: sft")
        why = _sft_why_not(config, db, stage)
        if why:
            passed.append({"stage": stage, "kind": "sft", "why": why})
        else:
            trained.append(_trained(train_stage(config, db, stage)))
        sft = _newest_candidate(db, stage, "sft")
        why = _dpo_why_not(config, db, stage, sft)
        if why:
            passed.append({"stage": stage, "kind": "dpo", "why": why})
            continue
        progress.advance("train", len(trained), len(stages), f"{stage}: dpo on {sft.name}")
        try:  # the SFT candidate stands whatever happens to the DPO run built on it
            steps = config.settings.cycle.dpo_max_steps or None
            adapter = train_stage(config, db, stage, dpo=True, on=sft.version, max_steps=steps)
        except ForgeError as exc:
            failed.append({"stage": stage, "kind": "dpo", "built_on": sft.name,
                           "error": exc.message})  # fmt: skip
            continue
        trained.append(_trained(adapter))
    detail = {"trained": trained, "not_trained": passed}
    if failed:
        errors = "; ".join(f"{f['stage']} dpo on {f['built_on']}: {f['error']}" for f in failed)
        return Step("train", "failed", detail | {"failed": failed, "error": errors})
    return Step("train", "ok" if trained else "skipped", detail)


def _trained(adapter: registry.AdapterVersion) -> dict:
    """A candidate as the train step reports it (the SFT and DPO ones alike)."""
    m = adapter.metrics
    return {"stage": adapter.stage, "kind": adapter.kind, "adapter": adapter.name,
            "dataset": adapter.dataset, "steps": m["steps"], "final_loss": m["final_loss"],
            "built_on": m.get("built_on")}  # fmt: skip


def _sft_why_not(config: Config, db, stage: str) -> str | None:
    dataset = latest(db, stage, "sft")
    min_new = config.settings.cycle.min_new_rows
    if dataset is None:
        return "no dataset"
    if any(a.dataset == dataset.name for a in registry.adapters(db, stage)):
        return f"{dataset.name} already trained"
    if dataset.status != "ok":
        return f"{dataset.name} failed its quality gates: " + "; ".join(dataset.reasons)
    if dataset.new_rows < min_new:
        return f"{dataset.name} has {dataset.new_rows} new rows (< {min_new})"
    return None


def _newest_candidate(db, stage: str, kind: str) -> registry.AdapterVersion | None:
    waiting = [a for a in registry.adapters(db, stage)
               if a.status == "candidate" and a.kind == kind]  # fmt: skip
    return waiting[-1] if waiting else None


def _dpo_why_not(config: Config, db, stage: str, sft) -> str | None:
    """Why DPO is not trained on `sft` (the stage's newest SFT candidate), or None: it is
    when the stage's newest DPO version passed its gates with `cycle.min_dpo_pairs` pairs
    and no DPO candidate is built on `sft` yet (a run killed half-way is not one yet: it
    resumes from its checkpoints)."""
    dataset = latest(db, stage, "dpo")
    settings = config.settings.cycle
    min_pairs = settings.min_dpo_pairs
    if settings.dpo_stages is not None and stage not in settings.dpo_stages:
        return f"not in cycle.dpo_stages ({', '.join(settings.dpo_stages) or 'none'})"
    if sft is None:
        return "no SFT candidate to build on"
    if dataset is None:
        return "no DPO dataset"
    done = [a for a in registry.adapters(db, stage)
            if a.kind == "dpo" and a.metrics.get("built_on") == sft.name]  # fmt: skip
    if done:
        return f"{done[-1].name} is already DPO on {sft.name}"
    if dataset.status != "ok":
        return f"{dataset.name} failed its quality gates: " + "; ".join(dataset.reasons)
    if dataset.rows < min_pairs:
        return f"{dataset.name} has {dataset.rows} pairs (< cycle.min_dpo_pairs {min_pairs})"
    return None


def _evaluate(config: Config, db, progress: Progress, decisions: list[dict]) -> Step:
    """Decide every candidate still undecided (this cycle's, or one an interrupted cycle
    trained), all stages together, then promote or reject each (added to `decisions` as
    it is done, so a failure half-way still reports what was decided).

    Per stage that is the newest candidate and, when it is DPO built on an SFT version
    still waiting, that SFT candidate too: both against the active version on the same
    examples, and at most one promoted (_choose)."""
    waiting: dict[str, list[registry.AdapterVersion]] = {}
    for stage in config.settings.cycle.stages:
        newest = registry.newest_candidate(db, stage)  # older ones stay candidates
        if newest is None:
            continue
        waiting[stage] = [newest]
        under = _built_on(db, newest)
        if under is not None and under.status == "candidate":
            waiting[stage].insert(0, under)
    if not waiting:
        return Step("evaluate", "skipped", {"why": "no candidate to evaluate"})

    def on_progress(stage, arm, i, n):
        progress.advance("evaluate", i, n, f"{stage}: {arm}")

    asked = [(stage, v.version) for stage, found in waiting.items() for v in found]
    evaluations = evaluate_many(
        config, db, asked, on_progress=on_progress, on_workers=progress.workers
    )
    n = len(evaluations)
    progress.advance("evaluate", n, n, "deciding: promote or reject")
    by_stage: dict[str, list] = {}
    for (stage, _), ev in zip(asked, evaluations, strict=True):
        version = next(v for v in waiting[stage] if v.name == ev.candidate)
        by_stage.setdefault(stage, []).append((version, ev))
    # The decisions are stored, the registry not yet changed. Each promote or reject is one
    # transaction: one killed before its commit leaves the candidate for the next run.
    for stage, judged in by_stage.items():
        for version, ev, action, why in _choose(config, db, judged):
            if action == "promoted":
                registry.promote(db, stage, version.version, decision_id=ev.decision_id,
                                 note=why["note"])  # fmt: skip
            elif action == "rejected":
                registry.reject(db, stage, version.version, decision_id=_why_id(ev, why),
                                note=why["note"])  # fmt: skip
            else:
                action = "kept as a candidate (insufficient evidence)"
            decisions.append({"stage": ev.stage, "candidate": ev.candidate,
                              "baseline": ev.baseline, "action": action,
                              "decision_id": ev.decision_id, **_candidate_facts(version),
                              **ev.report(), "why": why["note"],
                              "versus": why["versus"]})  # fmt: skip
    return Step(
        "evaluate", "ok", {"decided": [f"{d['candidate']}: {d['action']}" for d in decisions]}
    )


def _built_on(db, version: registry.AdapterVersion) -> registry.AdapterVersion | None:
    """The SFT version a DPO version was trained on top of (None: the base, or SFT)."""
    name = version.metrics.get("built_on") if version.kind == "dpo" else None
    if not name or name == "base":
        return None
    return registry.get(db, version.stage, int(name.rsplit("-v", 1)[1]))


def _choose(config: Config, db, judged: list) -> list[tuple]:
    """(version, evaluation, action, why) for each candidate of one stage, each judged
    against the active version. Alone, a candidate is promoted, rejected or kept as the
    gate said. With two (an SFT candidate and DPO built on it), at most one is promoted:
    the one the gate promotes; when it promotes both, the DPO one only if the gate,
    comparing it with the SFT one on the same tasks, would promote it over that (else
    the SFT one: DPO must earn its place over what it was built on). The other is
    rejected when the gate rejected it or it lost that comparison, and stays a candidate
    when the gate found too few tasks to say."""
    promoting = [(v, ev) for v, ev in judged if ev.decision.verdict == "promote"]
    winner, versus = None, None
    if len(promoting) == 1:
        winner = promoting[0][0]
    elif len(promoting) == 2:
        (sft, sft_ev), (dpo, dpo_ev) = sorted(promoting, key=lambda p: p[0].kind != "sft")
        match = head_to_head(config, db, dpo_ev, sft_ev)
        winner = dpo if match.decision.verdict == "promote" else sft
        versus = {"candidate": dpo.name, "baseline": sft.name, "decision_id": match.decision_id,
                  "verdict": match.decision.verdict, "reasons": list(match.decision.reasons),
                  "winner": winner.name}  # fmt: skip
    out = []
    for version, ev in judged:
        verdict = ev.decision.verdict
        why: dict = {"note": "", "versus": versus}
        if winner is not None and version.name == winner.name:
            others = [v.name for v, _ in judged if v.name != version.name]
            if others:
                why["note"] = f"the gate's choice over {', '.join(others)}"
            out.append((version, ev, "promoted", why))
        elif verdict == "promote":  # promoted by the gate too, but lost to the winner
            why["note"] = (f"the gate promoted it over {ev.baseline}, but {winner.name} "
                           f"was chosen: {versus['candidate']} vs {versus['baseline']} "
                           f"was {versus['verdict']}")  # fmt: skip
            out.append((version, ev, "rejected", why))
        elif verdict == "reject":
            why["note"] = "the gate rejected it"
            out.append((version, ev, "rejected", why))
        else:  # too few tasks to say: the candidate waits for more evaluation data
            out.append((version, ev, "kept", why))
    return out


def _why_id(ev, why: dict) -> int | None:
    """The decision a reject rests on: the head-to-head one when the candidate lost it
    after the gate promoted it against the active version, else its own."""
    if ev.decision.verdict == "promote" and why.get("versus"):
        return why["versus"]["decision_id"]
    return ev.decision_id


def _candidate_facts(version: registry.AdapterVersion) -> dict:
    """What the report shows of a candidate beside the gate's verdict on it."""
    m = version.metrics
    return {"kind": version.kind, "dataset": version.dataset, "steps": m.get("steps"),
            "final_loss": m.get("final_loss"), "built_on": m.get("built_on")}  # fmt: skip


def _save(config: Config, report: CycleReport) -> CycleReport:
    """The report written to runs/cycle/ (atomically), with its path."""
    folder = config.dir("runs") / "cycle"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cycle-{report.started_at.replace(':', '')}.json"
    report = dataclasses.replace(report, path=str(path.relative_to(config.home)))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=1, default=str))
    tmp.replace(path)
    return report
