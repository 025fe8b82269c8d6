"""The repo package manifest (`manifest.json`), validated with pydantic.

The format is documented in docs/repo-package.md; bump SCHEMA_VERSION when it changes.
Schema 2 lists pinned requirement sets and which set each commit uses; a schema 1
manifest (one `requirements` list for every commit) is still read, as set 0 of a schema 2
one (`ManifestV1.upgraded`), so the rest of Forge sees one shape.
Manifests come from outside, so every parse is bounded before json sees the bytes: the
size (checked before reading), the nesting depth, and the length of every number and
string; a manifest past any bound is a ManifestError naming it, never a json exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.errors import ForgeError, validation_problems

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_REQUIREMENT_SETS = 64  # what a manifest may list; the build's own cap is lower
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 32 << 20
# A valid manifest nests 5 deep (manifest → commits → commit → files → file); json's
# parser recurses, so depth is bounded before it runs.
MAX_DEPTH = 32
MAX_NUMBER_CHARS = 32  # digits, sign, point and exponent of one JSON number
MAX_STRING_BYTES = 1 << 20  # one JSON string as written (escapes included)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")

Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# Names and versions never hold "@": the corpus folder NAME@VERSION is unique by construction.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]
Text = Annotated[str, StringConstraints(max_length=4096)]


def _repo_path(path: str) -> str:
    # A path inside the repository: relative, never "..", no NUL or line breaks.
    if path.startswith("/") or ".." in path.split("/") or any(c in path for c in "\0\n\r"):
        raise ValueError(f"{path!r} is not a plain relative path inside the repository")
    return path


RepoPath = Annotated[
    str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_repo_path)
]


def _pinned(req: str) -> str:
    try:
        parsed = Requirement(req)
    except InvalidRequirement as exc:
        raise ValueError(f"not a valid requirement: {exc}") from exc
    specs = list(parsed.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise ValueError(f"{req!r} is not pinned; write it as name==version")
    if parsed.url:
        raise ValueError(f"{req!r} points at a URL; requirements come from packages/ only")
    return req


Pin = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_pinned)]
Pins = Annotated[list[Pin], Field(max_length=4096)]


def _repeated_project(pins: list[str]) -> bool:
    names = {Requirement(r).name.lower().replace("_", "-").replace(".", "-") for r in pins}
    return len(names) != len(pins)


def _wheel_filename(name: str) -> str:
    if (
        len(name) > 255
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or not name.endswith(".whl")
    ):
        raise ValueError(f"{name!r} is not a plain wheel file name")
    return name


def _specifier(value: str) -> str:
    try:
        SpecifierSet(value)
    except InvalidSpecifier as exc:
        raise ValueError(f"{value!r} is not a version specifier like '>=3.11'") from exc
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileChange(_Model):
    path: RepoPath
    added: int = Field(ge=0)
    deleted: int = Field(ge=0)


class CommitEntryV1(_Model):
    sha: Sha
    parent: Sha
    message: str = Field(min_length=1, max_length=65536)
    author_date: str = Field("", max_length=64)
    files: list[FileChange] = Field(min_length=1, max_length=100_000)

    @property
    def lines_added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def lines_deleted(self) -> int:
        return sum(f.deleted for f in self.files)


class CommitEntry(CommitEntryV1):
    requirement_set: int = Field(ge=0)  # an index into Manifest.requirement_sets


class Source(_Model):
    url: Text = ""
    branch: Text = ""
    head: Sha | None = None


class _ManifestFields(_Model):
    """What schema 1 and 2 share."""

    name: Name
    version: Version
    description: str = Field("", max_length=4096)
    license: str = Field("", max_length=256)
    python: Annotated[str, StringConstraints(max_length=256), AfterValidator(_specifier)] = ">=3.11"
    test_command: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=256
    )
    test_timeout_s: float = Field(gt=0, le=24 * 3600)
    split: Literal["train", "eval"] | None = None
    source: Source = Source()
    wheels: dict[Annotated[str, AfterValidator(_wheel_filename)], Sha256] = Field(max_length=4096)

    @field_validator("test_command")
    @classmethod
    def _runs_pytest(cls, argv: list[str]) -> list[str]:
        # Forge grades with pytest's JUnit report, so the command must be pytest.
        if argv[0] == "pytest" or argv[:3] == ["python", "-m", "pytest"]:
            return argv
        raise ValueError("must run pytest: ['pytest', ...] or ['python', '-m', 'pytest', ...]")

    def _check_commits(self, commits: list[CommitEntryV1]) -> None:
        shas = [c.sha for c in commits]
        if len(set(shas)) != len(shas):
            raise ValueError("commits lists the same sha more than once")


class Manifest(_ManifestFields):
    schema_version: Literal[2]
    # Commits that declare the same dependencies share one pinned set; set 0 is the
    # newest commit's.
    requirement_sets: list[Pins] = Field(min_length=1, max_length=MAX_REQUIREMENT_SETS)
    commits: list[CommitEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        self._check_commits(self.commits)
        for index, pins in enumerate(self.requirement_sets):
            if _repeated_project(pins):
                raise ValueError(f"requirement set {index} names a project more than once")
        count = len(self.requirement_sets)
        for commit in self.commits:
            if commit.requirement_set >= count:
                raise ValueError(
                    f"commit {commit.sha[:12]} uses requirement set {commit.requirement_set}, "
                    f"which does not exist (requirement_sets holds {count})"
                )
        unused = sorted(set(range(count)) - {c.requirement_set for c in self.commits})
        if unused:
            raise ValueError(f"requirement set {unused[0]} is used by no commit")
        return self

    def requirements_of(self, sha: str) -> tuple[str, ...]:
        """The pinned requirements commit `sha` (listed in this manifest) is tested with."""
        for commit in self.commits:
            if commit.sha == sha:
                return tuple(self.requirement_sets[commit.requirement_set])
        raise KeyError(f"commit {sha} is not in the manifest of {self.name} {self.version}")

    def commits_using(self, index: int) -> list[CommitEntry]:
        return [c for c in self.commits if c.requirement_set == index]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"


class ManifestV1(_ManifestFields):
    """Schema 1: one requirement list for every commit. Read, never written."""

    schema_version: Literal[1]
    requirements: Pins
    commits: list[CommitEntryV1] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ManifestV1:
        self._check_commits(self.commits)
        if _repeated_project(self.requirements):
            raise ValueError("requirements names a project more than once")
        return self

    def upgraded(self) -> Manifest:
        """The same package as schema 2: its requirements are set 0, used by every commit."""
        fields = self.model_dump(exclude={"schema_version", "requirements", "commits"})
        return Manifest.model_validate(
            {
                **fields,
                "schema_version": 2,
                "requirement_sets": [self.requirements],
                "commits": [{**c.model_dump(), "requirement_set": 0} for c in self.commits],
            }
        )


class ManifestError(ForgeError):
    """manifest.json cannot be read or does not match the schema; `problems` says where."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _number(text: str) -> int | float:
    # json hands every number over as text first: refuse long ones before converting
    # (int() of 5,000 digits raises ValueError; Python refuses over 4,300).
    if len(text) > MAX_NUMBER_CHARS:
        raise ManifestError(
            [f"a number {len(text)} characters long; the limit is {MAX_NUMBER_CHARS}"]
        )
    return float(text) if any(c in text for c in ".eE") else int(text)


def _constant(name: str) -> None:
    raise ManifestError([f"{name} is not JSON; write a number"])


def check_shape(raw: bytes) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH or holding a string longer than
    MAX_STRING_BYTES, without parsing it (so no parser recursion is ever deep)."""
    longest = max((m.end() - m.start() for m in _STRING.finditer(raw)), default=0)
    if longest > MAX_STRING_BYTES:
        raise ManifestError(
            [f"a string of {longest} bytes; the limit is {MAX_STRING_BYTES} per string"]
        )
    # With the strings gone every bracket left is structure. Each pass removes the
    # innermost pairs, so MAX_DEPTH passes leave nothing of a shallow document.
    brackets = _STRING.sub(b"", raw).translate(_SQUARE, delete=_NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        if b"[]" not in brackets:
            break
        brackets = brackets.replace(b"[]", b"")
    # What is left is a deeper pair, or unbalanced brackets (json reports those, as long
    # as there are too few to recurse deeply).
    if b"[]" in brackets or brackets.count(b"[") > MAX_DEPTH:
        raise ManifestError([f"JSON nested more than {MAX_DEPTH} deep; the limit is {MAX_DEPTH}"])


def parse_json(raw: bytes) -> object:
    """JSON from outside, parsed within the bounds above (depth, string and number
    lengths); ManifestError saying what is wrong. Data packages parse theirs with it too."""
    try:
        # JSON is UTF-8 (RFC 8259); then no byte of a multi-byte character looks like a
        # quote or a bracket, and check_shape can work on the bytes.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError([f"not UTF-8 text: {exc}"]) from exc
    check_shape(raw)
    try:
        data = json.loads(text, parse_int=_number, parse_float=_number, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ManifestError([f"not valid JSON: {exc}"]) from exc
    return data


def parse_manifest(raw: bytes) -> Manifest:
    """Parse manifest bytes; raise ManifestError listing every problem found."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError([f"manifest is {len(raw)} bytes; the limit is {MAX_MANIFEST_BYTES}"])
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ManifestError(["the top level must be a JSON object"])
    version = data.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        readable = " or ".join(str(v) for v in READABLE_VERSIONS)
        raise ManifestError(
            [
                f"unknown schema_version {version!r}; this Forge reads schema_version "
                f"{readable} (rebuild the package with this Forge's `forge package build`)"
            ]
        )
    try:
        if version == 1:
            return ManifestV1.model_validate(data).upgraded()
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(validation_problems(exc, "(top)")) from exc


def manifest_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read_manifest(package_dir: Path) -> tuple[Manifest, str]:
    """Read and parse DIR/manifest.json; return it with the sha256 of its bytes.

    The size is checked before reading, on the opened file itself (no link followed,
    no FIFO waited on); OSError when it cannot be opened."""
    fd = os.open(package_dir / MANIFEST_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError([f"{MANIFEST_NAME} is not a regular file"])
        if st.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                [f"manifest is {st.st_size} bytes; the limit is {MAX_MANIFEST_BYTES}"]
            )
        raw = fh.read(MAX_MANIFEST_BYTES + 1)  # a file that grew meanwhile is still bounded
    return parse_manifest(raw), manifest_sha256(raw)
