"""A commit's files, read straight from the bare corpus repository.

Only the tree of the given commit is listed and only its blobs are read, so nothing from
a later commit can reach the index. Submodules and symbolic links are skipped (a link's
target is not content of the repository).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from appliance.errors import IndexingError
from appliance.packages import gitsafe

REGULAR_MODES = {b"100644", b"100755"}
HEX_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
READ_BATCH = 256  # blobs per `git cat-file --batch`: bounds the memory one call holds

LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".pyx": "cython",
    ".md": "markdown",
    ".rst": "rst",
    ".txt": "text",
    ".toml": "toml",
    ".cfg": "ini",
    ".ini": "ini",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".json": "json",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".rs": "rust",
    ".go": "go",
    ".java": "java",
    ".js": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".sh": "shell",
    ".bash": "shell",
    ".html": "html",
    ".css": "css",
    ".sql": "sql",
    ".xml": "xml",
    ".csv": "csv",
    ".in": "text",
}
NAMED = {
    "Makefile": "make",
    "Dockerfile": "dockerfile",
    "LICENSE": "text",
    "COPYING": "text",
    ".gitignore": "text",
    ".gitattributes": "text",
}


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    language: str  # from the file name: "python", "markdown", ... or "other"
    blob: str  # git blob hash


def language_of(path: str) -> str:
    p = PurePosixPath(path)
    return NAMED.get(p.name) or LANGUAGES.get(p.suffix.lower(), "other")


def resolve_commit(repo: Path, sha: str) -> str:
    """The full hash of commit `sha` in `repo`; IndexingError when it is not a commit there."""
    if not HEX_SHA.fullmatch(sha):  # hex only: nothing git could take for an option or a ref
        raise IndexingError(f"{sha!r} is not a commit hash", "give 4 to 64 hex digits")
    try:
        out = gitsafe.git(["rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], git_dir=repo)
    except gitsafe.GitError as exc:
        raise IndexingError(
            f"{sha!r} is not a commit of {repo}",
            "index a commit listed in the package's manifest (the commits table)",
        ) from exc
    return out.decode().strip()


def list_files(repo: Path, sha: str) -> list[FileEntry]:
    """The regular files of commit `sha`'s tree, sorted by path."""
    out = gitsafe.git(["ls-tree", "-r", "-z", "--long", "--full-tree", sha], git_dir=repo)
    entries = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, blob, size = meta.split()
        if kind != b"blob" or mode not in REGULAR_MODES:
            continue  # submodule (commit) or symbolic link (120000)
        try:
            path = raw_path.decode("utf-8")
        except UnicodeDecodeError:
            continue  # SQLite stores UTF-8 only; such a path could not be looked up again
        entries.append(FileEntry(path, int(size), language_of(path), blob.decode()))
    return sorted(entries, key=lambda e: e.path)


def read_blobs(repo: Path, blobs: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """(hash, content) of each blob, READ_BATCH at a time through `git cat-file --batch`."""
    for start in range(0, len(blobs), READ_BATCH):
        batch = blobs[start : start + READ_BATCH]
        found = gitsafe.read_blobs(repo, batch)
        for blob in batch:
            if blob not in found:
                raise IndexingError(f"blob {blob} is missing from {repo} (git has no such blob)")
            yield blob, found[blob]
