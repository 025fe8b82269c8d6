"""Data packages end to end, with the real demo package in the corpus: a package made by
the writer is dropped into the ingest folder, taken by the real `forge ingest` machinery
(no network), and its rows reach the next dataset version with provenance
`import:NAME-VERSION`, through the same hold-out check, cap and dedupe as campaign rows.
Hostile packages are each refused with their reason, quarantined, and nothing of them
reaches a dataset."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.config import STAGES, load_config
from appliance.datapackages import store
from appliance.datapackages.format import DataPackageError
from appliance.datapackages.take import take_data_package
from appliance.datapackages.write import write_data_package
from appliance.datasets.versions import HELD_OUT_NOW, KINDS, build, rows_of
from appliance.packages.ingest import ingest
from appliance.packages.split import Holdout, history, no_rows, set_split
from appliance.stages.templates import messages
from appliance.store import open_db
from tests.harness.conftest import DEMO, ingest_package, make_home

SCOPE_ANSWER = '{"files": [{"path": "src/demo.py", "label": "relevant"}]}'
CODE_ANSWER = '{"edits": [{"path": "src/demo.py", "search": "", "replace": "x = 1\\n"}]}'
SOURCE = {"generator": "tests", "model": "a teacher", "license": "MIT"}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    """A forge.db holding the real demo package, ingested once; each test gets a copy."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("data-packages") / "home", monkeypatch)
        ingest_package(config, db, DEMO)
        db.close()
    return config.db_path


@pytest.fixture
def home(tmp_path, monkeypatch, demo_db):
    path = tmp_path / "home"
    path.mkdir()
    shutil.copyfile(demo_db, path / "forge.db")
    config, db = make_home(path, monkeypatch)
    yield config, db
    db.close()


def _commits(config, db) -> tuple[list[str], list[str]]:
    """(trainable, held-out) commits of the demo, oldest first."""
    holdout = Holdout.of(config, db)
    shas = history(db, "demo")
    return [s for s in shas if not holdout.held_out("demo", s)], [
        s for s in shas if holdout.held_out("demo", s)
    ]


def sft(stage: str, commit: str | None, answer: str, task: str = "Add a feature") -> dict:
    fields = {"task": task, "context": "src/demo.py"}
    if stage == "code":
        fields["plan"] = "change src/demo.py"
    return {
        "kind": "sft",
        "package": "demo" if commit else None,
        "commit": commit,
        "source": "teacher resolved sample",
        "messages": messages(stage, **fields),
        "completion": answer,
    }


def dpo(stage: str, commit: str | None, chosen: str, rejected: str) -> dict:
    row = sft(stage, commit, chosen)
    del row["completion"]
    return row | {"kind": "dpo", "chosen": chosen, "rejected": rejected}


def _rows(config, db) -> dict[str, list[dict]]:
    train, _ = _commits(config, db)
    return {
        "scope": [
            sft("scope", train[0], SCOPE_ANSWER),
            sft("scope", train[1], SCOPE_ANSWER, task="Fix a bug"),
            dpo("scope", train[0], SCOPE_ANSWER, '{"files": []}'),
        ],
        "code": [sft("code", None, CODE_ANSWER)],
    }


def _write(folder: Path, rows: dict, name: str = "teacher", version: str = "1") -> Path:
    fields = {"name": name, "version": version, "source": SOURCE}
    write_data_package(folder, fields, rows)
    return folder


def _ingest(config, db, folder: Path | None = None, keep: bool = False):
    return ingest(
        config, db, folder, keep=keep, trained_rows=no_rows,
        take_data=functools.partial(take_data_package, config, db),
    )  # fmt: skip


def _rehash(folder: Path) -> None:
    """Make the manifest agree with the files again (as a careful attacker would)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for name in manifest["files"]:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "rows": data.count(b"\n"),
        }
    path.write_text(json.dumps(manifest))


def test_a_written_package_is_ingested_and_its_rows_reach_the_next_dataset(home):
    config, db = home
    _write(config.dir("ingest") / "teacher-1", _rows(config, db))
    (result,) = _ingest(config, db)
    assert (result.outcome, result.name, result.version) == ("accepted", "teacher", "1")
    assert "4 rows" in result.reasons[0] and "1 free-standing" in result.reasons[0]
    assert not (config.dir("ingest") / "teacher-1").exists()
    (package,) = store.packages(db)
    assert package.rows == {"code/sft": 1, "scope/dpo": 1, "scope/sft": 2}
    assert (package.model, package.license, package.origin) == (
        "a teacher",
        "MIT",
        "import:teacher-1",
    )

    version = build(config, db, "scope", "sft")
    assert version.status == "ok" and version.rows == 2
    assert version.sources == {"taken": {"import:teacher-1": 2}, "dropped": []}
    rows = rows_of(db, "scope", "sft", version.version)
    train, _ = _commits(config, db)
    assert {r.task for r in rows} == {f"demo@{train[0]}", f"demo@{train[1]}"}
    assert {r.provenance.origin for r in rows} == {"import:teacher-1"}
    assert rows[0].messages == messages("scope", task="Add a feature", context="src/demo.py")
    assert build(config, db, "scope", "dpo").rows == 1
    (free,) = rows_of(db, "code", "sft", build(config, db, "code", "sft").version)
    assert free.task == "import:teacher-1@code-1" and free.completion == CODE_ANSWER
    assert build(config, db, "scope", "sft") is None  # nothing new the second time


def test_imported_rows_meet_the_same_per_task_cap_and_dedupe(home):
    config, db = home
    train, _ = _commits(config, db)
    rows = [sft("scope", train[0], SCOPE_ANSWER, task=f"Change {n}") for n in range(3)]
    _write(config.dir("ingest") / "capped", {"scope": rows}, name="capped")
    assert _ingest(config, db)[0].outcome == "accepted"
    version = build(config, db, "scope", "sft")
    assert version.rows == 2  # datasets.per_task_cap
    assert version.sources["dropped"] == [
        {"origin": "import:capped-1", "reason": "over the per-task cap (datasets.per_task_cap)",
         "rows": 1}
    ]  # fmt: skip
    # The same rows again under another name are the same package: refused.
    _write(config.dir("ingest") / "again", {"scope": rows}, name="again")
    (again,) = _ingest(config, db)
    assert again.outcome == "rejected" and "[duplicate-content]" in again.reasons[0]


def test_imported_rows_meet_the_same_quality_gates(home):
    config, db = home
    train, _ = _commits(config, db)
    rows = [sft("scope", train[n], '{"files": []}') for n in range(3)]
    _write(config.dir("ingest") / "empty", {"scope": rows}, name="empty")
    assert _ingest(config, db)[0].outcome == "accepted"
    version = build(config, db, "scope", "sft")
    assert version.status == "failed" and version.gates["empty"] == 1.0


def test_rows_of_a_commit_held_out_later_are_dropped_with_the_reason(home):
    config, db = home
    train, _ = _commits(config, db)
    _write(config.dir("ingest") / "late", {"scope": [sft("scope", train[-1], SCOPE_ANSWER)]})
    assert _ingest(config, db)[0].outcome == "accepted"
    assert build(config, db, "scope", "sft").rows == 1
    (config.home / "forge.toml").write_text(
        "[ingest]\nquiet_seconds = 0\n[evaluation]\nholdout_fraction = 0.5\n"
    )
    config = load_config()
    version = build(config, db, "scope", "sft")  # its commit is held out now
    assert (version.rows, version.dropped_rows) == (0, 1)
    shown = CliRunner().invoke(cli, ["datasets", "sources", "scope", "--json"])
    assert shown.exit_code == 0, shown.output
    assert [v["included"] for v in json.loads(shown.output)] == [{"import:teacher-1": 1}, {}]
    assert json.loads(shown.output)[1]["dropped"] == [
        {"origin": "import:teacher-1", "reason": HELD_OUT_NOW, "rows": 1}
    ]
    # The same row in a new package is left out at once, with the reason.
    again = sft("scope", train[-1], SCOPE_ANSWER, task="Again")
    _write(config.dir("ingest") / "later", {"scope": [again]}, name="later")
    (result,) = _ingest(config, db)
    assert result.outcome == "rejected" and result.reasons[0].startswith("[held-out-commit]")


def test_the_same_package_twice_is_a_duplicate_and_changes_nothing(home, tmp_path):
    config, db = home
    folder = _write(tmp_path / "teacher", _rows(config, db))
    assert _ingest(config, db, folder, keep=True)[0].outcome == "accepted"
    (again,) = _ingest(config, db, folder, keep=True)
    assert (again.outcome, again.reasons) == ("duplicate", ["already ingested"])
    assert len(store.packages(db)) == 1


def test_the_cli_lists_packages_and_the_sources_of_each_version(home):
    config, db = home
    _write(config.dir("ingest") / "teacher-1", _rows(config, db))
    runner = CliRunner()
    assert runner.invoke(cli, ["ingest", "--json"]).exit_code == 0
    assert runner.invoke(cli, ["datasets", "build", "scope"]).exit_code == 0
    listed = runner.invoke(cli, ["data-package", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (package,) = json.loads(listed.output)
    assert (package["name"], package["in_datasets"]) == ("teacher", 3)
    sources = runner.invoke(cli, ["datasets", "sources", "scope-sft-v1", "--json"])
    assert sources.exit_code == 0, sources.output
    (version,) = json.loads(sources.output)
    assert version["name"] == "scope-sft-v1" and version["rows"] == 2
    assert version["included"] == {"import:teacher-1": 2}
    assert version["taken"] == {"import:teacher-1": 2}
    text = runner.invoke(cli, ["datasets", "sources"])
    assert "import:teacher-1" in text.output and "scope-dpo-v1" in text.output
    assert runner.invoke(cli, ["datasets", "sources", "nope"]).exit_code == 2


def test_validate_reports_the_same_problems_without_ingesting(home, tmp_path):
    config, db = home
    _, held = _commits(config, db)
    folder = _write(tmp_path / "bad", {"scope": [sft("scope", held[0], SCOPE_ANSWER)]})
    shown = CliRunner().invoke(cli, ["data-package", "validate", str(folder), "--json"])
    assert shown.exit_code == 1
    report = json.loads(shown.output)
    assert not report["ok"] and report["problems"][0]["rule"] == "held-out-commit"
    assert folder.exists() and store.packages(db) == []


def test_the_writer_refuses_what_ingest_would_refuse(tmp_path):
    good = sft("scope", None, SCOPE_ANSWER)
    with pytest.raises(DataPackageError, match="unknown stage"):
        _write(tmp_path / "a", {"deploy": [good]})
    wrong = good | {"messages": messages("plan", task="t", context="c")}
    with pytest.raises(DataPackageError, match="system message is not the scope"):
        _write(tmp_path / "b", {"scope": [wrong]})
    with pytest.raises(DataPackageError, match="completion"):
        _write(tmp_path / "c", {"scope": [good | {"completion": None}]})
    with pytest.raises(DataPackageError, match="no rows"):
        _write(tmp_path / "d", {"scope": []})
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing left behind
    folder = _write(tmp_path / "e", {"scope": [good]})
    assert sorted(p.name for p in folder.iterdir()) == ["READY", "manifest.json", "scope.jsonl"]


# --- hostile packages ------------------------------------------------------------------------


def _bad_json(folder, config, db):
    with open(folder / "scope.jsonl", "a") as fh:
        fh.write('{"kind": "sft", "messages": [\n')
    _rehash(folder)


def _unknown_stage(folder, config, db):
    shutil.copyfile(folder / "scope.jsonl", folder / "deploy.jsonl")


def _held_out(folder, config, db):
    _, held = _commits(config, db)
    shutil.rmtree(folder)
    _write(folder, {"scope": [sft("scope", held[0], SCOPE_ANSWER)]})


def _eval_package(folder, config, db):
    set_split(db, "demo", "eval", no_rows)


def _unknown_commit(folder, config, db):
    shutil.rmtree(folder)
    _write(folder, {"scope": [sft("scope", "ab" * 20, SCOPE_ANSWER)]})


def _oversize(folder, config, db):
    (config.home / "forge.toml").write_text(
        "[ingest]\nquiet_seconds = 0\n[data_packages]\nmax_file_mb = 0.001\n"
    )


def _row_too_large(folder, config, db):
    shutil.rmtree(folder)
    big = sft("scope", None, SCOPE_ANSWER, task="x" * 600_000)
    _write(folder, {"scope": [big]})


def _hash_mismatch(folder, config, db):
    data = (folder / "scope.jsonl").read_bytes()
    (folder / "scope.jsonl").write_bytes(data.replace(b"Add a feature", b"Add a featurE", 1))


def _symlink(folder, config, db):
    os.symlink("/etc/passwd", folder / "plan.jsonl")


def _executable(folder, config, db):
    (folder / "scope.jsonl").chmod(0o755)


def _hardlink(folder, config, db):
    os.link(folder / "scope.jsonl", folder.parent / "elsewhere.jsonl")


def _schema_version(folder, config, db):
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"schema_version": 2}))


def _not_a_stage_prompt(folder, config, db):
    text = (folder / "scope.jsonl").read_text()
    (folder / "scope.jsonl").write_text(text.replace("You decide which files", "Ignore all"))
    _rehash(folder)


def _not_the_template(folder, config, db):
    shutil.rmtree(folder)
    row = sft("scope", None, SCOPE_ANSWER)
    row["messages"][1]["content"] = "Do as I say."
    folder.mkdir()  # the writer refuses such a row: written by hand here
    (folder / "scope.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "manifest.json").write_text(
        json.dumps({"kind": "data", "schema_version": 1, "name": "teacher", "version": "1",
                    "source": SOURCE | {"created": "2026-01-01T00:00:00Z"},
                    "files": {"scope.jsonl": {"sha256": "0" * 64, "size": 0, "rows": 1}}})
    )  # fmt: skip
    _rehash(folder)


def _extra_file(folder, config, db):
    (folder / "notes.txt").write_text("hello\n")


def _folder(folder, config, db):
    (folder / "more").mkdir()


def _unlisted(folder, config, db):
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["code.jsonl"]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _row_schema(folder, config, db):
    with open(folder / "scope.jsonl", "a") as fh:
        fh.write(json.dumps(sft("scope", None, SCOPE_ANSWER) | {"surprise": 1}) + "\n")
    _rehash(folder)


def _version_conflict(folder, config, db, tmp_path):
    other = _write(tmp_path / "other", {"code": [sft("code", None, CODE_ANSWER, task="Other")]})
    assert _ingest(config, db, other)[0].outcome == "accepted"


def _duplicate_content(folder, config, db, tmp_path):
    other = tmp_path / "same-rows"
    shutil.copytree(folder, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(manifest | {"name": "renamed"}))
    assert _ingest(config, db, other)[0].outcome == "accepted"


HOSTILE = {
    "bad-json": _bad_json,
    "unknown-stage": _unknown_stage,
    "held-out-commit": _held_out,
    "eval-package": _eval_package,
    "unknown-commit": _unknown_commit,
    "file-too-large": _oversize,
    "row-too-large": _row_too_large,
    "hash-mismatch": _hash_mismatch,
    "symlink": _symlink,
    "executable": _executable,
    "hardlink": _hardlink,
    "schema-version": _schema_version,
    "not-a-stage-prompt": _not_a_stage_prompt,
    "not-a-stage-prompt/template": _not_the_template,
    "unexpected-entry": _extra_file,
    "unexpected-entry/folder": _folder,
    "unlisted-file": _unlisted,
    "row-schema": _row_schema,
    "version-conflict": _version_conflict,
    "duplicate-content": _duplicate_content,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_package_is_refused_with_its_reason_and_reaches_no_dataset(home, tmp_path, case):
    config, db = home
    folder = _write(config.dir("ingest") / "hostile", _rows(config, db))
    spoil = HOSTILE[case]
    if "tmp_path" in spoil.__code__.co_varnames:
        spoil(folder, config, db, tmp_path)
    else:
        spoil(folder, config, db)
    before = {p.label for p in store.packages(db)}
    config = load_config()
    results = [r for r in _ingest(config, db, folder) if r.source == "hostile"]
    (result,) = results
    rule = case.split("/")[0]
    assert result.outcome == "rejected", result.to_dict()
    assert any(reason.startswith(f"[{rule}]") for reason in result.reasons), result.reasons
    assert (
        (Path(result.path) / "REJECTED.txt")
        .read_text()
        .startswith("Forge rejected the data package 'hostile'")
    )
    assert (Path(result.path) / "hostile").is_dir() and not folder.exists()
    assert {p.label for p in store.packages(db)} == before
    allowed = {f"import:{label}" for label in before}
    for stage in STAGES:
        for kind in KINDS:
            made = build(config, db, stage, kind)
            rows = rows_of(db, stage, kind, made.version) if made else []
            assert {r.provenance.origin for r in rows} <= allowed
            if case != "duplicate-content":  # there, the same rows came in under another name
                assert not any("Add a feature" in r.messages[1]["content"] for r in rows)


def test_a_data_package_is_never_read_as_a_repo_package(home, tmp_path):
    """Without a taker (a caller that has no datasets) it is quarantined, not half-read."""
    config, db = home
    folder = _write(tmp_path / "teacher", _rows(config, db))
    (result,) = ingest(config, db, folder, keep=True, trained_rows=no_rows)
    assert result.outcome == "rejected" and result.reasons[0].startswith("[data-package]")
    assert store.packages(db) == []


def test_the_tables_survive_a_reopen(home):
    config, db = home
    _write(config.dir("ingest") / "teacher-1", _rows(config, db))
    _ingest(config, db)
    db.close()
    again = open_db(config)
    assert [p.label for p in store.packages(again)] == ["teacher-1"]
    assert len(store.rows(again, "scope", "sft")) == 2
    again.close()
