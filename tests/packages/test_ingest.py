"""Ingest: accepted packages land whole in the corpus, once, even across crashes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.packages.ingest import ingest
from appliance.packages.split import no_rows
from tests.conftest import copy_package


def _corpus(config) -> list[str]:
    return sorted(p.name for p in config.dir("corpus").iterdir())


def test_accepted_package_is_recorded_with_its_commits(calc_package, forge_home, db):
    copy_package(calc_package, forge_home.dir("ingest") / "calc")
    [result] = ingest(forge_home, db, trained_rows=no_rows)
    assert result.outcome == "accepted", result.reasons
    assert _corpus(forge_home) == ["calc@1.0"]
    row = db.execute("SELECT name, version, path, test_command FROM packages").fetchone()
    assert row[:2] == ("calc", "1.0")
    assert json.loads(row[3]) == ["pytest", "-q"]
    manifest = json.loads((calc_package / "manifest.json").read_text())
    shas = [r[0] for r in db.execute("SELECT sha FROM commits ORDER BY id")]
    assert shas == [c["sha"] for c in manifest["commits"]]
    assert not (forge_home.dir("ingest") / "calc").exists()
    # The corpus repository is a clean bare repository that git can read.
    from appliance.packages import gitsafe

    assert row[2] == "corpus/calc@1.0"  # relative to FORGE_HOME
    log = gitsafe.git(["log", "--format=%s"], git_dir=forge_home.home / row[2] / "repo").decode()
    assert "Add subtraction to the calculator" in log


def test_same_package_twice_is_not_duplicated(calc_package, forge_home, db):
    copy_package(calc_package, forge_home.dir("ingest") / "first")
    copy_package(calc_package, forge_home.dir("ingest") / "second-copy")
    results = ingest(forge_home, db, trained_rows=no_rows)
    assert [r.outcome for r in results] == ["accepted", "duplicate"]
    copy_package(calc_package, forge_home.dir("ingest") / "third")
    assert [r.outcome for r in ingest(forge_home, db, trained_rows=no_rows)] == ["duplicate"]
    assert db.execute("SELECT COUNT(*) FROM packages").fetchone()[0] == 1
    assert _corpus(forge_home) == ["calc@1.0"]
    assert list(forge_home.dir("ingest").iterdir()) == []


def test_same_name_and_version_with_other_content_is_quarantined(calc_package, forge_home, db):
    copy_package(calc_package, forge_home.dir("ingest") / "a")
    ingest(forge_home, db, trained_rows=no_rows)
    other = copy_package(calc_package, forge_home.dir("ingest") / "b")
    data = json.loads((other / "manifest.json").read_text())
    data["description"] = "changed"
    (other / "manifest.json").write_text(json.dumps(data))
    [result] = ingest(forge_home, db, trained_rows=no_rows)
    assert result.outcome == "rejected"
    assert "[version-conflict]" in result.reasons[0]
    assert _corpus(forge_home) == ["calc@1.0"]


CRASHER = textwrap.dedent("""
    import os, sys
    from appliance.config import load_config
    from appliance.packages.ingest import ingest
    from appliance.store import open_db

    stage = sys.argv[1]

    def hook(at):
        if at == stage:
            os._exit(9)  # a power cut: no cleanup, no finally blocks

    config = load_config()
    ingest(config, open_db(config), hook=hook, trained_rows=lambda name: 0)
""")


@pytest.mark.parametrize("stage", ["copy", "validate", "commit", "record"])
def test_crash_half_way_leaves_corpus_complete_or_absent(stage, calc_package, forge_home, db):
    copy_package(calc_package, forge_home.dir("ingest") / "calc")
    proc = subprocess.run([sys.executable, "-c", CRASHER, stage], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr

    entries = [p for p in forge_home.dir("corpus").iterdir()]
    finished = [p for p in entries if not p.name.startswith(".staging-")]
    if stage == "record":
        # Renamed but not recorded: the corpus copy is complete.
        assert [p.name for p in finished] == ["calc@1.0"]
        assert (finished[0] / "manifest.json").is_file()
    else:
        assert finished == []  # anything started lives only in a staging folder
    assert db.execute("SELECT COUNT(*) FROM packages").fetchone()[0] == 0

    # The next run finishes the work: one package, complete, nothing left over.
    results = ingest(forge_home, db, trained_rows=no_rows)
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == (["duplicate", "recovered"] if stage == "record" else ["accepted"])
    assert _corpus(forge_home) == ["calc@1.0"]
    assert db.execute("SELECT COUNT(*) FROM packages").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM commits").fetchone()[0] == 1
    assert list(forge_home.dir("ingest").iterdir()) == []
    from appliance.packages.validate import validate

    report = validate(forge_home.dir("corpus") / "calc@1.0", forge_home)
    assert report.ok, report.problems


def test_second_ingest_at_once_is_refused(forge_home, db):
    from appliance.errors import ForgeError
    from appliance.packages.ingest import ingest_lock

    with ingest_lock(forge_home), pytest.raises(ForgeError, match="another ingest"):
        ingest(forge_home, db, trained_rows=no_rows)


def test_stray_file_in_ingest_is_quarantined(forge_home, db):
    (forge_home.dir("ingest") / "notes.txt").write_text("hello")
    [result] = ingest(forge_home, db, trained_rows=no_rows)
    assert result.outcome == "rejected"
    assert "[not-a-directory]" in result.reasons[0]
    assert list(forge_home.dir("ingest").iterdir()) == []


def test_keep_leaves_the_source_and_a_single_package_folder_works(
    calc_package, forge_home, db, tmp_path
):
    [result] = ingest(forge_home, db, calc_package, keep=True, trained_rows=no_rows)
    assert result.outcome == "accepted"
    assert (calc_package / "manifest.json").is_file()  # untouched
    [again] = ingest(forge_home, db, calc_package, keep=True, trained_rows=no_rows)
    assert again.outcome == "duplicate"
    assert calc_package.is_dir()
    broken = copy_package(calc_package, tmp_path / "broken")
    (broken / "manifest.json").write_text("[]")
    [rejected] = ingest(forge_home, db, broken, keep=True, trained_rows=no_rows)
    assert rejected.outcome == "rejected"
    assert broken.is_dir()
    assert "left where it was" in (Path(rejected.path) / "REJECTED.txt").read_text()


def test_finished_folder_without_manifest_is_rejected_not_waited_on(forge_home, db):
    junk = forge_home.dir("ingest") / "half-a-package"
    (junk / "packages").mkdir(parents=True)
    [result] = ingest(forge_home, db, trained_rows=no_rows)
    assert result.outcome == "rejected"
    assert any("[missing] manifest.json" in r for r in result.reasons), result.reasons


def test_a_package_named_directly_is_taken_at_once(calc_package, forge_home, db):
    (forge_home.home / "forge.toml").write_text("[ingest]\nquiet_seconds = 3600\n")
    from appliance.config import load_config

    config = load_config()
    (calc_package / "manifest.json").touch()  # just changed
    [result] = ingest(config, db, calc_package, keep=True, trained_rows=no_rows)
    assert result.outcome == "accepted"
