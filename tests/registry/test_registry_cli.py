"""`forge rollback` and `forge adapters` as an operator runs them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance import registry
from appliance.cli import cli
from tests.registry.conftest import add_adapter


@pytest.mark.parametrize("command", [["rollback"], ["adapters"], ["package", "split"]])
def test_help(command):
    out = CliRunner().invoke(cli, [*command, "--help"])
    assert out.exit_code == 0 and "Usage:" in out.output


def test_rollback_and_adapters(db):
    for version in (1, 2, 3):
        add_adapter(db, "scope", version, loss=0.1 * version)
    registry.promote(db, "scope", 1)
    registry.promote(db, "scope", 2)
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["adapters", "scope", "--json"]).output)
    assert [(a["name"], a["status"], a["servable"]) for a in listed] == [
        ("scope-v1", "inactive", True),
        ("scope-v2", "active", True),
        ("scope-v3", "candidate", True),
    ]
    human = runner.invoke(cli, ["adapters"])
    assert human.exit_code == 0
    assert "scope-v2" in human.output and "active" in human.output and "servable" in human.output

    out = runner.invoke(cli, ["rollback", "scope", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {
        "stage": "scope", "from": "scope-v2", "to": "scope-v1", "from_version": 2,
        "to_version": 1, "via": "foreground",  # no daemon runs
    }  # fmt: skip
    out = runner.invoke(cli, ["rollback", "scope", "--to", "v3"])
    assert out.exit_code == 0 and out.output.strip() == "scope-v1 → scope-v3"
    out = runner.invoke(cli, ["rollback", "scope", "--to", "base"])
    assert out.exit_code == 0 and out.output.strip() == "scope-v3 → base"
    assert registry.active(db, "scope") is None


def test_rollback_errors(db):
    runner = CliRunner()
    out = runner.invoke(cli, ["rollback", "plan"])
    assert out.exit_code == 1 and "nothing is active for plan" in out.output
    out = runner.invoke(cli, ["rollback", "plan", "--to", "v7"])
    assert out.exit_code == 2 and "plan has no version v7" in out.output
    out = runner.invoke(cli, ["rollback", "plan", "--to", "latest"])
    assert out.exit_code == 2 and "names no version" in out.output
    out = runner.invoke(cli, ["rollback", "poetry"])
    assert out.exit_code == 2 and "unknown stage" in out.output
    out = runner.invoke(cli, ["adapters", "poetry"])
    assert out.exit_code == 2 and "unknown stage" in out.output
