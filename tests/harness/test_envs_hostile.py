"""Package content never runs on the host, and environments are keyed by their content.

A hostile wheel carries a `.pth`, a `sitecustomize.py` and a console script; a hostile
repository carries a `setup.py` and a build-backend hook. Each writes a marker to an
absolute path under the test's tmp dir, outside every sandbox bind: validation, ingest and
`forge harness check` must never make one appear. The repository's own tests prove the
hooks are live: inside the sandbox they ran, and could not reach the host path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from appliance.harness.envs import ensure_env
from appliance.harness.results import gold_for
from appliance.harness.spec import commit_specs
from appliance.packages.build import BuildOptions, build_package
from appliance.packages.ingest import ingest_one
from appliance.packages.split import no_rows
from appliance.packages.validate import validate
from tests.conftest import (
    CALC_V1,
    CALC_V2,
    PYPROJECT,
    PYTEST_PINS,
    TEST_V1,
    TEST_V2,
    RepoBuilder,
    build,
)
from tests.harness.conftest import DEMO, ingest_package, make_home
from tests.packages.conftest import write_wheel

WHITESPACE = "Strip surrounding whitespace before parsing quantities"  # a demo task commit


def mark_code(host: Path) -> str:
    """Python source defining `mark(name)`: write the host marker `name`; say where it ran."""
    return (
        "import os\n\n\n"
        "def mark(name):\n"
        "    try:\n"
        f"        with open(os.path.join({str(host)!r}, name), 'w') as f:\n"
        "            f.write(str(os.getpid()))\n"
        "    except OSError:\n"
        "        return 'sandbox'  # the host path is not there: it ran confined\n"
        "    return 'host'\n"
    )


def hostile_wheel(folder: Path, host: Path) -> Path:
    """hostile 1.0: a .pth and a sitecustomize that run at every interpreter start, and a
    console script; each leaves its marker and a flag in builtins saying where it ran."""
    dist = "hostile-1.0.dist-info"
    hook = mark_code(host) + (
        "\n\ndef main():\n    return 42 if mark('entry_point') == 'sandbox' else 43\n"
    )
    files = {
        "hostile_hook.py": hook,
        "zzz.pth": "import builtins, hostile_hook; builtins.HOSTILE_PTH = "
        "hostile_hook.mark('pth')\n",
        "sitecustomize.py": "import builtins, hostile_hook\n"
        "builtins.HOSTILE_SITECUSTOMIZE = hostile_hook.mark('sitecustomize')\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: hostile\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: by-hand\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\nhostile-cli = hostile_hook:main\n",
    }
    return write_wheel(
        folder / "hostile-1.0-py3-none-any.whl", {k: v.encode() for k, v in files.items()}
    )


PROOF_TESTS = """\
import builtins
import subprocess
import sys


def test_the_pth_ran_here_and_could_not_reach_the_host():
    assert getattr(builtins, "HOSTILE_PTH", None) == "sandbox"


def test_the_sitecustomize_ran_here_and_could_not_reach_the_host():
    assert getattr(builtins, "HOSTILE_SITECUSTOMIZE", None) == "sandbox"


def test_the_entry_point_runs_here_and_cannot_reach_the_host():
    assert subprocess.run(["hostile-cli"]).returncode == 42


def test_the_build_hooks_are_live_code():
    sys.path.insert(0, ".")
    import hook_backend
    import setup

    assert hook_backend.WHERE == setup.WHERE == "sandbox"
"""


# The backend also builds (an empty editable wheel): Forge installs the project with it,
# in the sandbox, before every run.
EDITABLE_HOOK = """

def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    import pathlib
    import zipfile

    name = "calc-0-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / name, "w") as zf:
        meta = "Metadata-Version: 2.1\\nName: calc\\nVersion: 0\\n"
        zf.writestr("calc-0.dist-info/METADATA", meta)
        zf.writestr("calc-0.dist-info/WHEEL", "Wheel-Version: 1.0\\nTag: py3-none-any\\n")
    return name
"""


def hostile_repo(path: Path, host: Path) -> RepoBuilder:
    """The calculator, plus a setup.py and a pyproject build backend that leave markers."""
    repo = RepoBuilder(path)
    mark = mark_code(host)
    repo.commit(
        "Create calculator with addition",
        {
            "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "hook_backend"\n'
            'backend-path = ["."]\n\n[tool.pytest.ini_options]\npythonpath = ["src"]\n'
            'testpaths = ["tests"]\n',
            "hook_backend.py": mark + "\n\nWHERE = mark('build_backend')\n" + EDITABLE_HOOK,
            "setup.py": mark + "\n\nWHERE = mark('setup_py')\n",
            "src/calc.py": CALC_V1,
            "tests/test_calc.py": TEST_V1,
            "tests/test_proof.py": PROOF_TESTS,
        },
    )
    repo.commit(
        "Add subtraction to the calculator", {"src/calc.py": CALC_V2, "tests/test_calc.py": TEST_V2}
    )
    return repo


def test_hostile_wheel_and_repository_never_run_on_the_host(tmp_path, monkeypatch, wheelhouse):
    host = tmp_path / "host-markers"  # outside every bind: only the host can write here
    host.mkdir()
    links = tmp_path / "links"
    shutil.copytree(wheelhouse, links)
    hostile_wheel(links, host)
    repo = hostile_repo(tmp_path / "hostile-src", host)
    package = build_package(
        BuildOptions(
            source=str(repo.path),
            output=tmp_path / "hostile-pkg",
            requirements=[*PYTEST_PINS, "hostile==1.0"],
            find_links=links,
            name="hostile-calc",
            version="1.0",
        ),
        cache_dir=tmp_path / ".uv-cache",
    ).path
    config, db = make_home(tmp_path / "home", monkeypatch)

    report = validate(package, config)  # resolve, wheel checks, the dry run's env and collection
    assert report.ok, report.to_dict()
    assert sorted(p.name for p in host.iterdir()) == []

    assert ingest_one(config, db, package, keep=True, trained_rows=no_rows).outcome == "accepted"
    assert sorted(p.name for p in host.iterdir()) == []

    from click.testing import CliRunner

    from appliance.cli import cli

    out = CliRunner().invoke(cli, ["harness", "check", "hostile-calc", "--json"])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in host.iterdir()) == []
    (row,) = json.loads(out.output)
    assert row["usable"] and (row["fail_to_pass"], row["pass_to_pass"]) == (2, 4), row

    # The teeth: the same hooks ran inside the sandbox, in every run, and reached nothing.
    (spec,) = commit_specs(config, db, "hostile-calc")
    result, reused = gold_for(config, db, spec)
    assert reused
    proofs = {t for t in result.pass_to_pass if t.startswith("tests/test_proof.py::")}
    assert len(proofs) == 4, result.to_dict()
    assert sorted(p.name for p in host.iterdir()) == []


def test_bytecode_is_compiled_in_the_sandbox(tmp_path, monkeypatch, wheelhouse):
    """Warm runs start from .pyc files, though the environment's python never ran outside."""
    config, db = make_home(tmp_path / "home", monkeypatch)
    ingest_package(config, db, DEMO)
    spec = commit_specs(config, db, "demo")[0]
    env = ensure_env(config, spec)
    assert not env.built  # validation's dry run built it at ingest, for grading to reuse
    site = next(env.path.glob("lib/python3*/site-packages"))
    assert any((site / "_pytest" / "__pycache__").glob("main.*.pyc"))
    assert any((site / "pluggy" / "__pycache__").glob("*.pyc"))


def doctored_pytest(real: Path, dest: Path) -> Path:
    """pytest's own wheel, under its own name, with a runner that never calls a test: every
    test passes."""
    files = {}
    with zipfile.ZipFile(real) as zf:
        for name in zf.namelist():
            files[name] = zf.read(name)
    files["_pytest/runner.py"] += (
        b"\n\ndef pytest_runtest_call(item):  # doctored\n    return None\n"
    )
    return write_wheel(dest / real.name, files)


def test_a_doctored_wheel_gets_its_own_environment(tmp_path, monkeypatch, wheelhouse):
    links = tmp_path / "doctored-links"
    shutil.copytree(wheelhouse, links)
    (real,) = links.glob("pytest-*.whl")
    doctored_pytest(wheelhouse / real.name, links)
    # Its new test fails in the test's body before the commit (not at import), the part
    # the doctored runner skips.
    test_v1 = "import calc\n\n\ndef test_add():\n    assert calc.add(1, 2) == 3\n"
    test_v2 = test_v1 + "\n\ndef test_sub():\n    assert calc.sub(3, 2) == 1\n"
    # The demo's build backend too, so the pins are exactly the demo's.
    pyproject = PYPROJECT + '\n[build-system]\nrequires = ["setuptools>=68"]\n'
    repo = RepoBuilder(tmp_path / "calc-src")
    repo.commit(
        "Create calculator with addition",
        {"pyproject.toml": pyproject, "src/calc.py": CALC_V1, "tests/test_calc.py": test_v1},
    )
    repo.commit(
        "Add subtraction to the calculator", {"src/calc.py": CALC_V2, "tests/test_calc.py": test_v2}
    )
    package = build(repo, tmp_path / "doctored-pkg", links, name="doctored", version="1.0").path
    config, db = make_home(tmp_path / "home", monkeypatch)
    ingest_package(config, db, package)
    ingest_package(config, db, DEMO)

    (doctored,) = commit_specs(config, db, "doctored")
    demo = commit_specs(config, db, "demo")
    assert sorted(doctored.requirements) == sorted(demo[0].requirements)  # the same pins
    assert doctored.env_key != demo[0].env_key

    # Graded first, the doctored pytest passes everything: nothing fails before the commit.
    result, _ = gold_for(config, db, doctored)
    assert not result.usable and not result.fail_to_pass
    # The demo is graded as it always was, in its own environment: its whitespace task
    # still has the one test that fails before the commit and passes after.
    whitespace = next(s for s in demo if s.message.startswith(WHITESPACE))
    result, _ = gold_for(config, db, whitespace)
    assert result.status == "ok" and result.usable, result.to_dict()
    assert result.fail_to_pass == ("tests/test_parser.py::test_ignores_surrounding_whitespace",)
    assert len(list(config.dir("envs").glob("*/forge-env.json"))) == 2


def test_the_key_covers_python_platform_requirements_and_every_wheel(tmp_path):
    import dataclasses

    from appliance.harness.spec import CommitSpec

    wheels = tmp_path / "packages"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"one")
    spec = CommitSpec(
        package="p-1", package_id=1, manifest_sha256="0" * 64, repo=tmp_path, wheels=wheels,
        sha="1" * 40, parent="2" * 40, message="m", test_files=(), requirements=("a==1.0",),
        test_command=("pytest",), test_timeout_s=60.0,
        wheel_hashes=(("a-1.0-py3-none-any.whl", hashlib.sha256(b"one").hexdigest()),),
    )  # fmt: skip
    other_wheel = dataclasses.replace(
        spec, wheel_hashes=(("a-1.0-py3-none-any.whl", hashlib.sha256(b"two").hexdigest()),)
    )
    extra_wheel = dataclasses.replace(
        spec, wheel_hashes=(*spec.wheel_hashes, ("b-1.0-py3-none-any.whl", "f" * 64))
    )
    other_pins = dataclasses.replace(spec, requirements=("a==1.1",))
    keys = {s.env_key for s in (spec, other_wheel, extra_wheel, other_pins)}
    assert len(keys) == 4
    # The commit itself is not part of it: a package's commits share one environment.
    assert dataclasses.replace(spec, sha="3" * 40).env_key == spec.env_key


def test_a_wheel_replaced_in_place_installs_its_own_content(tmp_path):
    """uv caches a local wheel by path and mtime: another wheel put at the same path with
    the same mtime (a re-ingested package, a reused folder) must not get the cached files."""
    import os

    from appliance.packages.environment import create_env, wheel_hashes

    wheels, cache = tmp_path / "packages", tmp_path / "envs" / ".uv-cache"
    wheels.mkdir()

    def put(who: str) -> None:
        dist = "victim-1.0.dist-info"
        write_wheel(
            wheels / "victim-1.0-py3-none-any.whl",
            {
                "victim.py": f"WHO = {who!r}\n".encode(),
                f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: victim\nVersion: 1.0\n",
                f"{dist}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            },
        )
        os.utime(wheels / "victim-1.0-py3-none-any.whl", (1_700_000_000, 1_700_000_000))

    def installed(env: Path) -> str:
        return next(env.glob("lib/python3*/site-packages/victim.py")).read_text()

    put("first")
    create_env(tmp_path / "env1", ["victim==1.0"], wheels, cache_dir=cache)
    put("second")
    create_env(
        tmp_path / "env2",
        ["victim==1.0"],
        wheels,
        cache_dir=cache,
        expected_wheels=wheel_hashes(wheels),
    )
    assert installed(tmp_path / "env1") == "WHO = 'first'\n"
    assert installed(tmp_path / "env2") == "WHO = 'second'\n"


def test_an_environment_refuses_wheels_other_than_its_key_names(tmp_path, wheelhouse):
    from appliance.packages.environment import EnvironmentFailed, create_env, wheel_hashes

    expected = wheel_hashes(wheelhouse)
    doctored = tmp_path / "packages"
    shutil.copytree(wheelhouse, doctored)
    (real,) = doctored.glob("pytest-*.whl")
    doctored_pytest(wheelhouse / real.name, doctored)
    with pytest.raises(EnvironmentFailed, match="not the ones"):
        create_env(
            tmp_path / "env",
            PYTEST_PINS,
            doctored,
            cache_dir=tmp_path / "envs" / ".uv-cache",
            expected_wheels=expected,
        )
    assert not (tmp_path / "env").exists()
