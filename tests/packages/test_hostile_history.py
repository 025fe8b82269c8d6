"""Hostile input never crashes ingest: trees Forge cannot check out
are refused at validation, one bad package never stops the packages behind it, and no two
packages share a corpus folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.packages.ingest import ingest
from appliance.packages.split import no_rows
from appliance.packages.validate import validate
from tests.conftest import (
    CALC_V1,
    CALC_V2,
    PYPROJECT,
    TEST_V1,
    TEST_V2,
    RepoBuilder,
    build,
    copy_package,
    git,
)

FIXED_DATE = "2024-01-01T12:00:00+00:00"


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    env = {"GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    return git(repo, *args, env=env, stdin=stdin)


def _dot_git_entry(repo: Path) -> str:
    """A root-tree entry `.GIT` holding a `config` file, as a line for `git mktree`
    (git's porcelain refuses to add such a path, so the tree is made by hand)."""
    blob = _git(repo, "hash-object", "-w", "--stdin", stdin="[core]\n\tfsmonitor = evil\n")
    inner = _git(repo, "mktree", stdin=f"100644 blob {blob}\tconfig\n")
    return f"040000 tree {inner}\t.GIT\n"


def _commit_tree(repo: Path, tree_lines: str, parent: str, message: str) -> str:
    tree = _git(repo, "mktree", stdin=tree_lines)
    sha = _git(repo, "commit-tree", tree, "-p", parent, "-m", message)
    _git(repo, "update-ref", "refs/heads/main", sha)
    return sha


def _start(tmp_path: Path) -> RepoBuilder:
    repo = RepoBuilder(tmp_path / "src")
    repo.commit(
        "Create calculator with addition",
        {"pyproject.toml": PYPROJECT, "src/calc.py": CALC_V1, "tests/test_calc.py": TEST_V1},
    )
    return repo


def _task(repo: RepoBuilder) -> str:
    return repo.commit(
        "Add subtraction to the calculator", {"src/calc.py": CALC_V2, "tests/test_calc.py": TEST_V2}
    )


def dot_git_in_newest_commit(repo: RepoBuilder) -> None:
    task = _task(repo)
    lines = _git(repo.path, "ls-tree", task) + "\n" + _dot_git_entry(repo.path)
    _commit_tree(repo.path, lines, f"{task}^", "Add subtraction to the calculator")


def dot_git_in_older_commit(repo: RepoBuilder) -> None:
    # The parent of the task commit carries `.GIT`; the task commit itself is clean.
    head = _git(repo.path, "rev-parse", "HEAD")
    lines = _git(repo.path, "ls-tree", head) + "\n" + _dot_git_entry(repo.path)
    _commit_tree(repo.path, lines, head, "Vendor some settings")
    _task(repo)


def absolute_link_in_newest_commit(repo: RepoBuilder) -> None:
    (repo.path / "src" / "settings").symlink_to("/etc")
    _task(repo)


def link_out_of_the_tree(repo: RepoBuilder) -> None:
    (repo.path / "src" / "up").symlink_to("../..")
    _task(repo)


def symlinked_test_file_in_parent(repo: RepoBuilder) -> None:
    # At the parent the test file is a link (inside the tree); the task makes it a file.
    test = repo.path / "tests" / "test_calc.py"
    test.unlink()
    test.symlink_to("../src/calc_checks.py")
    repo.commit("Keep the checks beside the code", {"src/calc_checks.py": TEST_V1})
    test.unlink()
    _task(repo)


TREES = {
    "`.git` entry in the newest commit": (dot_git_in_newest_commit, "'.GIT'"),
    "`.git` entry in an older commit": (dot_git_in_older_commit, "at its parent: a tree entry"),
    "absolute link in the newest commit": (absolute_link_in_newest_commit, "absolute link"),
    "link leading out of the tree": (link_out_of_the_tree, "leading out of the tree"),
    "test file that is a link at the parent": (
        symlinked_test_file_in_parent,
        "at its parent: the test file 'tests/test_calc.py' is a link",
    ),
}


@pytest.mark.parametrize("case", sorted(TREES))
def test_tree_forge_cannot_check_out_is_refused_at_validation(
    case, tmp_path, wheelhouse, forge_home, db
):
    make, words = TREES[case]
    repo = _start(tmp_path)
    make(repo)
    pkg = build(repo, tmp_path / "pkg", wheelhouse, name="hostile", version="1").path

    # `forge package validate` names the commit and the reason, as one problem.
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "package", "validate", str(pkg), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["checks"]["git"] == "fail"
    # One problem per commit that cannot be checked out; the task commit is one of them.
    tree_problems = [p["message"] for p in report["problems"] if p["rule"] == "git-tree"]
    assert len({m.split()[1] for m in tree_problems}) == len(tree_problems), tree_problems
    task = json.loads((pkg / "manifest.json").read_text())["commits"][-1]["sha"]
    [message] = [m for m in tree_problems if m.startswith(f"commit {task[:12]} ")]
    assert "cannot be checked out safely" in message
    assert words in message, message

    # Ingest quarantines it with the same reason, and goes on.
    copy_package(pkg, forge_home.dir("ingest") / "hostile")
    [result] = ingest(forge_home, db, trained_rows=no_rows)
    assert result.outcome == "rejected", result
    assert any("[git-tree]" in r for r in result.reasons), result.reasons
    assert "[git-tree]" in (Path(result.path) / "REJECTED.txt").read_text()
    assert list(forge_home.dir("corpus").iterdir()) == []


def test_a_package_forge_can_check_out_still_passes(calc_package, forge_home):
    report = validate(calc_package, forge_home, dry_run=False)
    assert report.checks["git"] == "pass", report.problems


def _nesting_bomb(pkg: Path) -> None:
    (pkg / "manifest.json").write_text("[" * 100_000)


def _long_number(pkg: Path) -> None:
    data = json.loads((pkg / "manifest.json").read_text())
    text = json.dumps(data).replace('"test_timeout_s": 600', '"test_timeout_s": ' + "9" * 5000)
    assert "9" * 5000 in text
    (pkg / "manifest.json").write_text(text)


@pytest.mark.parametrize("spoil", [_nesting_bomb, _long_number], ids=["nesting", "number"])
def test_bad_package_before_a_good_one_is_quarantined_and_the_good_one_taken(
    spoil, calc_package, forge_home, db
):
    bad = copy_package(calc_package, forge_home.dir("ingest") / "a-bad")
    spoil(bad)
    copy_package(calc_package, forge_home.dir("ingest") / "b-good")

    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "ingest"], capture_output=True, text=True, timeout=600
    )

    assert proc.returncode == 1, proc.stdout + proc.stderr  # one was rejected
    assert "Traceback" not in proc.stdout + proc.stderr
    events = db.execute("SELECT source, outcome, reasons FROM ingest_events ORDER BY id").fetchall()
    assert [e[:2] for e in events] == [("a-bad", "rejected"), ("b-good", "accepted")]
    reasons = " ".join(json.loads(events[0][2]))
    assert "[manifest]" in reasons
    assert ("nested more than" in reasons) or ("a number 5002 characters long" in reasons)
    [quarantined] = forge_home.dir("quarantine").iterdir()
    assert "[manifest]" in (quarantined / "REJECTED.txt").read_text()
    assert [p.name for p in forge_home.dir("corpus").iterdir()] == ["calc@1.0"]
    assert list(forge_home.dir("ingest").iterdir()) == []


def test_forged_ingest_job_finishes_with_a_bad_package(calc_package, forge_home, db):
    """The daemon's ingest job returns its results instead of failing (and being queued
    again) when a package is hostile."""
    from appliance.ops.work import run_job

    bad = copy_package(calc_package, forge_home.dir("ingest") / "a-bad")
    _nesting_bomb(bad)
    copy_package(calc_package, forge_home.dir("ingest") / "b-good")
    result = run_job(str(forge_home.home), "ingest", {})
    assert [(r["source"], r["outcome"]) for r in result["results"]] == [
        ("a-bad", "rejected"),
        ("b-good", "accepted"),
    ]


def test_unregistrable_corpus_folder_is_set_aside_not_blocking(calc_package, forge_home, db):
    """A folder in corpus/ that no row names and whose manifest cannot be read (a corpus
    edited by hand) used to stop every later ingest; now it goes to quarantine."""
    junk = forge_home.dir("corpus") / "leftover"
    junk.mkdir()
    (junk / "manifest.json").write_text("{" * 50_000)
    copy_package(calc_package, forge_home.dir("ingest") / "calc")
    results = ingest(forge_home, db, trained_rows=no_rows)
    assert [(r.source, r.outcome) for r in results] == [
        ("leftover", "rejected"),
        ("calc", "accepted"),
    ]
    assert "[ingest-error]" in results[0].reasons[0]
    assert (Path(results[0].path) / "traceback.txt").is_file()
    assert [p.name for p in forge_home.dir("corpus").iterdir()] == ["calc@1.0"]


def test_names_that_joined_with_a_dash_collide_get_their_own_folders(
    calc_repo, wheelhouse, forge_home, db, tmp_path
):
    """(`demo`, `x-1`) and (`demo-x`, `1`) both made corpus/demo-x-1; the second was told
    to "run again" forever."""
    first = build(calc_repo, tmp_path / "p1", wheelhouse, name="demo", version="x-1").path
    second = build(calc_repo, tmp_path / "p2", wheelhouse, name="demo-x", version="1").path
    copy_package(first, forge_home.dir("ingest") / "first")
    copy_package(second, forge_home.dir("ingest") / "second")

    results = ingest(forge_home, db, trained_rows=no_rows)

    assert [r.outcome for r in results] == ["accepted", "accepted"], results
    rows = db.execute("SELECT name, version, path FROM packages ORDER BY id").fetchall()
    assert rows == [("demo", "x-1", "corpus/demo@x-1"), ("demo-x", "1", "corpus/demo-x@1")]
    for _, _, path in rows:
        assert (forge_home.home / path / "manifest.json").is_file()
    # The same package twice is still recognised.
    copy_package(second, forge_home.dir("ingest") / "again")
    [again] = ingest(forge_home, db, trained_rows=no_rows)
    assert again.outcome == "duplicate"


def test_rows_from_the_old_layout_keep_their_path(calc_package, forge_home, db):
    """A package ingested under corpus/NAME-VERSION stays there and is still found."""
    [result] = ingest(forge_home, db, calc_package, keep=True, trained_rows=no_rows)
    old = forge_home.dir("corpus") / "calc-1.0"
    Path(result.path).rename(old)
    db.execute("UPDATE packages SET path = 'corpus/calc-1.0'")
    db.conn.commit()
    assert (
        ingest(forge_home, db, calc_package, keep=True, trained_rows=no_rows)[0].outcome
        == "duplicate"
    )
    assert [p.name for p in forge_home.dir("corpus").iterdir()] == ["calc-1.0"]
    from appliance.harness.spec import commit_specs

    [spec] = commit_specs(forge_home, db, "calc")
    assert spec.repo == old / "repo"


def _nest(folder: Path, depth: int) -> None:
    # One level at a time: os.makedirs itself recurses once per level.
    here = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=here)
            below = os.open("a", os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = below
    finally:
        os.close(here)


def test_folders_nested_thousands_deep_are_refused_not_recursed(calc_package, forge_home, db):
    """os.walk and copytree recurse once per level: 1,500 levels under repo/refs/ was a
    RecursionError before anything was judged."""
    bad = copy_package(calc_package, forge_home.dir("ingest") / "a-deep")
    _nest(bad / "repo" / "refs", 1500)
    copy_package(calc_package, forge_home.dir("ingest") / "b-good")
    try:
        report = validate(bad, forge_home)
        assert not report.ok and report.checks["files"] == "fail"
        assert any(p.rule == "too-deep" for p in report.problems), report.problems
        results = ingest(forge_home, db, trained_rows=no_rows)
        assert [(r.source, r.outcome) for r in results] == [
            ("a-deep", "rejected"),
            ("b-good", "accepted"),
        ]
        assert any("[too-deep]" in r for r in results[0].reasons), results[0].reasons
    finally:  # shutil.rmtree (pytest's clean-up) recurses too
        for folder in ("ingest", "quarantine"):
            subprocess.run(["rm", "-rf", str(forge_home.dir(folder))], check=True)


def test_a_folder_name_that_is_not_utf8_is_quarantined(calc_package, forge_home, db):
    folder = os.path.join(os.fsencode(forge_home.dir("ingest")), b"caf\xe9")
    os.mkdir(folder)
    (Path(os.fsdecode(folder)) / "notes.txt").write_text("not a package")
    copy_package(calc_package, forge_home.dir("ingest") / "good")
    results = ingest(forge_home, db, trained_rows=no_rows)
    assert [(r.source, r.outcome) for r in results] == [
        ("caf\\udce9", "rejected"),
        ("good", "accepted"),
    ]
    assert db.execute("SELECT source FROM ingest_events ORDER BY id").fetchall()[0] == (
        "caf\\udce9",
    )
    [quarantined] = forge_home.dir("quarantine").iterdir()
    assert "caf\\udce9" in (quarantined / "REJECTED.txt").read_text()


def test_the_quick_tree_scan_sees_every_entry_the_checks_need(tmp_path):
    """`tree_entries(unusual_only=True)` skips plain entries without decoding them; it
    must still return every link and every dotted, `~` or empty path part."""
    from appliance.packages import gitsafe

    repo = RepoBuilder(tmp_path / "src")
    (repo.path / "0first").symlink_to("/etc")  # the very first entry of the listing
    (repo.path / "a" / "b").mkdir(parents=True)
    (repo.path / "a" / "link").symlink_to("../x")
    sha = repo.commit(
        "Start",
        {".github/ci.yml": "x\n", "a/b/c~1": "y\n", ".gitignore": "z\n", "plain.py": "q\n"},
    )
    every = gitsafe.tree_entries(repo.path / ".git", sha)
    wanted = [
        e
        for e in every
        if e.is_link or any(p.startswith(".") or "~" in p for p in e.path.split("/"))
    ]
    assert gitsafe.tree_entries(repo.path / ".git", sha, unusual_only=True) == wanted
    assert {e.path for e in wanted} == {
        "0first", "a/link", ".github", ".github/ci.yml", "a/b/c~1", ".gitignore",
    }  # fmt: skip
