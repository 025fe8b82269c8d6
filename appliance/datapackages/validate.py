"""Every check a data package must pass before its rows may reach a dataset.

In order, each only when what it opens passed the ones before: the file rules (lstat
only: regular files at the top and nothing else, no links, no executables, no file the
format does not have, sizes within `[data_packages]` in forge.toml), the manifest
(bounded JSON, its schema version, kind `data`), every file against the manifest (listed,
size, sha256: the bytes hashed are the bytes parsed, read once), then every row (JSON,
its schema, a prompt Forge would build for its stage, and the commit it is about: in the
corpus, not in an eval package, not held out), and last whether the package is already
here (the same name and version, or the same rows). Problems are repo packages' own
`Problem`s, so quarantine and the CLI report both kinds alike.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from appliance.config import STAGES, Config, DataPackageLimits
from appliance.datapackages import store
from appliance.datapackages.format import (
    KIND,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    READABLE_VERSIONS,
    ROWS_SUFFIX,
    DataManifest,
    DataRow,
    prompt_problem,
    stage_of,
)
from appliance.errors import validation_problems
from appliance.packages import corpus
from appliance.packages.manifest import ManifestError, parse_json
from appliance.packages.problems import Problem
from appliance.packages.rules import MB, SAFE_NAME
from appliance.packages.split import Holdout, history
from appliance.records import as_json

READY_MARKER = "READY"
SHOWN_PER_RULE = 10  # problems of one rule named per file; the rest are counted
STAGE_LIST = ", ".join(STAGES)
REBUILD = "write the package again with write_data_package (forge teacher run)"


@dataclass(frozen=True)
class ParsedRow:
    """A row as validation read it: its stage, its line in STAGE.jsonl, the row."""

    stage: str
    line: int
    row: DataRow


@dataclass(frozen=True)
class DataReport:
    """What validation found: the manifest, every row read, every problem."""

    package: Path
    manifest: DataManifest | None
    manifest_sha256: str | None
    rows: tuple[ParsedRow, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not self.problems

    def to_dict(self) -> dict:
        counts = Counter(f"{r.stage}/{r.row.kind}" for r in self.rows)
        return as_json(
            self,
            "package",
            "name",
            "version",
            "manifest_sha256",
            "ok",
            "rows",
            "problems",
            name=self.manifest.name if self.manifest else None,
            version=self.manifest.version if self.manifest else None,
            rows=dict(sorted(counts.items())),
        )


@dataclass
class _Checking:
    """What the checks found so far (validate's own state while they run)."""

    root: Path
    limits: DataPackageLimits
    manifest: DataManifest | None = None
    manifest_sha256: str | None = None
    rows: list[ParsedRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def validate_data_package(package: Path, config: Config, db: corpus.Connection) -> DataReport:
    """Run every check on the data package folder `package` against this box's corpus."""
    check = _Checking(Path(package).absolute(), config.settings.data_packages)
    _run_checks(check, config, db)
    return DataReport(
        check.root,
        check.manifest,
        check.manifest_sha256,
        tuple(check.rows),
        tuple(check.problems),
    )


def _run_checks(check: _Checking, config: Config, db: corpus.Connection) -> None:
    names, problems = check_files(check.root, check.limits)
    check.problems += problems
    if problems or not _read_manifest(check):
        return
    check.problems += _listed(check.manifest, names)
    if check.problems:
        return
    view = _CorpusView.of(config, db)
    for name, entry in check.manifest.files.items():
        data = _read_listed(check, name, entry.size, entry.sha256)
        if data is not None:
            _read_rows(check, stage_of(name), name, data, entry.rows, view)
    total = len(check.rows)
    if total > check.limits.max_rows:
        check.problems.append(
            Problem(
                "too-many-rows",
                "",
                f"{total} rows; the limit is {check.limits.max_rows}",
                "split the rows into several packages, or raise data_packages.max_rows",
            )
        )
    if not check.problems:
        check.problems += _already_here(db, check.manifest, check.manifest_sha256)


# --- files ---------------------------------------------------------------------------------


def check_files(root: Path, limits: DataPackageLimits) -> tuple[list[str], list[Problem]]:
    """(the regular files at the top of `root`, what breaks the file rules). Nothing is
    opened: only lstat and the listing."""
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            return [], [
                Problem(
                    "not-a-directory",
                    "",
                    "a data package is a folder",
                    "copy the whole package folder",
                )
            ]
        entries = sorted(os.listdir(root))
    except OSError as exc:
        return [], [
            Problem("missing", "", f"cannot read the package: {exc.strerror}", "check the path")
        ]
    problems: list[Problem] = []
    total = 0
    for name in entries:
        entry_problems, size = _check_entry(root, name, limits)
        problems += entry_problems
        total += size
    if total > limits.max_total_mb * MB:
        problems.append(
            Problem(
                "package-too-large",
                "",
                f"{total / MB:.0f} MB in all; the limit is {limits.max_total_mb:g} MB",
                "split the rows into several "
                "packages, or raise data_packages.max_total_mb in forge.toml",
            )
        )
    if MANIFEST_NAME not in entries:
        problems.append(Problem("missing", MANIFEST_NAME, "required file is missing", REBUILD))
    return [n for n in entries if n != READY_MARKER], problems


def _check_entry(root: Path, name: str, limits: DataPackageLimits) -> tuple[list[Problem], int]:
    """The rules one top-level entry breaks, and its size when it is a regular file."""
    shown = name.encode("utf-8", "backslashreplace").decode()
    if not SAFE_NAME.match(name):
        return [
            Problem(
                "bad-name", repr(shown), "file name holds control characters", "rename or remove it"
            )
        ], 0
    path = root / name
    try:
        st = os.lstat(path)
    except OSError as exc:
        return [
            Problem(
                "unreadable", shown, f"cannot be read: {exc.strerror}", "copy the package again"
            )
        ], 0
    if stat.S_ISLNK(st.st_mode):
        message = f"symbolic link (to {os.readlink(path)!r}); links are never followed"
        return [Problem("symlink", shown, message, "replace the link with the file")], 0
    if stat.S_ISDIR(st.st_mode):
        return [
            Problem(
                "unexpected-entry",
                shown,
                "a data package holds no folders",
                "put manifest.json and the STAGE.jsonl files at the top",
            )
        ], 0
    if not stat.S_ISREG(st.st_mode):
        return [Problem("special-file", shown, "device, FIFO or socket", "remove it")], 0
    return _check_file(shown, name, st, limits), st.st_size


def _check_file(
    shown: str, name: str, st: os.stat_result, limits: DataPackageLimits
) -> list[Problem]:
    """A regular file: a name the format has, no execute bit, one name, within the size."""
    problems = []
    if name.endswith(ROWS_SUFFIX) and stage_of(name) is None:
        problems.append(
            Problem(
                "unknown-stage",
                shown,
                "rows of an unknown stage",
                f"name rows files STAGE.jsonl, with a stage of {STAGE_LIST}",
            )
        )
    elif name not in (MANIFEST_NAME, READY_MARKER) and stage_of(name) is None:
        problems.append(
            Problem(
                "unexpected-entry",
                shown,
                "a data package holds only manifest.json, STAGE.jsonl files and READY",
                "remove it",
            )
        )
    if st.st_mode & 0o111:
        problems.append(
            Problem("executable", shown, "executable file", "remove the execute bit (chmod -x)")
        )
    if st.st_nlink > 1:
        problems.append(
            Problem(
                "hardlink",
                shown,
                f"hard link ({st.st_nlink} names for one file)",
                "copy the package without hard links",
            )
        )
    if st.st_size > limits.max_file_mb * MB:
        size = f"{st.st_size / MB:.1f} MB; the limit is {limits.max_file_mb:g} MB"
        fix = "split the rows into packages, or raise data_packages.max_file_mb in forge.toml"
        problems.append(Problem("file-too-large", shown, size, fix))
    return problems


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` (ValueError past it); no link is followed
    and no FIFO waited on (OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{st.st_size} bytes; the limit is {limit}")
        data = fh.read(limit + 1)  # a file that grew meanwhile is still bounded
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes; the limit is {limit}")
    return data


# --- the manifest and the files it lists ---------------------------------------------------


def _read_manifest(check: _Checking) -> bool:
    def refuse(rule: str, message: str) -> bool:
        check.problems.append(Problem(rule, MANIFEST_NAME, message, REBUILD))
        return False

    try:
        raw = read_bounded(check.root / MANIFEST_NAME, MAX_MANIFEST_BYTES)
        data = parse_json(raw)
    except (OSError, ValueError) as exc:
        return refuse("manifest", f"cannot be read: {exc}")
    except ManifestError as exc:
        return refuse("manifest", "; ".join(exc.problems))
    if not isinstance(data, dict):
        return refuse("manifest", "the top level must be a JSON object")
    if data.get("kind") != KIND:
        return refuse("manifest", f"kind is {data.get('kind')!r}; a data package says {KIND!r}")
    version = data.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        readable = " or ".join(map(str, READABLE_VERSIONS))
        return refuse(
            "schema-version",
            f"unknown schema_version {version!r}; this Forge reads data packages of "
            f"schema_version {readable}",
        )
    try:
        check.manifest = DataManifest.model_validate(data)
    except ValidationError as exc:
        return refuse("manifest", "; ".join(validation_problems(exc, "(top)")))
    check.manifest_sha256 = hashlib.sha256(raw).hexdigest()
    return True


def _listed(manifest: DataManifest, names: list[str]) -> list[Problem]:
    """Every rows file on disk is listed in the manifest, and every listed one is there."""
    on_disk = {n for n in names if n != MANIFEST_NAME}
    problems = [
        Problem("unlisted-file", name, "not listed in manifest.json: every file is hashed", REBUILD)
        for name in sorted(on_disk - set(manifest.files))
    ]
    problems += [
        Problem(
            "missing",
            name,
            "listed in manifest.json but not in the package",
            "copy the package again",
        )
        for name in sorted(set(manifest.files) - on_disk)
    ]
    return problems


def _read_listed(check: _Checking, name: str, size: int, sha256: str) -> bytes | None:
    """The file's bytes when its size and sha256 are the manifest's; else None, with why."""
    limit = int(check.limits.max_file_mb * MB)
    try:
        data = read_bounded(check.root / name, limit)
    except (OSError, ValueError) as exc:
        check.problems.append(
            Problem("unreadable", name, f"cannot be read: {exc}", "copy the package again")
        )
        return None
    if len(data) != size:
        check.problems.append(
            Problem(
                "size-mismatch",
                name,
                f"{len(data)} bytes; the manifest says {size}",
                "copy the package again",
            )
        )
        return None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        check.problems.append(
            Problem(
                "hash-mismatch",
                name,
                f"sha256 {digest[:16]}…; the manifest says {sha256[:16]}…",
                "copy the package "
                "again; if it persists, the rows were changed after "
                "they were written",
            )
        )
        return None
    return data


# --- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CorpusView:
    """What rows are checked against: each package name's split and commits, the hold-out."""

    splits: dict[str, str | None]
    commits: dict[str, frozenset[str]]
    holdout: Holdout

    @classmethod
    def of(cls, config: Config, db: corpus.Connection) -> _CorpusView:
        packages = corpus.packages(db)
        splits = {p.name: corpus.newest_split(db, p.name) for p in packages}
        commits = {name: frozenset(history(db, name)) for name in splits}
        return cls(splits, commits, Holdout.of(config, db))

    def problem(self, row: DataRow) -> tuple[str, str] | None:
        """(rule, message) when the row is about a commit no dataset may take rows of."""
        if row.package is None:
            return None
        if row.package not in self.splits:
            return "unknown-package", f"package {row.package!r} is not in the corpus"
        if row.commit not in self.commits[row.package]:
            return "unknown-commit", f"{row.package} has no commit {row.commit[:12]} in the corpus"
        if self.splits[row.package] == "eval":
            return "eval-package", f"{row.package} is an eval package: never trained on"
        if self.holdout.held_out(row.package, row.commit):
            return "held-out-commit", f"{row.package}@{row.commit[:12]} is held out of training"
        return None


ROW_FIXES = {
    "bad-json": REBUILD,
    "row-too-large": "leave the row out, or raise data_packages.max_row_kb in forge.toml",
    "row-schema": REBUILD,
    "not-a-stage-prompt": "give each row the messages Forge's own stage prompt is made of "
    "(appliance/stages/prompts.toml)",
    "unknown-package": "ingest the repo package first, or leave the rows out",
    "unknown-commit": "make the rows from commits of the repo package ingested here",
    "eval-package": "leave rows about eval packages out: they would leak into evaluation",
    "held-out-commit": "leave rows about held-out commits out: they would leak into evaluation",
}


def _read_rows(
    check: _Checking, stage: str, name: str, data: bytes, stated: int, view: _CorpusView
) -> None:
    """Parse and check every line of a rows file; the good rows go to `check.rows`."""
    limit = int(check.limits.max_row_kb * 1024)
    found: dict[str, list[str]] = {}
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last row
    for number, line in enumerate(lines, 1):
        rule, message, row = _read_row(stage, line, limit, view)
        if rule is None:
            check.rows.append(ParsedRow(stage, number, row))
        else:
            found.setdefault(rule, []).append(f"line {number}: {message}")
    for rule, messages in found.items():
        more = len(messages) - SHOWN_PER_RULE
        text = "; ".join(messages[:SHOWN_PER_RULE]) + (f"; and {more} more" if more > 0 else "")
        check.problems.append(Problem(rule, name, text[:4000], ROW_FIXES[rule]))
    if not found and len(lines) != stated:
        check.problems.append(
            Problem("row-count", name, f"{len(lines)} rows; the manifest says {stated}", REBUILD)
        )


def _read_row(
    stage: str, line: bytes, limit: int, view: _CorpusView
) -> tuple[str | None, str, DataRow | None]:
    """(None, "", row) for a good line, else (rule, what is wrong, None)."""
    if len(line) > limit:
        return "row-too-large", f"{len(line)} bytes; the limit is {limit}", None
    if not line.strip():
        return "bad-json", "an empty line", None
    try:
        data = parse_json(line)
    except ManifestError as exc:
        return "bad-json", "; ".join(exc.problems)[:300], None
    if not isinstance(data, dict):
        return "bad-json", "a row is a JSON object", None
    try:
        row = DataRow.model_validate(data)
    except ValidationError as exc:
        return "row-schema", "; ".join(validation_problems(exc, "(row)"))[:300], None
    problem = prompt_problem(stage, row.messages)
    if problem:
        return "not-a-stage-prompt", problem, None
    refused = view.problem(row)
    if refused:
        return *refused, None
    return None, "", row


# --- already here --------------------------------------------------------------------------


def _already_here(db, manifest: DataManifest, manifest_sha256: str) -> list[Problem]:
    """Refuses a package whose name and version, or whose rows, were ingested before."""
    known = store.package_named(db, manifest.name, manifest.version)
    if known is not None:
        same = known.manifest_sha256 == manifest_sha256
        return [
            Problem(
                "duplicate" if same else "version-conflict",
                MANIFEST_NAME,
                f"{manifest.name} {manifest.version} was ingested on {known.ingested_at}"
                + ("" if same else " with other content"),
                "nothing to do" if same else "give the package a new version",
            )
        ]
    same_rows = store.package_with_content(db, manifest.content_sha256)
    if same_rows is not None:
        return [
            Problem(
                "duplicate-content",
                "",
                f"the same rows were ingested on {same_rows.ingested_at} as "
                f"{same_rows.name} {same_rows.version}",
                "nothing to do: those rows are here already",
            )
        ]
    return []
