"""What a commit declares it needs, read from its own files in git, never by running them.

Sources, all read from the commit's tree (blobs through `git cat-file`, no checkout):
`pyproject.toml` (`[project].dependencies`, the test extra of
`[project.optional-dependencies]`, the test group of PEP 735 `[dependency-groups]`,
`[build-system].requires`, `[project].requires-python`; where a project has no
`[project].dependencies` or `[dependency-groups]`, the tables Poetry and PDM used before
them: `[tool.poetry.dependencies]`, `[tool.poetry.group.*]`, `[tool.pdm.dev-dependencies]`,
with the groups those tools install by default), `requirements*.txt` of the test
and dev kind (with `-r` includes inside the repository) and the `deps` of tox.ini's test
environment. No `setup.py` runs: a project whose dependencies are only there (or are
`dynamic`) declares none here, and its `-r` requirements must say them.

These files are untrusted: each is read only if it is a plain blob under MAX_FILE_BYTES,
includes go at most MAX_INCLUDE_DEPTH deep and MAX_FILES files in all, and a link is never
followed.
"""

from __future__ import annotations

import configparser
import posixpath
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from appliance.errors import PackageBuildError
from appliance.packages import gitsafe

MAX_FILE_BYTES = 1 << 20
MAX_FILES = 64
MAX_INCLUDE_DEPTH = 8
MAX_CACHED_BLOBS = 256  # texts kept across the commits of one build (each ≤ MAX_FILE_BYTES)
TEST_NAMES = ("test", "tests", "testing")  # picked first, in this order
DEV_NAMES = ("dev",)  # picked when no test one exists
# PEP 517's fallback for a setup.py: what pip installs to build one.
SETUPTOOLS_DEFAULT = ("setuptools>=40.8.0", "wheel")
_REQ_FILE = re.compile(r"^requirements[-_.]?(?P<kind>[a-z0-9_.-]*)\.txt$", re.IGNORECASE)


class DeclarationError(PackageBuildError):
    """A commit's dependency declarations cannot be read (bad TOML, a group cycle ...)."""


@dataclass(frozen=True)
class Pick:
    """Which extras and groups count as the test requirements. Empty: picked by name
    (test/tests/testing, then dev); any given: exactly those, nothing picked by name."""

    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Declaration:
    """One commit's declared requirements, normalized and sorted."""

    requirements: tuple[str, ...]  # runtime + test extra/group + requirements files + tox
    build_requires: tuple[str, ...]  # [build-system].requires
    requires_python: str | None
    sources: tuple[str, ...]  # where they came from, for the operator: "pyproject.toml [..]"

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.requirements) | set(self.build_requires)))


def normalize(text: str, where: str) -> Requirement:
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise DeclarationError(
            f"{where}: {text[:200]!r} is not a requirement ({exc})",
            "fix the declaration, or build from commits that declare valid requirements",
        ) from exc
    if req.url:
        raise DeclarationError(
            f"{where}: {req.name} comes from a URL ({req.url[:200]}); a package takes wheels only",
            "depend on a released version, or pass the wheel with --find-links",
        )
    req.name = canonicalize_name(req.name)
    return req


class _Tree:
    """The plain files of one commit, read lazily and bounded."""

    def __init__(self, git_dir: Path, sha: str, blobs: dict[str, str]) -> None:
        self.git_dir, self.sha, self.read, self.blobs = git_dir, sha, 0, blobs
        out = gitsafe.git(["ls-tree", "-z", "-l", "--full-tree", sha], git_dir=git_dir)
        self.root = self._parse(out)

    @staticmethod
    def _parse(out: bytes) -> dict[str, tuple[str, str, int]]:
        entries = {}
        for item in out.split(b"\0"):
            if not item:
                continue
            meta, _, path = item.partition(b"\t")
            mode, kind, obj, size = meta.decode().split()
            entries[path.decode("utf-8", "surrogateescape")] = (
                mode,
                obj,
                int(size) if size != "-" else 0,
            )
        return entries

    def names(self) -> list[str]:
        return sorted(p for p, (mode, _, _) in self.root.items() if mode in ("100644", "100755"))

    def folder(self, path: str) -> list[str]:
        if self.root.get(path, ("",))[0] != "040000":
            return []
        out = gitsafe.git(["ls-tree", "-z", "-l", f"{self.sha}:{path}"], git_dir=self.git_dir)
        return sorted(
            f"{path}/{name}"
            for name, (mode, _, _) in self._parse(out).items()
            if mode in ("100644", "100755")
        )

    def text(self, path: str) -> str | None:
        """The file at `path` (a plain blob), or None when there is none."""
        if "\0" in path or path.startswith("/") or ".." in path.split("/"):
            return None
        if "/" in path:
            out = gitsafe.git(["ls-tree", "-z", "-l", self.sha, "--", path], git_dir=self.git_dir)
            entry = self._parse(out).get(path)
        else:
            entry = self.root.get(path)
        if entry is None or entry[0] not in ("100644", "100755"):
            return None  # absent, a folder, a link (never followed) or a gitlink
        if entry[2] > MAX_FILE_BYTES:
            raise DeclarationError(
                f"{path} is {entry[2]} bytes; declarations larger than {MAX_FILE_BYTES} are "
                "not read",
                "give the requirements with -r instead",
            )
        self.read += 1
        if self.read > MAX_FILES:
            raise DeclarationError(
                f"more than {MAX_FILES} declaration files to read", "check the -r includes"
            )
        if entry[1] not in self.blobs:  # commits mostly share their declaration files
            if len(self.blobs) >= MAX_CACHED_BLOBS:
                self.blobs.clear()
            blob = gitsafe.read_blobs(self.git_dir, [entry[1]]).get(entry[1], b"")
            self.blobs[entry[1]] = blob.decode("utf-8", "replace")
        return self.blobs[entry[1]]


def _pick(available: Mapping[str, object], wanted: Sequence[str], what: str) -> list[str]:
    names = {canonicalize_name(n): n for n in available}
    if wanted:
        missing = [w for w in wanted if canonicalize_name(w) not in names]
        if missing:
            raise DeclarationError(
                f"no {what} named {', '.join(missing)} (there are: "
                f"{', '.join(sorted(names)) or 'none'})",
                f"name one the project declares, or leave the {what} to be picked by name",
            )
        return [names[canonicalize_name(w)] for w in wanted]
    for choice in (TEST_NAMES, DEV_NAMES):
        found = [names[n] for n in choice if n in names]
        if found:
            return found[:1]
    return []


def _table(table: Mapping[str, object], *keys: str) -> Mapping[str, object]:
    """table[k1][k2]...; an empty table where a key is missing or not a table."""
    for key in keys:
        value = table.get(key, {})
        table = value if isinstance(value, dict) else {}
    return table


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DeclarationError(f"{where} is not a list of strings", "fix the declaration")
    return value


def _group(
    groups: Mapping[str, object], name: str, seen: tuple[str, ...], done: dict[str, list[str]]
) -> list[str]:
    """PEP 735: a group's requirements, with `{include-group = ...}` expanded (each group
    once, its requirements without repeats: a diamond of includes stays small)."""
    key = canonicalize_name(name)
    table = {canonicalize_name(k): v for k, v in groups.items()}
    if key in seen:
        raise DeclarationError(
            f"[dependency-groups] includes itself: {' → '.join((*seen, key))}",
            "break the include-group cycle",
        )
    if key in done:
        return done[key]
    if key not in table:
        raise DeclarationError(f"[dependency-groups] has no group {name!r}", "fix include-group")
    items = table[key]
    if not isinstance(items, list):
        raise DeclarationError(f"[dependency-groups].{name} is not a list", "fix the group")
    out: dict[str, None] = {}
    for item in items:
        if isinstance(item, str):
            out[item] = None
        elif isinstance(item, dict) and set(item) == {"include-group"}:
            out.update(
                dict.fromkeys(_group(groups, str(item["include-group"]), (*seen, key), done))
            )
        else:
            raise DeclarationError(
                f"[dependency-groups].{name} holds {str(item)[:100]!r}", "fix the group"
            )
    done[key] = list(out)
    return done[key]


def _extras(
    project: str, extras: Mapping[str, object], wanted: Iterable[str], seen: set[str]
) -> list[str]:
    """The requirements of `wanted` extras; `project[other]` inside one expands `other`."""
    table = {canonicalize_name(k): v for k, v in extras.items()}
    out = []
    for name in wanted:
        key = canonicalize_name(name)
        if key in seen or key not in table:
            continue
        seen.add(key)
        for text in _strings(table[key], f"[project.optional-dependencies].{name}"):
            req = normalize(text, "pyproject.toml")
            if project and req.name == project:
                out += _extras(project, extras, req.extras, seen)
            else:
                out.append(text)
    return out


def _poetry_version(spec: str, where: str) -> str:
    """A Poetry version constraint as a PEP 440 specifier: ^1.2 → >=1.2,<2.0, ~1.2 →
    >=1.2,<1.3, 1.2 → ==1.2, * → any. An `a || b` union has no PEP 440 form: any version."""
    spec = spec.strip()
    if spec in ("", "*") or "||" in spec or "|" in spec:
        return ""
    out = []
    for part in re.split(r"\s*,\s*|\s+(?=[<>=!~^])", spec):
        part = part.strip()
        match = re.fullmatch(r"(\^|~(?!=))\s*v?(\d+(?:\.\d+)*)(.*)", part)
        if match:
            caret, numbers, rest = match[1] == "^", [int(n) for n in match[2].split(".")], match[3]
            if caret:  # the first non-zero number may not change (the last one if all are 0)
                at = next((i for i, n in enumerate(numbers) if n), len(numbers) - 1)
            else:  # ~1.2.3 and ~1.2: the minor may not change; ~1: the major
                at = min(len(numbers) - 1, 1)
            upper = [*numbers[:at], numbers[at] + 1]
            out += [f">={match[2]}{rest}", "<" + ".".join(map(str, upper))]
        elif re.fullmatch(r"v?\d[\w.*+!-]*", part):
            out.append(f"=={part.lstrip('v')}")
        elif re.fullmatch(r"(===|==|!=|<=|>=|<|>|~=)\s*\S+", part):
            out.append(part.replace(" ", ""))
        else:
            raise DeclarationError(
                f"{where}: {spec[:100]!r} is not a Poetry version constraint",
                "fix the declaration, or give the requirement with -r",
            )
    return ",".join(out)


def _poetry_python(spec: str, where: str) -> str:
    """A Poetry `python = "..."` constraint as an environment marker."""
    specifier = _poetry_version(spec, where)
    clauses = []
    for item in filter(None, specifier.split(",")):
        op, version = re.fullmatch(r"(===|==|!=|<=|>=|<|>|~=)(.+)", item).groups()
        field = "python_full_version" if version.count(".") >= 2 else "python_version"
        clauses.append(f'{field} {op} "{version}"')
    return " and ".join(clauses)


def _poetry_table(
    table: Mapping[str, object], where: str, key: str = "dependencies", *, runtime: bool = True
) -> list[str]:
    """`[tool.poetry.dependencies]`-style entries as PEP 508 requirements. `python` is the
    project's own Python, not a dependency; optional ones are installed only through an
    extra and are left out. A path, git or URL source is refused at run time (a package
    takes wheels) and left out of a group (tomli's dev group took mypy from git: a tool,
    not what its tests import)."""
    entries = table.get(key, {})
    if not isinstance(entries, dict):
        raise DeclarationError(f"{where} is not a table", "fix pyproject.toml")
    out = []
    for name, value in entries.items():
        if canonicalize_name(name) == "python":
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                item = {"version": item}
            if not isinstance(item, dict):
                raise DeclarationError(f"{where}: {name} is {str(item)[:100]!r}", "fix it")
            if item.get("optional") is True:
                continue
            source = next((k for k in ("path", "git", "url", "file") if k in item), None)
            if source and not runtime:
                continue
            if source:
                raise DeclarationError(
                    f"{where}: {name} comes from a {source} ({str(item[source])[:200]}); a "
                    "package takes wheels only",
                    "depend on a released version, or pass the wheel with --find-links",
                )
            extras = item.get("extras", [])
            text = name + (f"[{','.join(_strings(extras, where))}]" if extras else "")
            text += _poetry_version(str(item.get("version", "*")), where)
            markers = [str(item["markers"])] if "markers" in item else []
            if "python" in item:
                markers.append(_poetry_python(str(item["python"]), where))
            markers = [m for m in markers if m]
            if markers:
                text += "; " + " and ".join(f"({m})" for m in markers)
            out.append(text)
    return out


def _tool_groups(
    pyproject: Mapping[str, object],
) -> tuple[dict[str, list], str, tuple[str, ...]]:
    """Dependency groups declared the way Poetry or PDM did before PEP 735: (groups as
    PEP 735 lists, the table they came from, the groups the tool installs by default).
    `poetry install` installs each non-optional group and `pdm install` each dev group, so
    those are the project's test environment unless --group names others."""
    pdm = _table(pyproject, "tool", "pdm", "dev-dependencies")
    if pdm:
        groups = {}
        for name, items in pdm.items():
            texts = _strings(items, f"[tool.pdm.dev-dependencies].{name}")
            groups[name] = [t for t in texts if not t.lstrip().startswith("-e")]  # the project
        return groups, "tool.pdm.dev-dependencies", tuple(groups)
    poetry = _table(pyproject, "tool", "poetry")
    groups, default = {}, []
    for name, group in _table(poetry, "group").items():
        if isinstance(group, dict):
            where = f"[tool.poetry.group.{name}.dependencies]"
            groups[name] = _poetry_table(group, where, runtime=False)
            default += [] if group.get("optional") is True else [name]
    if "dev-dependencies" in poetry:  # Poetry < 1.2: the dev group
        where = "[tool.poetry.dev-dependencies]"
        found = _poetry_table(poetry, where, "dev-dependencies", runtime=False)
        groups.setdefault("dev", []).extend(found)
        default += [] if "dev" in default else ["dev"]
    return groups, "tool.poetry.group", tuple(default)


def _requirements_file(
    tree: _Tree, path: str, depth: int, project: str, extras: Mapping[str, object]
) -> list[str]:
    text = tree.text(path)
    if text is None:
        return []
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        include = re.match(r"^(?:-r|--requirement)[=\s]*(\S+)$", line)
        if include:
            if depth >= MAX_INCLUDE_DEPTH:
                raise DeclarationError(
                    f"{path}: -r includes nested more than {MAX_INCLUDE_DEPTH} deep",
                    "flatten the requirement files",
                )
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), include[1]))
            out += _requirements_file(tree, target, depth + 1, project, extras)
            continue
        if line.startswith(("-e .", "-e.", ".[")) or line in (".", "-e ."):
            wanted = re.findall(r"\[([^\]]*)\]", line)
            names = wanted[0].split(",") if wanted else []
            out += _extras(project, extras, [n.strip() for n in names], set())
            continue
        if line.startswith("-"):  # -c, --index-url ...: options, not requirements
            continue
        out.append(re.split(r"\s+--?[a-z]", line, maxsplit=1)[0])  # no trailing --hash=...
    return out


def _requirement_files(tree: _Tree) -> list[str]:
    """The test (else dev) requirement files: requirements-test.txt, requirements/test.txt ..."""
    candidates = [p for p in tree.names() if _REQ_FILE.match(p)]
    candidates += [p for p in tree.folder("requirements") if p.endswith(".txt")]

    def kind(path: str) -> str:
        name = path.rsplit("/", 1)[-1]
        if path.startswith("requirements/"):
            return name.removesuffix(".txt").lower()
        match = _REQ_FILE.match(name)
        return match["kind"].lower() if match else ""

    for choice in (TEST_NAMES, DEV_NAMES):
        found = [p for p in candidates if kind(p) in choice]
        if found:
            return found
    return []


def _tox_test_section(parser: configparser.ConfigParser) -> str | None:
    """[testenv] when it has deps; else the first named test env that has them, e.g.
    [testenv:py{38,39}] or [testenv:tests] (the envs tox runs the suite in)."""
    if parser.has_option("testenv", "deps"):
        return "testenv"
    for section in parser.sections():
        name = section.removeprefix("testenv:")
        is_test_env = section.startswith("testenv:") and name.startswith(("py", "test", "unit"))
        if is_test_env and parser.has_option(section, "deps"):
            return section
    return None


def _tox_deps(text: str) -> list[str]:
    """The deps of tox's test env (plain lines; factor-conditional ones are skipped)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise DeclarationError(f"tox.ini does not parse: {exc}", "fix tox.ini") from exc
    section = _tox_test_section(parser)
    if section is None:
        return []
    out = []
    for raw in parser.get(section, "deps").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or "{[" in line or re.match(r"^[\w,.!-]+:\s", line):
            continue
        out.append(line)
    return out


@dataclass
class _Found:
    """Requirement texts as read, each with where it came from, and the sources in order."""

    texts: list[tuple[str, str]] = field(default_factory=list)  # (requirement, where)
    sources: list[str] = field(default_factory=list)

    def add(self, where: str, texts: Iterable[str], source: str | None = None) -> None:
        self.texts += [(t, where) for t in texts]
        self.sources.append(where if source is None else source)


def read_declaration(
    git_dir: Path, sha: str, pick: Pick | None = None, blobs: dict[str, str] | None = None
) -> Declaration:
    """What commit `sha` of the repository at `git_dir` declares (see the module's
    docstring). `blobs` (blob id → text), shared across the commits of one repository,
    saves reading the same file again."""
    pick = pick or Pick()
    tree = _Tree(git_dir, sha, {} if blobs is None else blobs)
    pyproject = _pyproject(tree)
    project = pyproject.get("project", {})
    if not isinstance(project, dict):
        raise DeclarationError("[project] is not a table", "fix pyproject.toml")
    poetry_name = _table(pyproject, "tool", "poetry").get("name")
    project_name = ""
    if isinstance(project.get("name"), str):
        project_name = canonicalize_name(project["name"])
    elif isinstance(poetry_name, str):
        project_name = canonicalize_name(poetry_name)
    requires_python = None
    if "requires-python" in project:
        requires_python = str(project["requires-python"])
    found = _Found()
    _runtime(tree, pyproject, project, project_name, found)
    extras = _test_extras(project, project_name, pick, found)
    _test_groups(pyproject, pick, found)
    if not pick.extras and not pick.groups:
        _test_files(tree, pyproject, project_name, extras, found)
    build_requires = _build_requires(tree, pyproject, found)

    requirements = set()
    for text, where in found.texts:
        req = normalize(text, where)
        if project_name and req.name == project_name:  # the project itself: its extras
            for extra in _extras(project_name, extras, sorted(req.extras), set()):
                requirements.add(str(normalize(extra, where)))
        else:
            requirements.add(str(req))
    built = {str(normalize(t, "pyproject.toml [build-system].requires")) for t in build_requires}
    return Declaration(
        requirements=tuple(sorted(requirements)),
        build_requires=tuple(sorted(built)),
        requires_python=requires_python,
        sources=tuple(found.sources),
    )


def _pyproject(tree: _Tree) -> dict:
    """pyproject.toml parsed, or {} when the commit has none."""
    text = tree.text("pyproject.toml")
    if text is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeclarationError(
            f"pyproject.toml does not parse: {exc}", "fix pyproject.toml"
        ) from exc


def _is_file(tree: _Tree, path: str) -> bool:
    return tree.root.get(path, ("",))[0] in ("100644", "100755")


def _runtime(
    tree: _Tree, pyproject: Mapping, project: Mapping, project_name: str, found: _Found
) -> None:
    """The runtime requirements: [project].dependencies, else the files setuptools reads
    them from, else Poetry's table, else requirements.txt."""
    if "dependencies" in project:
        where = "pyproject.toml [project].dependencies"
        found.add(where, _strings(project["dependencies"], where))
    elif "dependencies" in _strings(project.get("dynamic", []), "[project].dynamic"):
        # setuptools may read them from files
        files = _table(pyproject, "tool", "setuptools", "dynamic", "dependencies").get("file", [])
        for path in [files] if isinstance(files, str) else _strings(files, "dynamic files"):
            where = f"{path} ([tool.setuptools.dynamic] dependencies)"
            found.add(where, _requirements_file(tree, path, 0, project_name, {}))
    elif _table(pyproject, "tool", "poetry", "dependencies"):
        where = "pyproject.toml [tool.poetry.dependencies]"
        found.add(where, _poetry_table(_table(pyproject, "tool", "poetry"), where))
    elif _is_file(tree, "requirements.txt"):
        # No [project].dependencies: the runtime requirements are most likely here.
        where = "requirements.txt"
        found.add(where, _requirements_file(tree, where, 0, project_name, {}))


def _test_extras(project: Mapping, project_name: str, pick: Pick, found: _Found) -> dict:
    """Add the test extra of [project.optional-dependencies]; return all the extras."""
    extras = project.get("optional-dependencies", {})
    if not isinstance(extras, dict):
        raise DeclarationError("[project.optional-dependencies] is not a table", "fix it")
    if extras and (pick.extras or not pick.groups):
        chosen = _pick(extras, pick.extras, "extra")
        if chosen:
            where = f"pyproject.toml [project.optional-dependencies] {', '.join(chosen)}"
            found.add(where, _extras(project_name, extras, chosen, set()))
    elif pick.extras:
        _pick({}, pick.extras, "extra")
    return extras


def _test_groups(pyproject: Mapping, pick: Pick, found: _Found) -> None:
    """Add the test group of [dependency-groups], else of Poetry's or PDM's tables."""
    groups, table, default = pyproject.get("dependency-groups", {}), "dependency-groups", None
    if not isinstance(groups, dict):
        raise DeclarationError("[dependency-groups] is not a table", "fix pyproject.toml")
    if not groups:  # the tool-specific groups older than PEP 735
        groups, table, default = _tool_groups(pyproject)
    if groups and (pick.groups or not pick.extras):
        by_name = pick.groups or default is None
        chosen = _pick(groups, pick.groups, "group") if by_name else list(default)
        for name in chosen:
            found.add(f"pyproject.toml [{table}] {name}", _group(groups, name, (), {}))
    elif pick.groups:
        _pick({}, pick.groups, "group")


def _test_files(
    tree: _Tree, pyproject: Mapping, project_name: str, extras: Mapping, found: _Found
) -> None:
    """Add the test requirement files and the deps of tox's test environment."""
    for path in _requirement_files(tree):
        found.add(path, _requirements_file(tree, path, 0, project_name, extras))
    tox, tox_where = tree.text("tox.ini"), "tox.ini"
    legacy = _table(pyproject, "tool", "tox").get("legacy_tox_ini")
    if tox is None and isinstance(legacy, str):  # tox reads it when there is no tox.ini
        tox, tox_where = legacy, "pyproject.toml [tool.tox] legacy_tox_ini"
    if tox is None:
        return
    texts: list[str] = []
    for line in _tox_deps(tox):
        include = re.match(r"^-r\s*(?:\{toxinidir\}/)?(\S+)$", line)
        if include:
            texts += _requirements_file(tree, include[1], 1, project_name, extras)
        elif line.startswith(".["):
            names = line[2:].rstrip("]").split(",")
            texts += _extras(project_name, extras, names, set())
        elif not line.startswith("-"):
            texts.append(line)
    found.add(tox_where, texts, source=f"{tox_where} [testenv] deps")


def _build_requires(tree: _Tree, pyproject: Mapping, found: _Found) -> list[str]:
    """[build-system].requires, else setuptools' PEP 517 default for a setup.py."""
    build_system = pyproject.get("build-system")
    if isinstance(build_system, dict) and "requires" in build_system:
        where = "pyproject.toml [build-system].requires"
        found.sources.append(where)
        return _strings(build_system["requires"], where)
    if _is_file(tree, "setup.py"):
        found.sources.append("setup.py (setuptools, PEP 517's default)")
        return list(SETUPTOOLS_DEFAULT)
    return []
