"""The project install on the docker backend: the worktree is seen at the same fixed place
(a bind with a target), so an install built in one container serves the next one."""

from __future__ import annotations

from appliance.harness.grading import grade_gold
from appliance.harness.spec import commit_specs
from tests.conftest import build
from tests.harness.conftest import ingest_package
from tests.harness.test_project_install import verpkg_repo


def test_generated_version_project_grades_on_docker(
    tmp_path, docker_sandbox_config, db, wheelhouse
):
    config = docker_sandbox_config
    repo = verpkg_repo(tmp_path / "verpkg-src")
    package = build(repo, tmp_path / "verpkg-pkg", wheelhouse, name="verpkg", version="1")
    ingest_package(config, db, package.path)
    (spec,) = commit_specs(config, db, "verpkg")
    gold = grade_gold(config, spec, runs=1)
    assert gold.usable, gold.to_dict()
    assert gold.fail_to_pass == ("tests/test_verpkg.py::test_shout",)
    assert len(gold.pass_to_pass) == 2  # the installed version and the console script
