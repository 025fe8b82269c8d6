"""`forge ingest`: take complete packages from the ingest folder into the corpus.

Each package is copied into a staging folder inside corpus/ (regular files only), the
copy is validated, its repository is replaced by a clean copy (no git metadata from the
package survives), and it is renamed into place: the rename is the commit point, so
the corpus holds a package completely or not at all. The database row follows; a
crash between the two is repaired by `recover` on the next run. Rejected packages move
to quarantine/ with REJECTED.txt.

A package is kept in corpus/NAME@VERSION: names and versions cannot hold "@", so no two
packages share a folder (the older NAME-VERSION layout made `demo` `x-1` and `demo-x` `1`
collide). Rows keep the path they were stored with, so earlier ingests stay where they are.
One package can never stop the run: any error while taking it, even a bug, quarantines
that package with the reason, and the loop goes on to the next. A full disk is not the
package's fault: a package is not started without room for twice its size plus the floor
(doctor.min_free_gb), and one that fills the disk anyway is left where it was ("waiting",
its staging copy removed) for the next run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from appliance.clock import now_iso
from appliance.config import Config
from appliance.diskspace import is_disk_full, room, tree_bytes
from appliance.errors import ForgeError
from appliance.packages import corpus, gitsafe
from appliance.packages.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    parse_json,
    read_manifest,
)
from appliance.packages.problems import Problem
from appliance.packages.rules import MAX_DEPTH, check_files
from appliance.packages.split import TrainedRows, split_at_ingest
from appliance.packages.validate import validate
from appliance.records import as_json
from appliance.store import transaction

READY_MARKER = "READY"
# What a rejected package of each kind did not reach, and the command that checks one.
AFTER_REJECTION = {
    "repo package": ("the corpus", "forge package validate"),
    "data package": ("a dataset", "forge data-package validate"),
}
DATA_KIND = "data"  # a manifest.json saying "kind": "data" is a data package's
# Takes one data package (source, keep) into the database or quarantine. Data packages
# are checked against the stage prompts (a layer above this one), so the callers hand in
# appliance.datapackages.take.take_data_package.
TakeData = Callable[[Path, bool], "IngestResult"]
STAGING_PREFIX = ".staging-"
MAX_KIND_BYTES = 1 << 20  # of a manifest read only for its kind (a data package's is small)
SEPARATOR = "@"  # manifest names and versions never hold it (appliance.packages.manifest)


def corpus_folder(name: str, version: str) -> str:
    """The folder name in corpus/ of a package: one per (name, version), by construction."""
    return f"{name}{SEPARATOR}{version}"


@dataclass(frozen=True)
class IngestResult:
    source: str
    outcome: str  # accepted | rejected | duplicate | waiting | recovered
    name: str | None = None
    version: str | None = None
    path: str | None = None  # corpus or quarantine path
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return as_json(self)


def label(name: str) -> str:
    """A file name as text that can be stored and printed: bytes that are not UTF-8 are
    written as escapes, so they never fail an insert or a write."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


@contextmanager
def ingest_lock(config: Config) -> Iterator[None]:
    config.home.mkdir(parents=True, exist_ok=True)
    with open(config.home / "ingest.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ForgeError(
                "another ingest is running",
                "wait for it to finish (forge status shows the daemon's work)",
            ) from exc
        yield


def newest_change(path: Path) -> float:
    """The latest mtime/ctime of anything under `path` (links not followed)."""
    st = os.lstat(path)
    newest = max(st.st_mtime, st.st_ctime)
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            for name in dirnames + filenames:
                entry = os.lstat(os.path.join(dirpath, name))
                newest = max(newest, entry.st_mtime, entry.st_ctime)
            if os.path.relpath(dirpath, path).count(os.sep) >= MAX_DEPTH:
                dirnames.clear()  # deeper is refused by the file rules; never recurse there
    return newest


def is_complete(path: Path, quiet_seconds: float, now: float | None = None) -> bool:
    """A package is complete when it has a READY marker, or when nothing in it changed
    for `quiet_seconds` (the copy from USB has finished). A complete folder without a
    manifest is then rejected rather than waited on for ever."""
    if path.is_dir() and not path.is_symlink() and (path / READY_MARKER).is_file():
        return True
    return newest_change(path) <= (now or time.time()) - quiet_seconds


def _copy_regular_tree(src: Path, dest: Path) -> None:
    """Copy directories and regular files only (the file rules already ruled out the rest)."""
    dest.mkdir()
    for entry in os.scandir(src):
        st = entry.stat(follow_symlinks=False)
        target = dest / entry.name
        if stat.S_ISDIR(st.st_mode):
            _copy_regular_tree(Path(entry.path), target)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(entry.path, target, follow_symlinks=False)
            os.chmod(target, 0o444 if entry.name != READY_MARKER else 0o644)
        else:
            raise ForgeError(f"{entry.path} changed into a non-regular file during ingest")


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(dirpath, name))
        _fsync(dirpath)


def record_package(
    db: sqlite_utils.Database,
    manifest: Manifest,
    sha256: str,
    path: str,
    outcome: str,
    source: str,
    *,
    eval_fraction: float,
    trained_rows: TrainedRows,
) -> int:
    """Insert the package, its commits and the ingest event in one transaction.

    `path` is relative to FORGE_HOME ("corpus/NAME@VERSION"), so a restored or moved
    FORGE_HOME keeps working. The split is decided here (appliance.packages.split)."""
    with transaction(db) as conn:
        split, split_note = split_at_ingest(
            conn, manifest.name, manifest.split, eval_fraction, trained_rows
        )
        package_id = corpus.add_package(
            conn,
            name=manifest.name,
            version=manifest.version,
            manifest_sha256=sha256,
            path=path,
            split=split,
            description=manifest.description,
            license=manifest.license,
            python=manifest.python,
            test_command=list(manifest.test_command),
            test_timeout_s=manifest.test_timeout_s,
            # The newest commit's set, as the one set schema 1 had.
            requirements=list(manifest.requirements_of(manifest.commits[-1].sha)),
            requirement_sets=[list(s) for s in manifest.requirement_sets],
        )
        corpus.add_commits(
            conn,
            package_id,
            [
                corpus.NewCommit(
                    sha=c.sha,
                    parent=c.parent,
                    message=c.message,
                    author_date=c.author_date,
                    files=json.dumps([f.model_dump() for f in c.files]),
                    lines_added=c.lines_added,
                    lines_deleted=c.lines_deleted,
                    requirement_set=c.requirement_set,
                )
                for c in manifest.commits
            ],
        )
        corpus.add_event(
            conn,
            source,
            outcome,
            package_id=package_id,
            reasons=[split_note] if split_note else [],
        )
    return package_id


def recover(
    config: Config, db: sqlite_utils.Database, trained_rows: TrainedRows
) -> list[IngestResult]:
    """Finish what a crashed ingest left: drop staging folders, register renamed packages."""
    folder = config.dir("corpus")
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    known = corpus.paths(db)
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(STAGING_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_dir() and f"corpus/{entry.name}" not in known:
            try:
                manifest, sha = read_manifest(entry)
                record_package(
                    db, manifest, sha, f"corpus/{entry.name}", "recovered", entry.name,
                    eval_fraction=config.settings.evaluation.eval_fraction,
                    trained_rows=trained_rows,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 — one folder must not block every ingest
                # Forge wrote it, yet it cannot be registered: set it aside with the reason.
                results.append(_unexpected(config, db, entry, exc, "recovering it"))
                continue
            results.append(
                IngestResult(entry.name, "recovered", manifest.name, manifest.version, str(entry))
            )
    return results


def quarantine(
    config: Config,
    db: sqlite_utils.Database,
    source: Path,
    problems: Sequence[Problem],
    name: str | None = None,
    version: str | None = None,
    keep: bool = False,
    what: str = "repo package",
) -> IngestResult:
    """Move `source` to quarantine/<name>-<time>/ beside a REJECTED.txt with the reasons
    (with `keep`, the source stays where it is and only REJECTED.txt is written). `what`
    the source is: a repo package, or a data package."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shown = label(source.name)
    # A short, printable folder name whatever the source is called.
    folder = config.dir("quarantine") / f"{shown[:100]}-{stamp}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    reasons = [label(p.line()) for p in problems]
    text = [f"Forge rejected the {what} '{shown}' on {now_iso()}.", ""]
    text += [f"- {line}" for line in reasons]
    entered, command = AFTER_REJECTION.get(what, AFTER_REJECTION["repo package"])
    text += [
        "",
        f"Nothing from it entered {entered}. Fix the package on the connected side",
        f"(`{command} DIR` shows the same report) and copy it again.",
    ]
    if keep:
        text.append(f"The package was left where it was: {label(str(source))}")
    try:
        (folder / "REJECTED.txt").write_text("\n".join(text) + "\n")
    except OSError:  # a full disk: no half-written quarantine entry is left behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not keep:
        shutil.move(str(source), str(folder / source.name))
    corpus.add_event(db, shown, "rejected", quarantine_path=str(folder), reasons=reasons)
    return IngestResult(shown, "rejected", name, version, str(folder), reasons)


def _unexpected(
    config: Config,
    db: sqlite_utils.Database,
    source: Path,
    exc: Exception,
    doing: str,
    keep: bool = False,
) -> IngestResult:
    """Quarantine `source` after an error nobody planned for (a bug, a full disk), with
    the traceback beside REJECTED.txt; if even that fails, say so and go on."""
    problem = Problem(
        "ingest-error",
        "",
        f"{type(exc).__name__} while {doing}: {exc}"[:2000],
        "the package was set aside so the packages after it could be taken; if it looks "
        "valid, report this with traceback.txt from its quarantine folder",
    )
    try:
        result = quarantine(config, db, source, [problem], keep=keep)
        trace = "".join(traceback.format_exception(exc))
        (Path(result.path) / "traceback.txt").write_text(trace, errors="backslashreplace")
        return result
    except Exception as again:  # noqa: BLE001 — the loop must go on whatever happened
        reasons = [label(problem.line()), label(f"and it could not be quarantined: {again}")]
        return IngestResult(label(source.name), "rejected", reasons=reasons)


def remove_source(source: Path) -> None:
    if source.is_dir() and not source.is_symlink():
        shutil.rmtree(source)
    else:
        source.unlink()


@dataclass(frozen=True)
class _Placed:
    """A package renamed into the corpus, its row not yet written."""

    manifest: Manifest
    sha256: str
    final: Path  # corpus/NAME@VERSION


def ingest_one(
    config: Config,
    db: sqlite_utils.Database,
    source: Path,
    hook: Callable[[str], None] | None = None,
    keep: bool = False,
    *,
    trained_rows: TrainedRows,
    take_data: TakeData | None = None,
) -> IngestResult:
    """Validate one complete package and move it into the corpus or quarantine; a data
    package goes to `take_data`.

    With `keep` the source is left in place (a read-only USB mount, the shipped demo).
    `trained_rows(name)`: the dataset rows made from package `name`, which keep a new
    package out of eval (the callers that have datasets pass
    `appliance.datasets.versions.rows_made_from`)."""
    hook = hook or (lambda stage: None)
    if declared_kind(source) == DATA_KIND:
        return _data_package(config, db, source, keep, take_data)
    # lstat-only pass on the original: links, devices and sizes are refused before copying.
    problems = check_files(source, config.settings.packages, read_magic=False)
    if problems:
        return quarantine(config, db, source, problems, keep=keep)
    claimed = _claimed_manifest(source)
    if claimed is not None:
        known = _compare_with_corpus(config, db, source, *claimed, keep=keep)
        if known is not None:
            return known
    # The staging copy, then the clean repository beside it: twice the package at most.
    space = room(config, f"ingest of {label(source.name)}", 2 * tree_bytes(source))
    if not space.ok:
        return IngestResult(label(source.name), "waiting", reasons=[space.reason()])
    placed = _place_in_corpus(config, db, source, claimed, hook, keep)
    if isinstance(placed, IngestResult):
        return placed
    hook("record")
    record_package(
        db, placed.manifest, placed.sha256, f"corpus/{placed.final.name}", "accepted",
        label(source.name), eval_fraction=config.settings.evaluation.eval_fraction,
        trained_rows=trained_rows,
    )  # fmt: skip
    if not keep:
        remove_source(source)
    manifest = placed.manifest
    return IngestResult(
        label(source.name), "accepted", manifest.name, manifest.version, str(placed.final)
    )


def declared_kind(source: Path) -> str:
    """ "data" when `source` is a data package: its manifest.json (a regular file, read
    within bounds) says kind "data", or, when that cannot be read, it holds rows files
    (*.jsonl) at the top and no repo/. Else "repo". Only lstat and that one file."""
    try:
        if not stat.S_ISDIR(os.lstat(source).st_mode):
            return "repo"
        entries = os.listdir(source)
    except OSError:
        return "repo"
    manifest = source / MANIFEST_NAME
    try:
        if stat.S_ISREG(os.lstat(manifest).st_mode):
            fd = os.open(manifest, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read(MAX_KIND_BYTES + 1)
            data = parse_json(raw) if len(raw) <= MAX_KIND_BYTES else None
            if isinstance(data, dict) and "kind" in data:
                return DATA_KIND if data["kind"] == DATA_KIND else "repo"
    except (OSError, ManifestError):
        pass  # unreadable: judged by what else the folder holds
    rows = any(name.endswith(".jsonl") for name in entries)
    return DATA_KIND if rows and "repo" not in entries else "repo"


def _data_package(
    config: Config,
    db: sqlite_utils.Database,
    source: Path,
    keep: bool,
    take_data: TakeData | None,
) -> IngestResult:
    if take_data is not None:
        return take_data(source, keep)
    refused = Problem(
        "data-package",
        MANIFEST_NAME,
        "a data package, and this ingest takes repo packages only",
        "take it with `forge ingest` (or the daemon's ingest job)",
    )
    return quarantine(config, db, source, [refused], keep=keep, what="data package")


def _claimed_manifest(source: Path) -> tuple[Manifest, str] | None:
    """The manifest and its hash as the package states them, before anything is copied;
    None when it does not read (validation of the copy then says why)."""
    try:
        return read_manifest(source)
    except (ManifestError, OSError):
        return None


def _compare_with_corpus(
    config: Config,
    db: sqlite_utils.Database,
    source: Path,
    manifest: Manifest,
    sha: str,
    *,
    keep: bool,
) -> IngestResult | None:
    """A duplicate of a package in the corpus (the same manifest again) is dropped; the
    same name and version with other content is refused; None for a package not there."""
    known = corpus.package_named(db, manifest.name, manifest.version)
    if known is None:
        return None
    if known.manifest_sha256 != sha:
        conflict = Problem(
            "version-conflict",
            MANIFEST_NAME,
            f"{manifest.name} {manifest.version} is already in the corpus with other content",
            "give the package a new version (forge package build --version)",
        )
        return quarantine(
            config, db, source, [conflict], manifest.name, manifest.version, keep=keep
        )
    corpus.add_event(db, label(source.name), "duplicate", package_id=known.id)
    if not keep:
        remove_source(source)
    return IngestResult(
        label(source.name),
        "duplicate",
        manifest.name,
        manifest.version,
        str(config.home / known.path),
        ["already in the corpus"],
    )


def _place_in_corpus(
    config: Config,
    db: sqlite_utils.Database,
    source: Path,
    claimed: tuple[Manifest, str] | None,
    hook: Callable[[str], None],
    keep: bool,
) -> _Placed | IngestResult:
    """Copy the package into a staging folder, validate the copy, give it a clean
    repository and rename it into the corpus (the commit point); a package refused on the
    way goes to quarantine, and the staging folder never outlives the call."""
    folder = config.dir("corpus")
    staging = folder / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        hook("copy")
        staged = staging / "package"
        _copy_regular_tree(source, staged)
        hook("validate")
        report = validate(staged, config)
        if not report.ok:
            name, version = (claimed[0].name, claimed[0].version) if claimed else (None, None)
            return quarantine(config, db, source, report.problems, name, version, keep=keep)
        manifest = report.manifest
        _replace_repository(staged, staging / "repo.git")
        final = folder / corpus_folder(manifest.name, manifest.version)
        if os.path.lexists(final):
            # recover() registered every folder at the start of this run, so the folder
            # belongs to another row (a corpus edited by hand): refuse this package.
            taken = Problem(
                "corpus-taken",
                MANIFEST_NAME,
                f"{final} already exists in the corpus for another package",
                "move that folder out of corpus/ (forge status lists the packages)",
            )
            return quarantine(
                config, db, source, [taken], manifest.name, manifest.version, keep=keep
            )
        hook("commit")
        staged.rename(final)  # the commit point
        _fsync(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _Placed(manifest, report.manifest_sha256, final)


def _replace_repository(staged: Path, clean: Path) -> None:
    """The corpus keeps a repository rebuilt by Forge: objects and refs, nothing else.
    The READY marker goes too, and the whole copy is on disk before it is renamed."""
    gitsafe.clean_copy(staged / "repo", clean)
    shutil.rmtree(staged / "repo")
    clean.rename(staged / "repo")
    (staged / READY_MARKER).unlink(missing_ok=True)
    _fsync_tree(staged)


def ingest(
    config: Config,
    db: sqlite_utils.Database,
    folder: Path | None = None,
    on_result: Callable[[IngestResult], None] | None = None,
    hook: Callable[[str], None] | None = None,
    keep: bool = False,
    *,
    trained_rows: TrainedRows,
    take_data: TakeData | None = None,
) -> list[IngestResult]:
    """Ingest every complete package in `folder` (default FORGE_HOME/ingest/); a folder
    that is itself a package (it holds manifest.json) is ingested at once, as named.
    `trained_rows` and `take_data` as for `ingest_one`."""
    folder = Path(folder) if folder else config.dir("ingest")
    config.ensure_dirs()
    if not folder.is_dir():
        raise ForgeError(f"{folder} is not a directory", "name the folder holding the packages")
    # A folder that is itself a package was named by the operator: it is complete.
    single = (folder / MANIFEST_NAME).is_file()
    entries = [folder] if single else sorted(folder.iterdir())
    results: list[IngestResult] = []
    emit = on_result or (lambda r: None)
    with ingest_lock(config):
        for result in recover(config, db, trained_rows):
            results.append(result)
            emit(result)
        quiet = config.settings.ingest.quiet_seconds
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden: editors' and copiers' temporary files
            try:
                if not single and not is_complete(entry, quiet):
                    result = IngestResult(
                        label(entry.name),
                        "waiting",
                        reasons=[
                            f"still being copied (no READY marker, changed in the last {quiet:g} s)"
                        ],
                    )
                else:
                    result = ingest_one(
                        config, db, entry, hook, keep=keep, trained_rows=trained_rows,
                        take_data=take_data,
                    )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 — one package never stops the run
                if is_disk_full(exc):  # not the package's fault: it stays for the next run
                    reason = f"waiting for disk: the disk filled while ingesting it ({exc})"
                    result = IngestResult(label(entry.name), "waiting", reasons=[reason])
                else:
                    result = _unexpected(config, db, entry, exc, "ingesting it", keep=keep)
            results.append(result)
            emit(result)
    return results
