"""`forge teacher run` with real parts: the demo package, the real index, harness and
sandbox, real git; as the teacher the real SmolLM2 behind `forge serve` on loopback, or
an OpenAI-compatible oracle (tests/teacher/oracle.py: the real commits' answers, standing
in for a strong hosted model) so that samples resolve and rows exist. The data package
it writes is carried to a second, fresh FORGE_HOME and taken there by the normal ingest
and `forge datasets build`."""

from __future__ import annotations

import json
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.campaign.truth import diff_truth
from appliance.cli import cli
from appliance.config import STAGES
from appliance.datasets.versions import latest, rows_of
from appliance.harness.spec import package_specs
from appliance.packages.corpus import find_package
from appliance.packages.split import Holdout
from appliance.teacher.endpoint import RateLimit, public_url
from appliance.teacher.run import TeacherOptions, resolve_package, teacher_run
from appliance.teacher.state import STATE_NAME
from tests.harness.conftest import DEMO, ingest_package, make_home
from tests.serve.conftest import running, serve_home, served_rows
from tests.teacher.oracle import MODEL, Oracle, serving

# Small prompts (the student's) and one gold run per commit keep the file to minutes.
FAST = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 48
context_tokens = 384
"""
KEY_ENV = "FORGE_TEST_TEACHER_KEY"
SECRET = f"sk-teacher-test-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def connected(tmp_path_factory):
    """The connected side's FORGE_HOME: SmolLM2 as the student (its tokenizer and window
    size the prompts) and as `forge serve`'s model; the demo package ingested."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = serve_home(tmp_path_factory.mktemp("connected"), monkeypatch, FAST)
        resolve_package(config, db, str(DEMO))  # a repo package folder: ingested, left in place
        yield config, db
        db.close()


@pytest.fixture(scope="module")
def served(connected):
    with running(connected[0]) as service:
        yield service


def _forge(config, *args: str, env: dict | None = None):
    runner = CliRunner(env={"FORGE_HOME": str(config.home), **(env or {})})
    return runner.invoke(cli, [str(a) for a in args])


def _teach(config, out: Path, endpoint: str, model: str, *more: str, env=None):
    return _forge(config, "teacher", "run", *more, "-o", out, "--endpoint", endpoint,
                  "--model", model, "--license", "test-only", env=env)  # fmt: skip


def _truths(config, db) -> dict:
    """Commit message → what the commit did, for every commit of the demo."""
    package = find_package(db, "demo")
    return {
        s.message: diff_truth(s.repo, s.parent, s.sha) for s in package_specs(config, db, package)
    }


def _secret_in(root: Path) -> list[str]:
    return [
        str(p) for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and SECRET.encode() in p.read_bytes()
    ]  # fmt: skip


def test_a_teachers_package_is_taken_by_a_fresh_box_and_reaches_its_datasets(connected, tmp_path):
    config, db = connected
    out = tmp_path / "run"
    with serving(Oracle(_truths(config, db), SECRET)) as url:
        done = _teach(config, out, url, MODEL, str(DEMO), "--commits", 2, "--samples", 2,
                      "--concurrency", 2, "--api-key-env", KEY_ENV, "--json",
                      env={KEY_ENV: SECRET})  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["package"].startswith("demo") and len(report["commits"]) == 2
    assert report["ran"] == 4 and report["skipped"] == 0 and report["calls"] >= 16
    # Of the two samples of each commit, one got the real edits and one undid them.
    assert report["outcomes"]["resolved"] == 2
    assert sum(report["outcomes"].values()) == 4
    assert set(report["rows"]) == set(STAGES)
    assert all(kinds["sft"] == 2 for kinds in report["rows"].values())  # a row per commit
    assert report["rows"]["code"]["dpo"] == 2  # the right edits over the wrong ones
    holdout = Holdout.of(config, db)
    assert all(holdout.trainable("demo", "train", sha) for sha in report["commits"])
    package = Path(report["data_package"])
    assert package.parent == out
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["source"]["generator"] == "forge teacher run"
    assert (manifest["source"]["model"], manifest["source"]["license"]) == (MODEL, "test-only")
    checked = _forge(config, "data-package", "validate", package)
    assert checked.exit_code == 0, checked.output
    code_rows = (package / "code.jsonl").read_text()
    for line in code_rows.splitlines():
        row = json.loads(line)
        assert (row["package"], row["commit"] in report["commits"]) == ("demo", True)

    # Run again: nothing is asked, and the package is made anew from the state.
    with serving(Oracle({}, SECRET)) as url:
        again = _teach(config, out, url, MODEL, "demo", "--commits", 2, "--samples", 2,
                       "--api-key-env", KEY_ENV, "--version", "2", "--json",
                       env={KEY_ENV: SECRET})  # fmt: skip
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert (rerun["ran"], rerun["skipped"], rerun["calls"]) == (0, 4, 0)
    assert rerun["rows"] == report["rows"]
    assert sorted(p.name for p in out.iterdir()) == ["demo-teacher-2", STATE_NAME]
    assert (out / "demo-teacher-2" / "code.jsonl").read_text() == code_rows
    with serving(Oracle({}, SECRET)) as url:  # as an operator reads it
        shown = _teach(config, out, url, MODEL, "demo", "--commits", 2, "--samples", 2,
                       "--api-key-env", KEY_ENV, "--version", "2",
                       env={KEY_ENV: SECRET})  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "0 samples asked (4 done before)" in shown.output
    assert "code: dpo 2, sft 2" in shown.output and "demo-teacher-2" in shown.output
    package = out / "demo-teacher-2"
    manifest = json.loads((package / "manifest.json").read_text())

    # The receiving box: no network, only the folder carried over.
    with pytest.MonkeyPatch.context() as monkeypatch:
        there, there_db = make_home(tmp_path / "receiving", monkeypatch, FAST)
        ingest_package(there, there_db, DEMO)
        shutil.copytree(package, there.dir("ingest") / package.name)
        taken = _forge(there, "ingest", "--json")
        assert taken.exit_code == 0, taken.output
        assert [r["outcome"] for r in json.loads(taken.stdout)["results"]] == ["accepted"]
        built = _forge(there, "datasets", "build", "--json")
        assert built.exit_code == 0, built.output
        origin = f"import:{manifest['name']}-{manifest['version']}"
        found = {}
        for stage in STAGES:
            for kind in ("sft", "dpo"):
                version = latest(there_db, stage, kind)
                rows = rows_of(there_db, stage, kind, version.version) if version else []
                assert {r.provenance.origin for r in rows} <= {origin}
                found[f"{stage}/{kind}"] = len(rows)
        assert found["code/sft"] == 2 and found["code/dpo"] == 2, found
        assert found["scope/sft"] >= 1 and found["plan/sft"] >= 1, found
        there_db.close()
    # The key went to the oracle (it answers nothing without it) and nowhere else.
    assert _secret_in(tmp_path) == [] and _secret_in(config.home) == []


def test_an_interrupted_run_resumes_and_asks_nothing_twice(connected, served, tmp_path):
    """SmolLM2 behind forge serve as the teacher: every call is in the server's call log;
    a run stopped after its first sample is resumed by the same command."""
    config, db = connected
    out = tmp_path / "run"
    options = TeacherOptions(endpoint=served.url, model="coder", license="test-only",
                             api_key_env="none", commits=2, samples=1, max_tokens=64)  # fmt: skip

    class Stop(Exception):
        pass

    def stop(kind: str, info: dict) -> None:
        if kind == "sample":
            raise Stop  # as if killed right after the first sample was recorded

    before = len(served_rows(db))
    with pytest.raises(Stop):
        teacher_run(config, db, "demo", out, options, on_event=stop)
    (first,) = json.loads((out / STATE_NAME).read_text())["samples"].values()
    asked = served_rows(db)[before:]
    assert [r[1] for r in asked] == ["serve"] * len(first["stages"])
    assert [s["answer"] for s in first["stages"]] == [r[5] for r in asked]
    assert not list(out.glob("demo-teacher-*"))  # the package is written at the end

    args = ("demo", "--commits", 2, "--samples", 1, "--api-key-env", "none",
            "--max-tokens", 64, "--json")  # fmt: skip
    again = _teach(config, out, served.url, "coder", *args)
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert (report["skipped"], report["ran"]) == (1, 1)
    samples = json.loads((out / STATE_NAME).read_text())["samples"]
    (second,) = [s for s in samples.values() if s["sha"] != first["sha"]]
    asked_again = served_rows(db)[before + len(asked) :]
    assert report["calls"] == len(asked_again) == len(second["stages"])
    assert [r[5] for r in asked_again] == [s["answer"] for s in second["stages"]]
    task = json.loads(json.dumps(first["stages"][0]["messages"]))[1]["content"]
    assert all(s["messages"][1]["content"] != task for s in second["stages"])

    once_more = _teach(config, out, served.url, "coder", *args)
    report = json.loads(once_more.stdout)
    assert (report["skipped"], report["ran"], report["calls"]) == (2, 0, 0)
    assert len(served_rows(db)) == before + len(asked) + len(asked_again)
    if report["data_package"]:  # SmolLM2 rarely resolves a commit; when it does
        checked = _forge(config, "data-package", "validate", report["data_package"])
        assert checked.exit_code == 0, checked.output
    else:
        assert "no sample resolved" in report["note"]

    # Another model into the same folder is refused: its state is this run's.
    other = _teach(config, out, served.url, "reasoning", *args)
    assert other.exit_code == 2 and "another teacher run" in other.output


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_input_and_a_bad_endpoint_are_clear_errors(connected, served, tmp_path, monkeypatch):
    config, _ = connected
    out = tmp_path / "run"
    monkeypatch.delenv(KEY_ENV, raising=False)
    cases = [
        (("--api-key-env", KEY_ENV), served.url, "coder", 2, f"{KEY_ENV} holding the API key"),
        (("--api-key-env", "none"), "ftp://example", "coder", 2, "not an http(s) URL"),
        (("--api-key-env", "none"), served.url, "no-such-model", 1, "serves no model"),
        (("--api-key-env", "none"), f"http://127.0.0.1:{_closed_port()}/v1", "coder", 1,
         "cannot reach the teacher"),
        (("--api-key-env", "none"), served.url, "coder", 2, "no package named"),
    ]  # fmt: skip
    for more, endpoint, model, code, said in cases:
        package = "nosuch" if "package" in said else "demo"
        done = _teach(config, out, endpoint, model, package, *more, "--samples", 1)
        assert done.exit_code == code, (said, done.output)
        assert said in done.output and "Traceback" not in done.output, done.output
    oracle = Oracle(_truths(config, connected[1]), SECRET)
    with serving(oracle) as url:
        done = _teach(config, out, url, MODEL, "demo", "--api-key-env", KEY_ENV,
                      env={KEY_ENV: "sk-wrong-key"})  # fmt: skip
        assert done.exit_code == 1 and "refused the API key" in done.output, done.output
        assert "sk-wrong-key" not in done.output  # the server said it back; it is not shown
        # A prompt the endpoint refuses (too long for it) ends that sample, not the run.
        oracle.refuse = "plan"
        done = _teach(config, out, url, MODEL, "demo", "--commits", 1, "--samples", 1,
                      "--api-key-env", KEY_ENV, "--json", env={KEY_ENV: SECRET})  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["outcomes"] == {"refused": 1} and report["data_package"] is None
    assert "no sample resolved" in report["note"]
    assert not (out / STATE_NAME).exists() or _secret_in(out) == []


def test_smollm2_answers_through_forge_serve_make_a_package_that_validates(
    connected, served, tmp_path
):
    """SmolLM2 behind forge serve answers four stages (passed on by the oracle, which
    answers only the code stage, so that the sample resolves); its answers are rows of a
    package that `forge data-package validate` accepts."""
    config, db = connected
    before = len(served_rows(db))
    oracle = Oracle(_truths(config, db), SECRET, upstream=(served.url, "coder"))
    with serving(oracle) as url:
        done = _teach(config, tmp_path / "run", url, MODEL, "demo", "--commits", 1,
                      "--samples", 1, "--api-key-env", KEY_ENV, "--max-tokens", 64, "--json",
                      env={KEY_ENV: SECRET})  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["outcomes"] == {"resolved": 1}
    asked = served_rows(db)[before:]
    assert [r[1] for r in asked] == ["serve"] * oracle.forwarded and oracle.forwarded >= 3
    (sample,) = json.loads((tmp_path / "run" / STATE_NAME).read_text())["samples"].values()
    smol = [s for s in sample["stages"] if s["stage"] != "code"]
    assert [s["answer"] for s in smol] == [r[5] for r in asked]
    checked = _forge(config, "data-package", "validate", report["data_package"])
    assert checked.exit_code == 0, checked.output
    written = json.loads((Path(report["data_package"]) / "manifest.json").read_text())
    usable = [s["stage"] for s in sample["stages"] if s["error"] is None]
    assert sorted(written["files"]) == sorted(f"{stage}.jsonl" for stage in usable)


def test_the_rate_limit_spaces_request_starts():
    limit = RateLimit(600)  # a start every 0.1 s
    started = time.monotonic()
    for _ in range(4):
        limit.wait()
    assert time.monotonic() - started >= 0.29


def test_the_endpoint_is_kept_without_its_credentials():
    assert public_url("https://ada:pw@api.example:8443/v1?key=x") == "https://api.example:8443/v1"
