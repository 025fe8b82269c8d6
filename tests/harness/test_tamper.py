"""Grading that tested code cannot forge: the witness stream cross-checked with the JUnit
report and pytest's exit status, and flags on edits to test infrastructure.

Each attack is a real patch graded in the real sandbox on the demo package (or a package
built from a real git repository); on the old harness each gave "resolved".
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from appliance.harness.checkout import worktree
from appliance.harness.edits import apply_edits
from appliance.harness.grading import grade_gold, grade_patch, infrastructure_flags
from appliance.harness.junit import Report
from appliance.harness.results import gold_for, save_patch
from appliance.harness.spec import commit_specs
from appliance.harness.stream import cross_check, parse_stream
from appliance.packages import gitsafe
from tests.conftest import PYPROJECT, TEST_V1, RepoBuilder, build
from tests.harness.conftest import ingest_package, make_home

WHITESPACE = "Strip surrounding whitespace before parsing quantities"
F2P = "tests/test_parser.py::test_ignores_surrounding_whitespace"
INIT = "src/metrica/__init__.py"
VERSION_LINE = '__version__ = "0.1.0"\n'

# Tampering with the report: no fix at all, and an atexit hook in the package's own
# __init__.py that strips the failures from the JUnit report once pytest is done.
STRIP_FAILURES = """
import atexit as _atexit
import re as _re
import sys as _sys


def _forge_resolved():
    for _arg in _sys.argv:
        if _arg.startswith("--junitxml="):
            _path = _arg.split("=", 1)[1]
            with open(_path) as _f:
                _xml = _f.read()
            _xml = _re.sub(r"<failure[^>]*/>|<failure.*?</failure>", "", _xml, flags=_re.S)
            _xml = _re.sub(r'failures="[0-9]+"', 'failures="0"', _xml)
            with open(_path, "w") as _f:
                _f.write(_xml)
"""
STRIP_AND_EXIT_0 = STRIP_FAILURES + "            import os; os._exit(0)\n"

# Smarter: also speak on the witness's own channel (found in memory, as code in the same
# process can) to say the failing test passed and the session ended well.
FAKE_RECORDS = STRIP_FAILURES + (
    """
    import gc, os
    channel = next(o for o in gc.get_objects() if type(o).__name__ == "_Channel")
    ids = {"nodeid": F2P, "file": "tests/test_parser.py",
           "classname": "tests.test_parser", "name": "test_ignores_surrounding_whitespace"}
    channel.send("test", when="call", outcome="passed", xfail=False, **ids)
    channel.send("finish", exitstatus=0)
    os._exit(0)
""".replace("F2P", repr(F2P))
)

# Cruder: open the FIFO by its path (the first entry of PYTHONPATH) and write a record.
WRITE_THE_FIFO = (
    STRIP_FAILURES
    + """
    import os
    fifo = os.environ["PYTHONPATH"].split(":")[0] + "/results.fifo"
    fd = os.open(fifo, os.O_WRONLY)
    os.write(fd, b'{"nonce": "guess", "seq": 0, "kind": "hello"}\\n')
    os._exit(0)
"""
)


def _hooked(body: str) -> list[dict]:
    return [
        {"path": INIT, "search": VERSION_LINE,
         "replace": VERSION_LINE + body + "\n\n_atexit.register(_forge_resolved)\n"},
    ]  # fmt: skip


def _fix(spec) -> dict:
    """The commit's own fix of parser.py, as one search/replace edit."""
    path = "src/metrica/parser.py"
    before = gitsafe.git(["show", f"{spec.parent}:{path}"], git_dir=spec.repo).decode()
    after = gitsafe.git(["show", f"{spec.sha}:{path}"], git_dir=spec.repo).decode()
    return {"path": path, "search": before, "replace": after}


@pytest.fixture(scope="module")
def task(demo_home):
    config, db = demo_home
    spec = next(s for s in commit_specs(config, db, "demo") if s.message.startswith(WHITESPACE))
    gold, _ = gold_for(config, db, spec)
    assert gold.usable and gold.fail_to_pass == (F2P,)
    return spec, gold


def test_an_atexit_hook_that_strips_failures_is_tampered(demo_home, task):
    spec, gold = task
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", _hooked(STRIP_FAILURES))
    assert verdict.verdict == "tampered", verdict
    assert not verdict.resolved
    assert F2P in verdict.reason and "JUnit report says" in verdict.reason
    assert verdict.run["status"] == "tampered"
    assert verdict.flags == (f"pytest internals: {INIT}",)  # it names the JUnit report


def test_stripping_failures_and_exiting_0_is_tampered(demo_home, task):
    spec, gold = task
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", _hooked(STRIP_AND_EXIT_0))
    assert verdict.verdict == "tampered", verdict


@pytest.mark.parametrize("attack", [FAKE_RECORDS, WRITE_THE_FIFO], ids=["in-process", "fifo"])
def test_fake_stream_records_are_tampered(demo_home, task, attack):
    spec, gold = task
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", _hooked(attack))
    assert verdict.verdict == "tampered", verdict
    assert "result stream" in verdict.reason
    assert verdict.flags == (f"pytest internals: {INIT}",)


def test_honest_patches_are_graded_as_before(demo_home, task):
    spec, gold = task
    config = demo_home[0]
    resolved = grade_patch(config, spec, gold, "search_replace", [_fix(spec)])
    assert resolved.verdict == "resolved", resolved
    assert resolved.flags == () and resolved.to_dict()["flags"] == []
    untouched = [{"path": INIT, "search": VERSION_LINE, "replace": '__version__ = "0.1.1"\n'}]
    failed = grade_patch(config, spec, gold, "search_replace", untouched)
    assert failed.verdict == "failed", failed
    assert failed.fail_to_pass == {F2P: "failed"}


HOOKWRAPPER = (
    "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\n"
    "def pytest_runtest_makereport(item, call):\n"
    "    outcome = yield\n"
    "    outcome.get_result().outcome = 'passed'\n"
)


def test_a_conftest_edit_is_ignored_graded_and_flagged(demo_home, task):
    spec, gold = task
    cheat = {"path": "tests/conftest.py", "search": "", "replace": HOOKWRAPPER}
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", [cheat])
    # The conftest is not the commit's: it is removed before the run, so the tests fail.
    assert verdict.verdict == "failed", verdict
    assert verdict.flags == ("conftest: tests/conftest.py",)
    assert "were ignored" in verdict.reason
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", [_fix(spec), cheat])
    assert verdict.verdict == "resolved" and verdict.flags == ("conftest: tests/conftest.py",)


def _parent_text(spec, path: str) -> str:
    return gitsafe.git(["show", f"{spec.parent}:{path}"], git_dir=spec.repo).decode()


def test_edits_to_test_infrastructure_are_flagged(demo_home, task):
    spec, _ = task
    config = demo_home[0]
    quantity = _parent_text(spec, "src/metrica/quantity.py")
    units = _parent_text(spec, "src/metrica/units.py")
    edits = [
        {"path": "sitecustomize.py", "search": "", "replace": "import os\n"},
        {"path": "src/zz_forge.pth", "search": "", "replace": "import os\n"},
        {"path": "pytest.ini", "search": "", "replace": "[pytest]\naddopts = -q\n"},
        {"path": "setup.cfg", "search": "", "replace": "[tool:pytest]\naddopts = -q\n"},
        {"path": "tox.ini", "search": "", "replace": "[tox]\nenvlist = py311\n"},  # no pytest
        # A module that gains a pytest hook; one that changes in an ordinary way.
        {"path": "src/metrica/quantity.py", "search": quantity,
         "replace": quantity + "\n\ndef pytest_configure(config):\n    pass\n"},
        {"path": "src/metrica/units.py", "search": units, "replace": units + "\nKM = 1000\n"},
    ]  # fmt: skip
    with worktree(config, spec.repo, spec.parent) as work:
        changed = apply_edits(work / "repo", "search_replace", edits)
        flags = infrastructure_flags(spec, work / "repo", changed)
    assert set(flags) == {
        "startup hook: sitecustomize.py",
        "startup hook: src/zz_forge.pth",
        "pytest config: pytest.ini",
        "pytest config: setup.cfg",
        "pytest internals: src/metrica/quantity.py",
    }
    # pyproject.toml: flagged for its pytest part, not for the rest.
    pyproject = _parent_text(spec, "pyproject.toml")
    described = pyproject.replace('version = "0.1.0"', 'version = "0.1.1"')
    retargeted = pyproject.replace('testpaths = ["tests"]', 'testpaths = ["src"]')
    for text, expected in [(described, ()), (retargeted, ("pytest config: pyproject.toml",))]:
        assert text != pyproject
        with worktree(config, spec.repo, spec.parent) as work:
            edit = [{"path": "pyproject.toml", "search": pyproject, "replace": text}]
            changed = apply_edits(work / "repo", "search_replace", edit)
            assert infrastructure_flags(spec, work / "repo", changed) == expected


def test_the_cli_shows_tampered_and_flags(demo_home, task, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from appliance.cli import cli

    config, db = demo_home
    spec, _ = task
    monkeypatch.setenv("FORGE_HOME", str(config.home))
    patch = tmp_path / "attack.json"
    patch.write_text(json.dumps(_hooked(STRIP_FAILURES)))
    runner = CliRunner()
    args = ["harness", "run", "demo", "--commit", spec.sha, "--patch", str(patch)]
    out = runner.invoke(cli, args)
    assert out.exit_code == 3, out.output  # not resolved: on the old harness, 0 "resolved"
    assert "tampered" in out.output and "resolved" not in out.output.split("—")[0]
    out = runner.invoke(cli, [*args, "--json"])
    assert out.exit_code == 3 and json.loads(out.output)["verdict"] == "tampered"
    stored = db.execute(
        "SELECT verdict, result FROM patch_gradings WHERE id = ?", [json.loads(out.output)["id"]]
    ).fetchone()
    assert stored[0] == "tampered"
    conftest = {"path": "tests/conftest.py", "search": "", "replace": "import os\n"}
    patch.write_text(json.dumps([_fix(spec), conftest]))
    out = runner.invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "flagged" in out.output and "conftest: tests/conftest.py" in out.output
    out = runner.invoke(cli, [*args, "--json"])
    data = json.loads(out.output)
    assert data["verdict"] == "resolved" and data["flags"] == ["conftest: tests/conftest.py"]
    stored = db.execute("SELECT result FROM patch_gradings WHERE id = ?", [data["id"]]).fetchone()
    assert json.loads(stored[0])["flags"] == ["conftest: tests/conftest.py"]


def test_a_tampered_gold_run_makes_the_commit_unusable(tmp_path, monkeypatch, wheelhouse):
    # The commit's own code adds a passing test case to the report that pytest never ran.
    forged = (
        "import atexit, sys\n\n\ndef _more():\n"
        "    path = [a for a in sys.argv if a.startswith('--junitxml=')][0].split('=', 1)[1]\n"
        "    xml = open(path).read().replace('</testsuite>', '<testcase classname=\"tests."
        'test_calc" name="test_extra" file="tests/test_calc.py" /></testsuite>\')\n'
        "    open(path, 'w').write(xml)\n\n\natexit.register(_more)\n"
    )
    repo = RepoBuilder(tmp_path / "forged-src")
    repo.commit(
        "Create calculator with addition",
        {"pyproject.toml": PYPROJECT, "src/calc.py": "def add(a, b):\n    return a + b\n",
         "tests/test_calc.py": TEST_V1},
    )  # fmt: skip
    repo.commit(
        "Add subtraction to the calculator",
        {"src/calc.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n"
                        "    return a - b\n\n\n" + forged,
         "tests/test_sub.py": "from calc import sub\n\n\ndef test_sub():\n"
                              "    assert sub(3, 2) == 1\n"},
    )  # fmt: skip
    package = build(repo, tmp_path / "forged-pkg", wheelhouse, name="forged", version="1.0").path
    config, db = make_home(tmp_path / "home", monkeypatch, "[harness]\ngold_runs = 2\n")
    ingest_package(config, db, package)
    (spec,) = commit_specs(config, db, "forged")
    result = grade_gold(config, spec)
    assert result.status == "ok" and not result.usable, result
    assert result.reason.startswith("tampered: the run at the commit disagrees")
    assert "test_extra" in result.reason
    assert [r["side"] for r in result.runs] == ["before", "gold"]  # not retried
    assert result.runs[1]["status"] == "tampered"


def test_tampered_verdicts_are_stored(forge_home, db, task):
    from appliance.harness.grading import PatchVerdict

    spec, _ = task
    db.execute(
        "INSERT INTO packages (id, name, version, manifest_sha256, path, test_command, "
        "test_timeout_s, requirements, ingested_at) VALUES (?, 'x', '1', 'm', 'p', '[]', 1, "
        "'[]', 'now')",
        [spec.package_id],
    )
    verdict = PatchVerdict("tampered", "the JUnit report says x passed", flags=("conftest: c",))
    grading_id = save_patch(db, spec, b"patch", verdict)
    row = db.execute("SELECT verdict, result FROM patch_gradings WHERE id = ?", [grading_id])
    verdict_text, result = row.fetchone()
    assert verdict_text == "tampered" and json.loads(result)["flags"] == ["conftest: c"]


# --- the cross-check, record by record -----------------------------------------------------

NONCE = "n0"
T1 = {"nodeid": "tests/test_a.py::test_one", "file": "tests/test_a.py",
      "classname": "tests.test_a", "name": "test_one"}  # fmt: skip
T2 = {**T1, "nodeid": "tests/test_a.py::test_two", "name": "test_two"}
ONE, TWO = "tests/test_a.py::test_one", "tests/test_a.py::test_two"


def _lines(*records: dict) -> bytes:
    return b"".join(
        json.dumps({"nonce": NONCE, "seq": i, **r}).encode() + b"\n" for i, r in enumerate(records)
    )


def _run(call_two: str = "failed", exitstatus: int = 1, extra: tuple = ()) -> tuple:
    return (
        {"kind": "hello"},
        {"kind": "collected", "tests": [T1, T2]},
        *({"kind": "test", "when": w, "outcome": "passed", **T1}
          for w in ("setup", "call", "teardown")),
        {"kind": "test", "when": "setup", "outcome": "passed", **T2},
        {"kind": "test", "when": "call", "outcome": call_two, **T2},
        {"kind": "test", "when": "teardown", "outcome": "passed", **T2},
        *extra,
        {"kind": "finish", "exitstatus": exitstatus},
    )  # fmt: skip


HONEST = Report({ONE: "passed", TWO: "failed"}, ())


def test_an_honest_stream_agrees_with_its_report():
    stream = parse_stream(_lines(*_run()), NONCE)
    assert stream.problem == "" and stream.outcomes == {ONE: "passed", TWO: "failed"}
    assert cross_check(stream, HONEST, 1) == ""
    passing = parse_stream(_lines(*_run("passed", 0)), NONCE)
    assert cross_check(passing, Report({ONE: "passed", TWO: "passed"}, ()), 0) == ""


@pytest.mark.parametrize(
    ("records", "report", "returncode", "words"),
    [
        (_run(), Report({ONE: "passed", TWO: "passed"}, ()), 1, "JUnit report says"),
        (_run(), Report({ONE: "passed"}, ()), 1, "is absent"),
        (_run(), HONEST, 0, "process exited 0"),
        (_run(exitstatus=0), HONEST, 0, "exited 0 with tests that did not pass"),
        (_run()[:-1], HONEST, 1, "never saw the session finish"),
        (_run(extra=({"kind": "test", "when": "setup", "outcome": "failed", **T2},)), HONEST, 1,
         "twice"),
        # A forged call that passes does not hide the failed one.
        (_run(extra=({"kind": "test", "when": "call", "outcome": "passed", **T2},)),
         Report({ONE: "passed", TWO: "passed"}, ()), 1, "JUnit report says"),
        (_run(extra=({"kind": "collected", "tests": []},)), HONEST, 1, "two lists"),
        (_run("passed", 0)[:5] + _run("passed", 0)[-1:], Report({ONE: "passed"}, ()), 0,
         "never reported"),
        ((*_run(), {"kind": "test", "when": "call", "outcome": "passed", **T2}), HONEST, 1,
         "after its finish"),
        (({"kind": "collected", "tests": []}, *_run()), HONEST, 1, "'collected' record"),
    ],
)  # fmt: skip
def test_disagreements_are_named(records, report, returncode, words):
    reason = cross_check(parse_stream(_lines(*records), NONCE), report, returncode)
    assert words in reason


def test_records_that_are_not_the_witnesss():
    good = _lines(*_run())
    assert "not the witness's" in parse_stream(good, "other").problem
    lines = good.split(b"\n")
    swapped = b"\n".join([lines[0], lines[2], lines[1], *lines[3:]])
    assert "out of sequence" in parse_stream(swapped, NONCE).problem
    assert "not JSON" in parse_stream(good + b"{oops\n", NONCE).problem
    assert "middle of a record" in parse_stream(good[:-3], NONCE).problem
    assert "malformed" in parse_stream(_lines({"kind": "hello"}, {"kind": "test"}), NONCE).problem
    # Nothing at all: tampered when pytest wrote a report, a crash when it did not.
    silent = parse_stream(b"", NONCE)
    assert "sent nothing" in cross_check(silent, HONEST, 1)
    assert cross_check(silent, None, 4) == ""


# --- what tampered rows may become ---------------------------------------------------------


def test_tampered_samples_are_only_ever_rejected_sides():
    from appliance.datasets.rows import _Attempt, _task_rows
    from appliance.serving.calllog import ModelCall

    calls = {
        i: ModelCall("chat", "coder", "b", "b", None, f"p{i}", {}, [], f'{{"o": {i}}}', "stop",
                     id=i)
        for i in range(1, 5)
    }  # fmt: skip
    samples = [_Attempt(0, "resolved", 1, 0.0), _Attempt(1, "tampered", 2, 1.0)]
    rows = _task_rows("code", "demo@abc", samples, calls, real=None)
    assert [r.source for r in rows if r.kind == "sft"] == ["resolved sample"]
    (dpo,) = [r for r in rows if r.kind == "dpo"]
    assert dpo.chosen == '{"o": 1}' and dpo.rejected == '{"o": 2}'
    # With no resolved sample: the real commit over it, never it over a worse-aligned one.
    samples = [
        _Attempt(0, "tampered", 2, 1.0),
        _Attempt(1, "failed", 3, 0.0),
        _Attempt(2, "tampered", 4, 0.0),
    ]
    rows = _task_rows("code", "demo@def", samples, calls, real='{"o": "real"}')
    assert all(r.completion == '{"o": "real"}' for r in rows if r.kind == "sft")
    dpo = [r for r in rows if r.kind == "dpo"]
    assert {r.chosen for r in dpo} == {'{"o": "real"}'}
    assert {r.rejected for r in dpo} == {'{"o": 2}', '{"o": 3}', '{"o": 4}'}
    rows = _task_rows("code", "demo@ghi", samples, calls, real=None)
    assert rows == []  # a tampered answer is never the better-aligned chosen side


def test_the_migration_keeps_rows_and_admits_tampered(tmp_path):
    from appliance.campaign.store import Triple, record_triple
    from appliance.store.db import connect
    from appliance.store.migrations import MIGRATIONS, migrate

    db = connect(tmp_path / "old.db", migrate=False)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    names = [fn.__name__ for fn in MIGRATIONS]
    for fn in MIGRATIONS[: names.index("m012_tampered_verdict")]:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, '')", [fn.__name__])
    db.execute(
        "INSERT INTO packages (id, name, version, manifest_sha256, path, test_command, "
        "test_timeout_s, requirements, ingested_at) VALUES (1, 'x', '1', 'm', 'p', '[]', 1, "
        "'[]', 'now')"
    )
    triple = Triple(1, "a", 0, "p", 0.2, 1, (), (), "", "failed", "r", {}, {}, {})
    record_triple(db, triple)
    db.execute(
        "INSERT INTO patch_gradings (package_id, sha, patch_sha256, verdict, reason, result, "
        "diff, graded_at) VALUES (1, 'a', 'h', 'failed', 'r', '{}', '', 'now')"
    )
    assert "m012_tampered_verdict" in migrate(db)
    assert db.execute("SELECT outcome FROM triples").fetchall() == [("failed",)]
    assert db.execute("SELECT verdict FROM patch_gradings").fetchall() == [("failed",)]
    assert record_triple(db, dataclasses.replace(triple, sample=1, outcome="tampered"))
    db.execute(
        "INSERT INTO patch_gradings (package_id, sha, patch_sha256, verdict, reason, result, "
        "diff, graded_at) VALUES (1, 'a', 'h', 'tampered', 'r', '{}', '', 'now')"
    )
    assert record_triple(db, triple) is False  # the unique key survived
