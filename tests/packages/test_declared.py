"""Dependency declarations read from a commit's own files in git, never by running them."""

from __future__ import annotations

import pytest

from appliance.packages.declared import (
    MAX_FILE_BYTES,
    DeclarationError,
    Pick,
    read_declaration,
)
from tests.conftest import RepoBuilder

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.20", "hatch-vcs"]
build-backend = "hatchling.build"

[project]
name = "Shop_Cart"
requires-python = ">=3.9"
dependencies = ["attrs>=23", "Typing_Extensions; python_version < '3.11'"]

[project.optional-dependencies]
docs = ["sphinx"]
dev = ["shop-cart[test]", "ruff"]
testing = ["pytest-mock>=3", "shop-cart[speed]"]
speed = ["ujson"]
"""


def declared(files: dict[str, str], pick: Pick | None = None, tmp_path=None, symlinks=()):
    repo = RepoBuilder(tmp_path / "src")
    for link, target in symlinks:
        (repo.path / link).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / link).symlink_to(target)
    sha = repo.commit("Start the project", files)
    return read_declaration(repo.path / ".git", sha, pick or Pick())


def test_pyproject_dependencies_test_extra_and_build_system(tmp_path):
    got = declared({"pyproject.toml": PYPROJECT}, tmp_path=tmp_path)
    # "testing" is picked before "dev"; its self-reference expands the "speed" extra.
    assert got.requirements == (
        "attrs>=23",
        "pytest-mock>=3",
        'typing-extensions; python_version < "3.11"',
        "ujson",
    )
    assert got.build_requires == ("hatch-vcs", "hatchling>=1.20")
    assert got.requires_python == ">=3.9"
    assert "pyproject.toml [project.optional-dependencies] testing" in got.sources


def test_dev_extra_when_no_test_one_and_extra_override(tmp_path):
    text = PYPROJECT.replace("testing =", "bench =")
    got = declared({"pyproject.toml": text}, tmp_path=tmp_path)
    # dev's shop-cart[test] names no extra there is: only ruff is added.
    assert got.requirements == ("attrs>=23", "ruff", 'typing-extensions; python_version < "3.11"')
    got = declared({"pyproject.toml": text}, Pick(extras=("docs",)), tmp_path=tmp_path / "b")
    assert got.requirements == ("attrs>=23", "sphinx", 'typing-extensions; python_version < "3.11"')


def test_unknown_extra_is_refused_by_name(tmp_path):
    with pytest.raises(DeclarationError, match="no extra named lint .*there are: dev, docs"):
        declared({"pyproject.toml": PYPROJECT}, Pick(extras=("lint",)), tmp_path=tmp_path)


GROUPS = """\
[project]
name = "calc"
dependencies = []
optional-dependencies = {fast = ["ujson"]}

[dependency-groups]
lint = ["ruff"]
Test = ["pytest>=8", {include-group = "coverage"}, "calc[fast]"]
coverage = ["coverage[toml]>=7"]
"""


def test_dependency_groups_with_include_group(tmp_path):
    got = declared({"pyproject.toml": GROUPS}, tmp_path=tmp_path)
    assert got.requirements == ("coverage[toml]>=7", "pytest>=8", "ujson")  # calc[fast]: ujson
    assert got.build_requires == ()
    got = declared({"pyproject.toml": GROUPS}, Pick(groups=("lint",)), tmp_path=tmp_path / "b")
    assert got.requirements == ("ruff",)


def test_dependency_group_cycle_is_refused(tmp_path):
    text = GROUPS.replace(
        'coverage = ["coverage[toml]>=7"]', 'coverage = [{include-group = "test"}]'
    )
    with pytest.raises(DeclarationError, match="includes itself: test → coverage → test"):
        declared({"pyproject.toml": text}, tmp_path=tmp_path)


def test_requirement_files_with_includes_and_tox(tmp_path):
    got = declared(
        {
            "setup.py": "raise SystemExit('never run')\n",
            "requirements.txt": "flask\n",
            "requirements-test.txt": "-r requirements/base.txt\npytest-cov  # coverage\n-e .\n",
            "requirements/base.txt": "# shared\nrequests>=2 ; python_version >= '3'\n"
            "pytest-cov==5.0 --hash=sha256:00ff \\\n"
            "--index-url https://example.invalid/simple\n-r ../../../../etc/passwd\n",
            "requirements-dev.txt": "black\n",
            "tox.ini": "[tox]\nenvlist = py3\n\n[testenv]\ndeps =\n    hypothesis\n"
            "    py38: mock\n    -r{toxinidir}/requirements-test.txt\n"
            "commands = pytest\n",
        },
        tmp_path=tmp_path,
    )
    # requirements-test.txt is picked (not -dev), and requirements.txt as no [project] says
    # the runtime ones; a path out of the repository names nothing; a factor-conditional
    # tox line is skipped.
    assert got.requirements == (
        "flask",
        "hypothesis",
        "pytest-cov",
        "pytest-cov==5.0",
        'requests>=2; python_version >= "3"',
    )
    assert got.build_requires == ("setuptools>=40.8.0", "wheel")  # what pip builds a setup.py with
    assert "tox.ini [testenv] deps" in got.sources


def test_tox_config_inside_pyproject_when_there_is_no_tox_ini(tmp_path):
    """tomli kept its tox config as `[tool.tox] legacy_tox_ini`, whose test env (named
    after its Pythons, with no plain [testenv]) named the test requirements file; tox reads
    it when no tox.ini exists, and so does Forge."""
    text = (
        '[project]\nname = "tomli"\n\n[tool.tox]\nlegacy_tox_ini = """\n[tox]\n'
        "isolated_build = True\n\n[testenv:py{36,37,38,39}]\ndeps = -r tests/requirements.txt\n"
        'commands = python -m unittest\n"""\n'
    )
    files = {"pyproject.toml": text, "tests/requirements.txt": "python-dateutil\n"}
    got = declared(files, tmp_path=tmp_path)
    assert "python-dateutil" in got.requirements
    assert "pyproject.toml [tool.tox] legacy_tox_ini [testenv] deps" in got.sources


def test_a_link_is_never_followed_and_big_files_are_not_read(tmp_path):
    outside = tmp_path / "secret.toml"
    outside.write_text('[project]\ndependencies = ["leaked"]\n')
    got = declared(
        {"src/calc.py": "x = 1\n"}, tmp_path=tmp_path, symlinks=[("pyproject.toml", str(outside))]
    )
    assert got.requirements == () and got.sources == ()
    big = "[project]\ndependencies = []\n" + "#" * MAX_FILE_BYTES
    with pytest.raises(DeclarationError, match="not read"):
        declared({"pyproject.toml": big}, tmp_path=tmp_path / "b")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[project\n", "does not parse"),
        ('[project]\ndependencies = "pytest"\n', "not a list of strings"),
        ('[project]\ndependencies = ["pkg @ https://example.invalid/p.whl"]\n', "from a URL"),
        ('[project]\ndependencies = ["not a requirement!"]\n', "is not a requirement"),
        ("[project]\ndynamic = 3\n", "dynamic is not a list of strings"),
        ('[dependency-groups]\ntest = [{include-group = "nope"}]\n', "has no group 'nope'"),
    ],
)
def test_bad_declarations_are_refused(tmp_path, text, message):
    with pytest.raises(DeclarationError, match=message):
        declared({"pyproject.toml": text}, tmp_path=tmp_path)


def test_a_project_without_declarations_declares_nothing(tmp_path):
    got = declared({"src/calc.py": "x = 1\n"}, tmp_path=tmp_path)
    assert got.requirements == got.build_requires == () and got.requires_python is None


def test_setuptools_dynamic_dependencies_from_a_file(tmp_path):
    got = declared(
        {
            "pyproject.toml": '[project]\nname = "calc"\ndynamic = ["dependencies"]\n\n'
            '[tool.setuptools.dynamic]\ndependencies = {file = ["reqs/run.txt"]}\n',
            "reqs/run.txt": "attrs\n",
            "requirements.txt": "not-this-one\n",
        },
        tmp_path=tmp_path,
    )
    assert got.requirements == ("attrs",)


def test_odd_tables_do_not_crash(tmp_path):
    got = declared(
        {"pyproject.toml": 'tool = 1\n[project]\nname = "x"\ndynamic = ["dependencies"]\n'},
        tmp_path=tmp_path,
    )
    assert got.requirements == ()


def test_a_diamond_of_group_includes_stays_small(tmp_path):
    lines = ["[dependency-groups]", 'test = ["pytest"' + ', {include-group = "a"}' * 50 + "]"]
    for name, child in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f'{name} = ["{name}-pkg"' + f', {{include-group = "{child}"}}' * 50 + "]")
    lines.append('i = ["i-pkg"]')
    got = declared({"pyproject.toml": "\n".join(lines) + "\n"}, tmp_path=tmp_path)
    assert len(got.requirements) == 10


POETRY = """\
[tool.poetry]
name = "Toml_Kit"

[tool.poetry.dependencies]
python = "^3.9"
attrs = "^23.1"
ujson = {version = "~5.1", python = "<3.12", extras = ["fast"]}
redis = {version = "*", optional = true}
tomli = [{version = "^2.0.1", markers = "implementation_name == 'cpython'"}]
zero = "^0.0.3"

[tool.poetry.group.dev.dependencies]
pytest = "^7.2.0"
PyYAML = ">= 6.0, < 7"
pinned = "1.19.1"

[tool.poetry.group.docs]
optional = true

[tool.poetry.group.docs.dependencies]
sphinx = "^4"

[tool.poetry.dev-dependencies]
pytest-cov = "~4"
mypy = {git = "https://github.com/python/mypy.git"}
"""


def test_poetry_dependencies_and_groups(tmp_path):
    """tomlkit (poetry-core) declares everything in [tool.poetry]: carets and tildes become
    PEP 440 ranges, `python` is the project's own Python, and `poetry install` installs
    each non-optional group (dev here, and Poetry < 1.2's dev-dependencies). A group's
    tool from git (tomli took mypy so) is left out; the rest of the commit is read."""
    got = declared({"pyproject.toml": POETRY}, tmp_path=tmp_path)
    assert got.requirements == (
        "attrs<24,>=23.1",
        "pinned==1.19.1",
        "pytest-cov<5,>=4",
        "pytest<8,>=7.2.0",
        "pyyaml<7,>=6.0",
        'tomli<3,>=2.0.1; implementation_name == "cpython"',
        'ujson[fast]<5.2,>=5.1; python_version < "3.12"',
        "zero<0.0.4,>=0.0.3",
    )
    assert "pyproject.toml [tool.poetry.dependencies]" in got.sources
    assert "pyproject.toml [tool.poetry.group] dev" in got.sources
    got = declared({"pyproject.toml": POETRY}, Pick(groups=("docs",)), tmp_path=tmp_path / "b")
    assert "sphinx<5,>=4" in got.requirements and "pytest<8,>=7.2.0" not in got.requirements


@pytest.mark.parametrize(
    "entry, message",
    [
        ('local = {path = "../local"}', "comes from a path"),
        ('lib = {git = "https://example.invalid/lib.git"}', "comes from a git"),
        ('odd = "@latest"', "not a Poetry version constraint"),
    ],
)
def test_poetry_sources_other_than_wheels_are_refused(tmp_path, entry, message):
    text = f'[tool.poetry]\nname = "x"\n\n[tool.poetry.dependencies]\n{entry}\n'
    with pytest.raises(DeclarationError, match=message):
        declared({"pyproject.toml": text}, tmp_path=tmp_path)


def test_pdm_dev_dependencies_are_every_dev_group(tmp_path):
    """marko (pdm-backend) keeps its test requirements in PDM's pre-PEP 735 table; `pdm
    install` installs every dev group, and its tests need what the doc group brings
    (marko[toc] → python-slugify). The project itself (-e) is not a requirement."""
    text = (
        '[project]\nname = "marko"\ndependencies = []\n\n[project.optional-dependencies]\n'
        'toc = ["python-slugify"]\n\n[tool.pdm.dev-dependencies]\n'
        'dev = ["pytest", "-e file:///${PROJECT_ROOT}/#egg=marko"]\ndoc = ["marko[toc]"]\n'
    )
    got = declared({"pyproject.toml": text}, tmp_path=tmp_path)
    assert got.requirements == ("pytest", "python-slugify")
    assert "pyproject.toml [tool.pdm.dev-dependencies] doc" in got.sources
    got = declared({"pyproject.toml": text}, Pick(groups=("dev",)), tmp_path=tmp_path / "b")
    assert got.requirements == ("pytest",)
