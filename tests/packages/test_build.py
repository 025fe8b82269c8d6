"""`forge package build`: from a path or a URL, filters, limits, nothing left on failure."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from appliance.errors import PackageBuildError
from tests.conftest import CALC_V1, CALC_V2, PYTEST_PINS, TEST_V1, TEST_V2, RepoBuilder, build, git
from tests.packages.conftest import build_from, make_wheel


def test_build_from_a_git_url(calc_repo, wheelhouse, tmp_path):
    url = f"file://{calc_repo.path}"
    from appliance.packages.build import BuildOptions, build_package
    from tests.conftest import PYTEST_PINS

    result = build_package(
        BuildOptions(
            source=url, output=tmp_path / "pkg", requirements=PYTEST_PINS, find_links=wheelhouse
        ),
        cache_dir=tmp_path / "cache",
    )
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["name"] == "calc-src"
    assert manifest["source"]["url"] == url
    assert manifest["source"]["branch"] == "main"
    assert [c["message"].strip() for c in manifest["commits"]] == [
        "Add subtraction to the calculator"
    ]


def test_max_commits_keeps_the_newest_and_since_skips_older(calc_repo, wheelhouse, tmp_path):
    calc_repo.commit(
        "Add multiplication to the calculator",
        {
            "src/calc.py": CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n",
            "tests/test_mul.py": TEST_MUL,
        },
    )
    newest = build(calc_repo, tmp_path / "a", wheelhouse, max_commits=1)
    assert [c.message.strip() for c in newest.manifest.commits] == [
        "Add multiplication to the calculator"
    ]
    # The repository is complete even when fewer commits are listed: parents stay valid.
    since = build(calc_repo, tmp_path / "b", wheelhouse, since=datetime(2024, 1, 1, 2, 30))
    assert [c.message.strip() for c in since.manifest.commits] == [
        "Add multiplication to the calculator"
    ]


def test_no_usable_commit_is_an_error_and_leaves_nothing(calc_repo, wheelhouse, tmp_path):
    with pytest.raises(PackageBuildError, match="no commit .* passes the filters"):
        build(calc_repo, tmp_path / "out", wheelhouse, since=datetime(2030, 1, 1))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out-build-")] == []


def test_unresolvable_requirement_is_an_error_and_leaves_nothing(calc_repo, wheelhouse, tmp_path):
    from appliance.packages.build import BuildOptions, build_package

    with pytest.raises(PackageBuildError, match="do not resolve"):
        build_package(
            BuildOptions(
                source=str(calc_repo.path),
                output=tmp_path / "out",
                requirements=["no-such-project==1.0"],
                find_links=wheelhouse,
            ),
            cache_dir=tmp_path / "cache",
        )
    assert not (tmp_path / "out").exists()


def test_built_repository_is_bare_clean_and_packed(calc_package):
    repo = calc_package / "repo"
    assert not (repo / "hooks").exists()
    assert "bare = true" in (repo / "config").read_text()
    assert list((repo / "objects" / "pack").glob("*.pack"))
    loose = [p for p in (repo / "objects").iterdir() if len(p.name) == 2]
    assert loose == []


def test_more_commits_than_the_limit_is_rejected(calc_repo, wheelhouse, tmp_path, monkeypatch):
    from appliance.config import load_config
    from appliance.packages.validate import validate

    calc_repo.commit(
        "Add multiplication to the calculator",
        {
            "src/calc.py": CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n",
            "tests/test_mul.py": TEST_MUL,
        },
    )
    pkg = build(calc_repo, tmp_path / "pkg", wheelhouse).path
    home = tmp_path / "home"
    home.mkdir()
    (home / "forge.toml").write_text("[packages]\nmax_commits = 1\n")
    monkeypatch.setenv("FORGE_HOME", str(home))
    report = validate(pkg, load_config())
    assert not report.ok
    assert [p.rule for p in report.problems] == ["too-many-commits"]
    assert "2 commits; the limit is 1" in report.problems[0].message


# --- Sources, declarations and the index path --------------------------------------------


# tiny-backend's module: a working PEP 517/660 backend (Forge installs the project with it,
# in the sandbox, before each run), making an editable wheel of `calc` from src/.
TINY_BACKEND = """\
import pathlib
import zipfile

WHEEL = "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = "calc-0.1-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / name, "w") as zf:
        zf.writestr("calc.pth", str(pathlib.Path.cwd() / "src") + "\\n")
        meta = "Metadata-Version: 2.1\\nName: calc\\nVersion: 0.1\\n"
        zf.writestr("calc-0.1.dist-info/METADATA", meta)
        zf.writestr("calc-0.1.dist-info/WHEEL", WHEEL)
    return name


build_wheel = build_editable
"""


@pytest.fixture
def links(tmp_path, wheelhouse) -> Path:
    """The pytest wheels, a build backend and two versions of a dependency."""
    folder = tmp_path / "links"
    shutil.copytree(wheelhouse, folder)
    make_wheel(folder, "tiny-backend", "1.0", module=TINY_BACKEND)
    make_wheel(folder, "tiny-dep", "0.5")
    make_wheel(folder, "tiny-dep", "1.0")
    return folder


TEST_MUL = "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
SRC_PYPROJECT = """\
[build-system]
requires = ["tiny-backend>=1"]
build-backend = "tiny_backend"

[project]
name = "calc"
version = "0.1"
requires-python = "{python}"
dependencies = [{deps}]

[dependency-groups]
test = ["pytest>=8"]

[tool.pytest.ini_options]
pythonpath = ["src"]
testpaths = ["tests"]
"""


def src_project(path: Path, deps: str = '"tiny-dep>=1"', python: str = ">=3.9") -> RepoBuilder:
    repo = RepoBuilder(path)
    repo.commit(
        "Create calculator with addition",
        {
            "pyproject.toml": SRC_PYPROJECT.format(deps=deps, python=python),
            "src/calc/__init__.py": CALC_V1,
            "tests/test_calc.py": TEST_V1,
        },
    )
    repo.commit(
        "Add subtraction to the calculator",
        {"src/calc/__init__.py": CALC_V2, "tests/test_calc.py": TEST_V2},
    )
    return repo


def test_src_layout_project_builds_from_its_declarations(tmp_path, links, forge_home):
    from appliance.packages.validate import validate

    repo = src_project(tmp_path / "calc-src")
    result = build_from(str(repo.path), tmp_path / "pkg", links, name="calc", version="1")
    pins = result.manifest.requirement_sets[0]
    assert "tiny-dep==1.0" in pins and "tiny-backend==1.0" in pins  # the backend ships too
    assert any(p.startswith("pytest==") for p in pins)  # from the [dependency-groups] test
    assert "tiny_backend-1.0-py3-none-any.whl" in result.manifest.wheels
    assert sorted(p.name for p in (result.path / "packages").iterdir()) == sorted(
        result.manifest.wheels
    )
    assert "pyproject.toml [dependency-groups] test" in result.declared
    assert "pyproject.toml [build-system].requires" in result.declared
    report = validate(result.path, forge_home)
    assert report.ok, report.to_dict()


def test_past_the_set_cap_commits_the_pins_do_not_satisfy_are_dropped(tmp_path, links):
    repo = src_project(tmp_path / "calc-src", deps='"tiny-dep<1"')
    # The newest commit moves to tiny-dep>=1; a middle one declares something those pins
    # still satisfy (kept), the oldest task asks for tiny-dep<1: with one set allowed,
    # dropped (tests/packages/test_requirement_sets.py: with more, it gets its own).
    repo.commit(
        "Add multiplication to the calculator",
        {
            "pyproject.toml": SRC_PYPROJECT.format(deps='"tiny-dep>=0.1"', python=">=3.9"),
            "src/calc/__init__.py": CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n",
            "tests/test_mul.py": TEST_MUL,
        },
    )
    repo.commit(
        "Add division to the calculator",
        {
            "pyproject.toml": SRC_PYPROJECT.format(deps='"tiny-dep>=1"', python=">=3.9"),
            "src/calc/div.py": "def div(a, b):\n    return a / b\n",
            "tests/test_div.py": "from calc.div import div\n\n\ndef test_div():\n"
            "    assert div(6, 3) == 2\n",
        },
    )
    result = build_from(str(repo.path), tmp_path / "pkg", links, max_requirement_sets=1)
    assert [c.message.strip() for c in result.manifest.commits] == [
        "Add multiplication to the calculator",
        "Add division to the calculator",
    ]
    assert result.removed["declares-other-dependencies"] == 1
    assert "tiny-dep==1.0" in result.manifest.requirement_sets[0]


def test_a_requirement_option_replaces_what_the_commits_declare_of_that_project(tmp_path, links):
    """`-r tiny-dep==0.5` is the operator's word: the commits' `tiny-dep>=1` does not
    conflict with it, and no commit is dropped for declaring otherwise."""
    repo = src_project(tmp_path / "calc-src")
    result = build_from(str(repo.path), tmp_path / "pkg", links, requirements=("tiny-dep==0.5",))
    assert "tiny-dep==0.5" in result.manifest.requirement_sets[0]
    assert result.removed.get("declares-other-dependencies", 0) == 0
    assert len(result.manifest.commits) == 1  # the one task commit (code and tests)


def test_requires_python_that_excludes_the_target_is_refused(tmp_path, links):
    import platform

    repo = src_project(tmp_path / "calc-src", python=">=3.99")
    with pytest.raises(PackageBuildError) as caught:
        build_from(str(repo.path), tmp_path / "pkg", links)
    assert caught.value.message == (
        f"refused: the project requires Python >=3.99, which excludes Python "
        f"{platform.python_version()}"
    )
    assert not (tmp_path / "pkg").exists()
    with pytest.raises(PackageBuildError, match="excludes Python 3.10"):
        build_from(str(repo.path), tmp_path / "pkg", links, python_version="3.10")


def test_a_bare_mirror_is_a_source(calc_repo, wheelhouse, tmp_path):
    mirror = tmp_path / "calc.git"
    git(tmp_path, "clone", "-q", "--mirror", str(calc_repo.path), str(mirror))
    result = build_from(str(mirror), tmp_path / "pkg", wheelhouse, requirements=PYTEST_PINS)
    assert result.manifest.source.branch == "main"
    assert [c.message.strip() for c in result.manifest.commits] == [
        "Add subtraction to the calculator"
    ]


def test_a_bare_mirror_without_core_bare_is_a_source_and_is_not_written(
    calc_repo, wheelhouse, tmp_path
):
    """Some mirroring tools leave core.bare unset; the source's config stays as it was."""
    mirror = tmp_path / "calc.git"
    git(tmp_path, "clone", "-q", "--mirror", str(calc_repo.path), str(mirror))
    git(mirror, "config", "--unset", "core.bare")
    before = (mirror / "config").read_bytes()
    result = build_from(str(mirror), tmp_path / "pkg", wheelhouse, requirements=PYTEST_PINS)
    assert [c.message.strip() for c in result.manifest.commits] == [
        "Add subtraction to the calculator"
    ]
    assert (mirror / "config").read_bytes() == before


def test_a_detached_head_with_no_branch_is_a_source(calc_repo, wheelhouse, tmp_path):
    calc_repo.commit(
        "Add multiplication to the calculator",
        {
            "src/calc.py": CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n",
            "tests/test_mul.py": TEST_MUL,
        },
    )
    head = git(calc_repo.path, "rev-parse", "HEAD")
    git(calc_repo.path, "checkout", "-q", "--detach", "HEAD")
    git(calc_repo.path, "branch", "-q", "-D", "main")  # what a CI checkout or a bundle gives
    result = build_from(str(calc_repo.path), tmp_path / "pkg", wheelhouse, requirements=PYTEST_PINS)
    assert result.manifest.source.head == head
    assert result.manifest.source.branch == "forge-head"
    assert len(result.manifest.commits) == 2


def serve_simple_index(root: Path, wheels: Path, uploaded: dict[str, str] | None = None):
    """A PEP 503 simple index of `wheels` on 127.0.0.1, served from a thread. With
    `uploaded` (file name → upload time, RFC 3339), PEP 691 JSON pages with PEP 700's
    upload times instead, as PyPI gives them."""
    import functools
    import hashlib
    import html
    import http.server
    import json
    import threading

    from packaging.utils import canonicalize_name, parse_wheel_filename

    (root / "files").mkdir(parents=True)
    projects: dict[str, list[str]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        shutil.copy(wheel, root / "files" / wheel.name)
        projects.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(
            wheel.name
        )
    (root / "simple").mkdir()
    for project, files in projects.items():
        (root / "simple" / project).mkdir()
        links = "".join(
            f'<a href="../../files/{html.escape(f)}">{html.escape(f)}</a>\n' for f in files
        )
        (root / "simple" / project / "index.html").write_text(
            f"<html><body>\n{links}</body></html>\n"
        )

    def page(project: str) -> bytes:
        files = [
            {
                "filename": f,
                "url": f"../../files/{f}",
                "hashes": {"sha256": hashlib.sha256((root / "files" / f).read_bytes()).hexdigest()},
                "size": (root / "files" / f).stat().st_size,
                "upload-time": (uploaded or {})[f],
            }
            for f in projects[project]
        ]
        versions = sorted({str(parse_wheel_filename(f)[1]) for f in projects[project]})
        meta = {"api-version": "1.1"}
        return json.dumps({"meta": meta, "name": project, "files": files, "versions": versions})

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if uploaded is None or len(parts) != 2 or parts[0] != "simple":
                return super().do_GET()
            body = page(parts[1]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_index_path_resolves_and_downloads_from_a_local_index(tmp_path, links, monkeypatch):
    for proxy in ("no_proxy", "NO_PROXY"):  # a CI proxy must not stand between us and ourselves
        monkeypatch.setenv(proxy, "127.0.0.1,localhost")
    repo = src_project(tmp_path / "calc-src")
    server = serve_simple_index(tmp_path / "index", links)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple"
        result = build_from(str(repo.path), tmp_path / "pkg", None, index_url=url)
    finally:
        server.shutdown()
    assert "tiny-dep==1.0" in result.manifest.requirement_sets[0]
    assert "tiny_backend-1.0-py3-none-any.whl" in result.manifest.wheels
    assert len(result.manifest.wheels) == len(result.manifest.requirement_sets[0])


def test_from_an_index_each_set_is_resolved_as_of_its_commit(tmp_path, links, monkeypatch):
    """tiny-dep 1.0 reached the index in 2030, after the commits (2024): the set holds
    0.5, what the developers had; --latest takes today's index."""
    for proxy in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(proxy, "127.0.0.1,localhost")
    repo = src_project(tmp_path / "calc-src", deps='"tiny-dep>=0.5"')
    uploaded = {w.name: "2020-01-01T00:00:00Z" for w in links.glob("*.whl")}
    uploaded["tiny_dep-1.0-py3-none-any.whl"] = "2030-01-01T00:00:00Z"
    server = serve_simple_index(tmp_path / "index", links, uploaded)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple"
        then = build_from(str(repo.path), tmp_path / "then", None, index_url=url)
        today = build_from(str(repo.path), tmp_path / "today", None, index_url=url, latest=True)
    finally:
        server.shutdown()
    assert "tiny-dep==0.5" in then.manifest.requirement_sets[0]
    assert "tiny-dep==1.0" in today.manifest.requirement_sets[0]


def test_cli_build_from_a_file_url_reports_each_filter(calc_repo, wheelhouse, tmp_path, forge_home):
    from click.testing import CliRunner

    from appliance.cli import cli

    calc_repo.commit("Raise on bad input now", {"src/calc.py": CALC_V2 + "\nX = 1\n"})
    args = ["package", "build", f"file://{calc_repo.path}", "--find-links", str(wheelhouse)]
    out = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a"), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["kept"] == 1 and data["removed"]["no-test-change"] == 1
    assert data["removed"]["root"] == 1
    out = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b"), "--any-commit"])
    assert out.exit_code == 0, out.output
    assert "2 kept as tasks" in out.output and "removed by root" in out.output


def test_a_plain_folder_inside_a_repository_is_not_that_repository(calc_repo, wheelhouse, tmp_path):
    plain = calc_repo.path / "notes"
    plain.mkdir()
    with pytest.raises(PackageBuildError, match="notes is not a git repository"):
        build_from(str(plain), tmp_path / "pkg", wheelhouse, requirements=PYTEST_PINS)


def test_another_python_and_platform_are_resolved_for(tmp_path, links):
    repo = src_project(tmp_path / "calc-src", python=">=3.9,<3.13")
    result = build_from(
        str(repo.path),
        tmp_path / "pkg",
        links,
        python_version="3.12",
        platform="aarch64-manylinux_2_28",
    )
    assert "tiny-dep==1.0" in result.manifest.requirement_sets[0]
    with pytest.raises(PackageBuildError, match="--platform 'windows' is not one"):
        build_from(str(repo.path), tmp_path / "b", links, platform="windows")
    with pytest.raises(PackageBuildError, match="--python-version '3' is not"):
        build_from(str(repo.path), tmp_path / "c", links, python_version="3")
