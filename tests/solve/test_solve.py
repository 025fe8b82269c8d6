"""`forge solve`, `forge runs` and `forge feedback` on the demo package, with the real
SmolLM2 model, the real index, a real git checkout and the real sandbox."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.datasets.versions import rows_of, versions
from appliance.harness.spec import commit_specs
from appliance.packages.split import Holdout
from appliance.solve import runs, solver, source, testing
from appliance.solve.runs import SolveRun
from tests.conftest import GIT_ENV
from tests.harness.conftest import DEMO, ingest_package, make_home

# Small answers and contexts keep a run to a minute on 2 busy CPU cores.
FAST = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 48
context_tokens = 384
"""
# The demo's oldest task commit: its parent predates every commit held out for evaluation.
TASK = "Strip surrounding whitespace before parsing quantities"
OLD_SHA = "179ea7f6b408a96b18223084973da13b1d7d63f1"
OLD_PARENT = "7f6635fc210662a5da6d0dc381a16a54777203b3"
NEW_MODULE = (
    "diff --git a/src/metrica/extra.py b/src/metrica/extra.py\nnew file mode 100644\n"
    "--- /dev/null\n+++ b/src/metrica/extra.py\n@@ -0,0 +1,2 @@\n+def twice(x):\n"
    "+    return 2 * x\n"
)


def _clone(dest) -> None:
    # --no-hardlinks: a local clone hard-links the demo's objects, which ingest refuses.
    _git(dest.parent, "clone", "-q", "--no-hardlinks", str(DEMO / "repo"), str(dest))


def _git(cwd, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def _commit_diff(paths: str = "") -> str:
    """The demo commit OLD_SHA's own change (of `paths` only, when given), as a diff."""
    return _git(DEMO / "repo", "diff", OLD_PARENT, OLD_SHA, *(["--", paths] if paths else []))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("solve") / "home", monkeypatch, FAST)
        ingest_package(config, db, DEMO)
        monkeypatch.setenv("FORGE_HOME", str(config.home))
        yield config, db


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The operator's clone of the demo, at the parent of its oldest task commit."""
    path = tmp_path_factory.mktemp("operator") / "demo"
    _clone(path)
    _git(path, "checkout", "-q", "--detach", OLD_PARENT)
    return path


def _forge(config, *args: str):
    return CliRunner(env={"FORGE_HOME": str(config.home)}).invoke(cli, list(args))


@pytest.fixture(scope="module")
def old_run(home, checkout) -> SolveRun:
    """`forge solve --repo CHECKOUT --test` on the old snapshot, through the CLI."""
    config, db = home
    out = _forge(config, "solve", "--package", "demo", "--repo", str(checkout), "--test",
                 "--json", TASK)  # fmt: skip
    assert out.exit_code in (0, 3), out.output
    return runs.get(db, json.loads(out.stdout)["id"])


@pytest.fixture(scope="module")
def newest_run(home) -> SolveRun:
    """`forge solve` on the package's newest commit (held out for evaluation)."""
    config, db = home
    out = _forge(config, "solve", "--package", "demo", "--json", "Add a twice(x) helper")
    assert out.exit_code in (0, 3), out.output
    return runs.get(db, json.loads(out.stdout)["id"])


def test_a_solve_records_every_stage_its_context_and_the_outcome(home, old_run, checkout):
    config, db = home
    assert old_run.snapshot_sha == OLD_PARENT and old_run.repo_path == str(checkout)
    assert old_run.contains == ()  # no task commit of the demo is in its past
    assert [s.stage for s in old_run.stages][:2] == ["task_analysis", "scope"]
    assert "code" in {s.stage for s in old_run.stages}
    for stage in old_run.stages:
        prompt = db.execute("SELECT prompt FROM model_calls WHERE id = ?", [stage.call_id])
        text = prompt.fetchone()[0]
        assert stage.context["sha"] == OLD_PARENT
        for item in stage.context["items"]:
            assert item["text"] in text  # what the record says the model saw, it saw
    if old_run.outcome == "diff":  # SmolLM2 rarely manages: then it says why not
        assert old_run.patch.startswith("diff --git") and old_run.test is not None
        assert old_run.test["verdict"] in testing.VERDICTS
    else:
        assert old_run.patch == "" and old_run.test is None
        assert "code stage" in old_run.reason
    # The checkout was only read.
    assert _git(checkout, "status", "--porcelain") == ""
    listed = json.loads(_forge(config, "runs", "list", "--json").stdout)
    assert old_run.id in [r["id"] for r in listed]
    shown = json.loads(_forge(config, "runs", "show", str(old_run.id), "--json").stdout)
    assert shown["task"] == TASK and shown["held_back"] is None
    human = _forge(config, "runs", "show", str(old_run.id))
    assert human.exit_code == 0 and "task analysis" in human.output


def test_the_test_run_grades_a_diff_in_the_sandbox(home, checkout):
    config, db = home
    found = source.checkout_source(config, db, "demo", checkout)
    spec = source.spec_for(config, db, found, TASK)
    fixed = testing.test_patch(config, spec, _commit_diff())
    assert fixed.verdict == "passed", fixed.reason
    assert fixed.newly_passing and not fixed.broken  # the commit's own new test
    breaking = _commit_diff("src").replace("text.strip())", "text.strip() + '!')")
    broke = testing.test_patch(config, spec, breaking)
    assert broke.verdict == "failed" and broke.broken, broke.reason
    assert "do not with it" in broke.reason
    stale = testing.test_patch(config, spec, breaking.replace("(\\d+", "(\\w+"))
    assert stale.verdict == "not_applied"


def test_apply_refuses_a_dirty_checkout_and_changes_nothing(home, tmp_path):
    config, db = home
    path = tmp_path / "dirty"
    _clone(path)
    (path / "README.md").write_text("my own change\n")
    before = db.execute("SELECT COUNT(*) FROM solve_runs").fetchone()[0]
    out = _forge(config, "solve", "--package", "demo", "--repo", str(path), "--apply", TASK)
    assert out.exit_code == 1
    assert "uncommitted change" in out.output and "Traceback" not in out.output
    assert (path / "README.md").read_text() == "my own change\n"
    assert db.execute("SELECT COUNT(*) FROM solve_runs").fetchone()[0] == before
    assert _forge(config, "solve", "--package", "demo", "--apply", TASK).exit_code == 2


def test_a_runs_diff_is_applied_to_a_clean_checkout_only(home, tmp_path):
    config, db = home
    path = tmp_path / "clean"
    _clone(path)
    _git(path, "checkout", "-q", "--detach", OLD_PARENT)
    found = source.checkout_source(config, db, "demo", path)
    run = runs.record_run(db, SolveRun(
        found.package.id, found.package.label, str(path), found.snapshot, found.contains, TASK,
        (), (), _commit_diff("src"), "diff", "given", {}, "then", "then",
    ))  # fmt: skip
    (path / "notes.txt").write_text("untracked\n")
    with pytest.raises(source.ApplyRefused, match="uncommitted"):
        solver.apply_run(db, run)
    assert "text.strip()" not in (path / "src/metrica/parser.py").read_text()
    (path / "notes.txt").unlink()
    assert solver.apply_run(db, run) == ["src/metrica/parser.py"]
    assert "text.strip()" in (path / "src/metrica/parser.py").read_text()
    assert runs.get(db, run.id).applied_at is not None


def test_a_corrected_patch_becomes_operator_rows_in_the_next_dataset(home, old_run, tmp_path):
    config, db = home
    patch = tmp_path / "fix.diff"
    patch.write_text(_commit_diff())
    out = _forge(config, "feedback", str(old_run.id), "bad", "--patch", str(patch), "--json")
    assert out.exit_code == 0, out.output
    given = json.loads(out.stdout)
    assert given["held_back"] is None and given["run"]["feedback"] == "bad"
    assert set(given["run"]["feedback_targets"]) >= {"task_analysis", "scope", "plan", "code"}
    assert given["run"]["feedback_targets"]["task_analysis"]["target"]["files"] == [
        "src/metrica/parser.py"
    ]
    built = _forge(config, "datasets", "build", "--json")
    assert built.exit_code == 0, built.output
    operator = []
    for version in versions(db):
        operator += [
            r for r in rows_of(db, version.stage, version.kind, version.version)
            if r.provenance.origin == "operator"
        ]  # fmt: skip
    assert {r.provenance.sample for r in operator} == {old_run.id}
    sft = {r.stage: r for r in operator if r.kind == "sft"}
    assert {"task_analysis", "scope", "plan", "code"} <= set(sft)
    assert all(r.source == "operator: corrected patch" for r in sft.values())
    # The scope target labels exactly the files its prompt showed, in that order.
    shown = [i["path"] for i in old_run.stage("scope").context["items"]]
    labelled = json.loads(sft["scope"].completion)["files"]
    assert [f["path"] for f in labelled] == list(dict.fromkeys(shown))
    assert {f["label"] for f in labelled if f["path"] == "src/metrica/parser.py"} <= {"relevant"}
    code = json.loads(sft["code"].completion)["edits"]
    assert code and code[0]["path"] == "src/metrica/parser.py"
    dpo = [r for r in operator if r.kind == "dpo"]
    assert all(r.rejected != r.chosen for r in dpo)
    assert all(r.source == "operator: corrected patch over the run's answer" for r in dpo)
    exported = json.loads(json.dumps(sft["code"].to_dict()))
    assert exported["provenance"]["origin"] == "operator"


def test_a_held_out_snapshots_rows_are_held_back_with_the_reason(home, newest_run, tmp_path):
    config, db = home
    holdout = Holdout.of(config, db)
    (newest,) = commit_specs(config, db, "demo", [newest_run.snapshot_sha[:12]])
    assert holdout.held_out("demo", newest.sha) and newest.sha in newest_run.contains
    patch = tmp_path / "extra.diff"
    patch.write_text(NEW_MODULE)
    out = CliRunner(env={"FORGE_HOME": str(config.home)}).invoke(
        cli, ["feedback", str(newest_run.id), "good", "--patch", str(patch)]
    )
    assert out.exit_code == 0, out.output
    assert "warning" in out.output and "held out for evaluation" in out.output
    _forge(config, "datasets", "build")
    key = runs.task_key("demo", newest_run.snapshot_sha, newest_run.task)
    for version in versions(db):
        rows = rows_of(db, version.stage, version.kind, version.version)
        assert key not in {r.task for r in rows}
    latest = [v for v in versions(db) if v.held_back]
    assert latest, "a version records the runs it held back"
    (entry,) = [h for h in latest[-1].held_back if h["run"] == newest_run.id]
    assert "held out for evaluation" in entry["reason"] and entry["task"] == key
    shown = json.loads(_forge(config, "runs", "show", str(newest_run.id), "--json").stdout)
    assert "held out" in shown["held_back"]


def test_a_patch_that_does_not_apply_is_refused_and_nothing_is_stored(home, newest_run, tmp_path):
    config, db = home
    before = runs.get(db, newest_run.id)
    bad = tmp_path / "stale.diff"
    bad.write_text(_commit_diff("src").replace("(\\d+", "(\\w+"))
    out = _forge(config, "feedback", str(newest_run.id), "bad", "--patch", str(bad))
    assert (
        out.exit_code == 1 and "does not apply" in out.output and "nothing was stored" in out.output
    )
    assert runs.get(db, newest_run.id) == before
    garbage = tmp_path / "garbage.diff"
    garbage.write_text("this is not a patch\n")
    out = _forge(config, "feedback", str(newest_run.id), "bad", "--patch", str(garbage))
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert runs.get(db, newest_run.id) == before


def test_an_unknown_run_is_a_clear_error(home):
    config, _ = home
    for args in (["feedback", "9999", "good"], ["runs", "show", "9999"]):
        out = _forge(config, *args)
        assert out.exit_code == 2 and "no solve run 9999" in out.output
        assert "Traceback" not in out.output
    assert _forge(config, "feedback", "1", "maybe").exit_code == 2
