"""One error hierarchy: every exception class Forge defines derives from ForgeError.

Walks appliance/, daemon/ and tui/ with ast (nothing is imported), follows each class's
bases by name through the whole tree, and fails on a class that reaches a Python or
third-party exception without passing through ForgeError.
"""

from __future__ import annotations

import ast
import builtins
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from appliance.errors import ForgeError, validation_problems
from appliance.harness.junit import ReportUnreadable, parse_report
from appliance.packages.environment import EnvironmentFailed
from appliance.packages.gitsafe import GitError, git
from appliance.packages.manifest import ManifestError, parse_manifest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("appliance", "daemon", "tui")

# Classes that must not be ForgeErrors, and why.
ALLOWED = {
    # Like KeyboardInterrupt: a BaseException so no `except Exception` (nor `except
    # ForgeError`) swallows a SIGTERM stop and goes on working.
    "appliance/childproc.py:Stopped",
}


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # gitsafe.GitError, click.ClickException
        return node.attr
    return None


def _classes() -> dict[str, tuple[str, list[str]]]:
    """Every class in the tree: name → (file:name, its base names)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    where = f"{path.relative_to(ROOT)}:{node.name}"
                    bases = [b for b in map(_base_name, node.bases) if b]
                    found.setdefault(node.name, (where, bases))
    return found


def _is_builtin_exception(name: str) -> bool:
    value = getattr(builtins, name, None)
    return isinstance(value, type) and issubclass(value, BaseException)


def _verdict(name: str, classes: dict, seen: frozenset = frozenset()) -> str:
    """'forge' when `name` derives from ForgeError, 'foreign' when from another exception
    first, 'none' when it is no exception at all."""
    if name == "ForgeError":
        return "forge"
    if name in seen:
        return "none"
    if name in classes:
        verdicts = {_verdict(b, classes, seen | {name}) for b in classes[name][1]}
        for verdict in ("forge", "foreign"):
            if verdict in verdicts:
                return verdict
        return "none"
    if _is_builtin_exception(name) or name.endswith(("Error", "Exception")):
        return "foreign"
    return "none"


def test_every_exception_class_derives_from_forge_error():
    classes = _classes()
    outside = sorted(
        where
        for name, (where, _) in classes.items()
        if _verdict(name, classes) == "foreign" and where not in ALLOWED
    )
    assert not outside, f"exception classes outside the ForgeError hierarchy: {outside}"


def test_the_walk_sees_the_classes_it_judges():
    """The walk itself works: it finds ForgeErrors two levels down and the allowed ones."""
    classes = _classes()
    assert _verdict("DeclarationError", classes) == "forge"  # via PackageBuildError
    assert _verdict("GitError", classes) == "forge"
    assert _verdict("Stopped", classes) == "foreign"
    assert _verdict("Config", classes) == "none"
    assert all(where in {w for w, _ in classes.values()} for where in ALLOWED)


def test_git_error_is_a_forge_error_with_its_details(tmp_path: Path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(ForgeError) as caught:
        git(["rev-parse", "--verify", "no-such-ref"], cwd=tmp_path)
    assert isinstance(caught.value, GitError)
    assert caught.value.returncode != 0
    assert "Needed a single revision" in caught.value.stderr
    assert str(caught.value).startswith("git rev-parse --verify no-such-ref exited ")
    assert caught.value.hint is None


def test_manifest_error_keeps_its_problems():
    with pytest.raises(ForgeError) as caught:
        parse_manifest(b"[]")
    assert isinstance(caught.value, ManifestError)
    assert caught.value.problems == ["the top level must be a JSON object"]
    assert str(caught.value) == caught.value.message == "the top level must be a JSON object"


def test_report_unreadable_and_environment_failed_are_forge_errors():
    with pytest.raises(ForgeError) as caught:
        parse_report(b"<html/>")
    assert isinstance(caught.value, ReportUnreadable)
    assert str(caught.value) == "the JUnit report's root is <html>, not <testsuites>"
    failed = EnvironmentFailed("uv pip install failed", "  no such wheel\n")
    assert isinstance(failed, ForgeError)
    assert failed.output == "  no such wheel\n"
    assert str(failed) == "uv pip install failed: no such wheel"


def test_validation_problems_say_where_and_what_never_the_value():
    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        port: int
        name: str = ""

    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"port": "secret-value", "nmae": "x"})
    problems = validation_problems(caught.value)
    assert problems == [
        "port: Input should be a valid integer, unable to parse string as an integer",
        "nmae: Extra inputs are not permitted",
    ]
    assert not any("secret-value" in p for p in problems)
    with pytest.raises(ValidationError) as whole:
        Settings.model_validate([])
    assert validation_problems(whole.value, "(top)") == [
        "(top): Input should be a valid dictionary or instance of Settings"
    ]
