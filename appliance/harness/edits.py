"""Applying a model's or an operator's code edits to a worktree, and recording what changed.

A worktree is a directory holding a repository snapshot as a git repository with one commit.
Two edit formats are accepted: search/replace edits (`SearchReplace`, each search text must
occur exactly once; an empty search creates a new file) and unified diffs (`git diff` or
`diff -u` with a/ b/ prefixes, applied by `git apply`, then `git apply --3way`). Every path is
checked before anything is written: relative, no `..`, nothing under `.git`, never through a
symbolic link. Edits are all-or-nothing: when one fails, `EditNotApplied` says which, why
(a short `reason` code) and where, and the worktree is left byte for byte as it was. `diff_of`
gives the worktree's changes against its commit as a diff, new files included. Every git call
goes through `appliance.packages.gitsafe.git`.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from appliance.errors import ForgeError
from appliance.packages.gitsafe import GitError, git

REASONS = (
    "bad-path",
    "missing-file",
    "file-exists",
    "not-found",
    "ambiguous",
    "not-utf8",
    "malformed",
    "does-not-apply",
)

# git's modes for symbolic links and submodules; a patch may not create either.
_LINK_MODES = ("120000", "160000")
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_MODE_LINE = re.compile(r"^(?:new file mode|new mode|deleted file mode|old mode) (\d+)\s*$")
_INDEX_LINE = re.compile(r"^index [0-9a-fA-F]+\.\.[0-9a-fA-F]+ (\d+)\s*$")
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


class EditNotApplied(ForgeError):
    """An edit could not be applied; the worktree is unchanged.

    `reason` is one of REASONS, `path` the file concerned (or None), `index` the 0-based
    position of the failing search/replace edit (or None).
    """

    def __init__(
        self,
        reason: str,
        message: str,
        path: str | None = None,
        index: int | None = None,
        hint: str | None = None,
    ) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown EditNotApplied reason {reason!r}")
        super().__init__(message, hint)
        self.reason = reason
        self.path = path
        self.index = index


@dataclass(frozen=True)
class SearchReplace:
    """Replace the one occurrence of `search` in `path` by `replace`; empty search: new file."""

    path: str
    search: str
    replace: str


# --- paths -------------------------------------------------------------------------------


def _check_path(root: Path, rel: object, where: str) -> tuple[str, Path]:
    """Normalise `rel` and return it with its absolute path; EditNotApplied("bad-path") if unsafe.

    `root` is the resolved worktree. Existing components are checked with lstat so that no
    component (the file itself included) is a symbolic link.
    """

    def bad(why: str) -> EditNotApplied:
        shown = rel if isinstance(rel, str) else None
        return EditNotApplied("bad-path", f"{where}: path {rel!r} {why}", path=shown)

    if not isinstance(rel, str) or not rel:
        raise bad("is empty")
    if "\0" in rel:
        raise bad("contains a NUL byte")
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise bad("is absolute; paths must be relative to the worktree")
    if ".." in pure.parts:
        raise bad("contains '..'")
    if not pure.parts:
        raise bad("names the worktree itself")
    if any(part.casefold() == ".git" for part in pure.parts):
        raise bad("is inside .git")
    current = root
    for i, part in enumerate(pure.parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break
        if stat.S_ISLNK(mode):
            if i == len(pure.parts) - 1:
                raise bad("is a symbolic link; edits never write through links")
            raise bad(f"passes through the symbolic link {PurePosixPath(*pure.parts[: i + 1])}")
        if i < len(pure.parts) - 1 and not stat.S_ISDIR(mode):
            raise bad(f"passes through {PurePosixPath(*pure.parts[: i + 1])}, not a directory")
    target = root.joinpath(*pure.parts)
    # Belt and braces: whatever the checks above missed, the target must resolve inside.
    if not target.resolve().is_relative_to(root):
        raise bad("resolves outside the worktree")
    return pure.as_posix(), target


def _first_line(text: str) -> str:
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return repr(line if len(line) <= 60 else line[:57] + "...")


# --- search/replace ----------------------------------------------------------------------


def parse_search_replace(data: object) -> list[SearchReplace]:
    """Build edits from a JSON-like list of {"path", "search", "replace"} objects, strictly."""
    if not isinstance(data, list):
        raise EditNotApplied(
            "malformed", f"search/replace edits must be a list, not {type(data).__name__}"
        )
    if not data:
        raise EditNotApplied("malformed", "the list of search/replace edits is empty")
    edits = []
    keys = {"path", "search", "replace"}
    for i, item in enumerate(data):
        where = f"edit {i + 1} of {len(data)}"
        if not isinstance(item, dict):
            raise EditNotApplied(
                "malformed", f"{where} must be an object, not {type(item).__name__}", index=i
            )
        if unknown := sorted(set(item) - keys, key=str):
            raise EditNotApplied("malformed", f"{where} has unknown keys {unknown}", index=i)
        if missing := sorted(keys - set(item)):
            raise EditNotApplied("malformed", f"{where} lacks keys {missing}", index=i)
        for key in ("path", "search", "replace"):
            if not _is_text(item[key]):
                kind = type(item[key]).__name__
                raise EditNotApplied(
                    "malformed",
                    f"{where}: {key!r} must be a string of valid Unicode, not {kind}",
                    path=item["path"] if _is_text(item["path"]) else None,
                    index=i,
                )
        edits.append(SearchReplace(item["path"], item["search"], item["replace"]))
    return edits


def _is_text(value: object) -> bool:
    """A str that encodes to UTF-8 (JSON's "\\ud800" escapes give lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_file(target: Path) -> bytes:
    # O_NOFOLLOW: the link check already ran, this closes the gap should the file change since.
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _write_file(target: Path, data: bytes, mode: int | None) -> None:
    """Write `data` to `target` by rename, so a hard link or a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".forge-tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # A new file gets git's ordinary mode; reading the umask would race other threads.
        os.chmod(tmp, 0o644 if mode is None else stat.S_IMODE(mode))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_search_replace(worktree: Path, edits: Sequence[SearchReplace]) -> list[str]:
    """Apply `edits` in order (each sees the ones before); return the changed paths, sorted.

    All new contents are computed in memory before anything is written, so a failing edit
    leaves the worktree untouched.
    """
    root = Path(worktree).resolve()
    # path → (original bytes or None when absent, original mode or None)
    originals: dict[str, tuple[bytes | None, int | None]] = {}
    current: dict[str, bytes | None] = {}
    targets: dict[str, Path] = {}
    total = len(edits)
    for i, edit in enumerate(edits):
        where = f"edit {i + 1} of {total}"
        if not isinstance(edit, SearchReplace) or not all(
            _is_text(v) for v in (edit.path, edit.search, edit.replace)
        ):
            raise EditNotApplied("malformed", f"{where} is not a SearchReplace of strings", index=i)
        try:
            rel, target = _check_path(root, edit.path, f"{where}")
        except EditNotApplied as e:
            e.index = i
            raise
        where = f"{where} ({rel})"
        if rel not in current:
            originals[rel] = _original(target, edit, where, rel, i)
            current[rel] = originals[rel][0]
            targets[rel] = target
        current[rel] = _edited(current[rel], edit, where, rel, i)

    changed = sorted(rel for rel, data in current.items() if data != originals[rel][0])
    _write_all(root, {rel: current[rel] for rel in changed}, originals, targets)
    return changed


def _original(
    target: Path, edit: SearchReplace, where: str, rel: str, i: int
) -> tuple[bytes | None, int | None]:
    """The file's bytes and mode before any edit, (None, None) when absent; only a
    regular file can be edited (and nothing can be created over a directory)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None, None
    if stat.S_ISDIR(st.st_mode):
        if edit.search == "":
            raise EditNotApplied("file-exists", f"{where}: a directory exists there", rel, i)
        raise EditNotApplied("bad-path", f"{where}: is a directory", rel, i)
    if not stat.S_ISREG(st.st_mode):
        raise EditNotApplied("bad-path", f"{where}: is not a regular file", rel, i)
    return _read_file(target), st.st_mode


def _edited(content: bytes | None, edit: SearchReplace, where: str, rel: str, i: int) -> bytes:
    """`content` (None: no file) after `edit`, the `i`th edit, which names `rel`."""
    if edit.search == "":
        if content is not None:
            raise EditNotApplied(
                "file-exists",
                f"{where}: empty search text creates a new file, but the file exists",
                rel,
                i,
                hint="give the text to replace as `search` to edit an existing file",
            )
        return edit.replace.encode("utf-8")
    if content is None:
        raise EditNotApplied(
            "missing-file",
            f"{where}: no such file (search text {_first_line(edit.search)})",
            rel,
            i,
            hint="an empty `search` creates a new file",
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EditNotApplied(
            "not-utf8",
            f"{where}: file is not valid UTF-8 (byte 0x{content[e.start]:02x} at offset "
            f"{e.start}); search/replace edits only apply to UTF-8 text",
            rel,
            i,
            hint="send a unified diff to change this file",
        ) from None
    count = _occurrences(text, edit.search)
    if count == 0:
        hint = None
        if "\r\n" in text and "\r\n" not in edit.search and "\n" in edit.search:
            hint = "the file has CRLF line endings; the search text must match them exactly"
        raise EditNotApplied(
            "not-found",
            f"{where}: search text {_first_line(edit.search)} not found",
            rel,
            i,
            hint=hint,
        )
    if count > 1:
        raise EditNotApplied(
            "ambiguous",
            f"{where}: search text {_first_line(edit.search)} occurs {count} times; "
            "it must occur exactly once",
            rel,
            i,
            hint="include more surrounding lines in the search text",
        )
    return text.replace(edit.search, edit.replace, 1).encode("utf-8")


def _occurrences(text: str, search: str) -> int:
    # Overlapping matches count: "aa" occurs twice in "aaa", and either could be meant.
    count, start = 0, text.find(search)
    while start != -1:
        count += 1
        start = text.find(search, start + 1)
    return count


def _write_all(
    root: Path,
    new: dict[str, bytes | None],
    originals: dict[str, tuple[bytes | None, int | None]],
    targets: dict[str, Path],
) -> None:
    """Write every new content; on an OS error put back what was written, then re-raise."""
    written: list[str] = []
    made_dirs: list[Path] = []
    try:
        for rel, data in new.items():
            assert data is not None  # search/replace never deletes a file
            target = targets[rel]
            missing = []
            parent = target.parent
            while parent != root and not parent.exists():
                missing.append(parent)
                parent = parent.parent
            for d in reversed(missing):
                d.mkdir()
                made_dirs.append(d)
            _write_file(target, data, originals[rel][1])
            written.append(rel)
    except BaseException:
        for rel in written:
            old, mode = originals[rel]
            if old is None:
                targets[rel].unlink(missing_ok=True)
            else:
                _write_file(targets[rel], old, mode)
        for d in reversed(made_dirs):
            d.rmdir()
        raise


# --- unified diffs -----------------------------------------------------------------------


def _unquote(s: str) -> tuple[str, str]:
    """Read one C-quoted git path at the start of `s`; return it and what follows."""
    out = bytearray()
    i = 1
    while i < len(s):
        c = s[i]
        if c == '"':
            return out.decode("utf-8", "surrogateescape"), s[i + 1 :]
        if c == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt in "01234567":
                out.append(int(s[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
        out += c.encode("utf-8", "surrogateescape")
        i += 1
    raise EditNotApplied("malformed", f"unterminated quoted path in patch: {s[:80]!r}")


def _header_path(s: str) -> str:
    """The path of a ---/+++/rename line's value: quoted, or up to a tab (diff -u timestamps)."""
    s = s.rstrip("\r")
    if s.startswith('"'):
        return _unquote(s)[0]
    return s.split("\t", 1)[0]


def _git_header_paths(rest: str) -> list[str]:
    """The two paths of a `diff --git a/X b/Y` line."""
    rest = rest.rstrip("\r")
    if rest.startswith('"'):
        first, rest = _unquote(rest)
        rest = rest.lstrip(" ")
        second = _unquote(rest)[0] if rest.startswith('"') else rest
        return [first, second]
    if rest.endswith('"'):
        head, _, tail = rest.rpartition(' "')
        return [head, _unquote('"' + tail)[0]]
    # Unquoted names may hold spaces; git's own rule: the two halves name the same file.
    half = (len(rest) - 1) // 2
    if len(rest) % 2 == 1 and rest[half] == " " and rest[:half][2:] == rest[half + 1 :][2:]:
        return [rest[:half], rest[half + 1 :]]
    first, sep, second = rest.partition(" b/")
    return [first, "b/" + second] if sep else [rest]


def _patch_paths(root: Path, patch: str) -> list[str]:
    """Every worktree path a patch names, checked; EditNotApplied if one is unsafe.

    Header paths carry a one-component prefix (a/, b/) that `git apply -p1` strips; the raw
    path is checked for `..` and absoluteness too, so `--- ../x` is refused outright.
    """
    paths: list[str] = []
    headers = 0
    old_left = new_left = 0

    def add(raw: str, strip: bool, line_no: int) -> None:
        where = f"patch line {line_no}"
        if raw == "/dev/null":
            return
        pure = PurePosixPath(raw)
        if pure.is_absolute() or ".." in pure.parts:
            raise EditNotApplied("bad-path", f"{where}: path {raw!r} leaves the worktree", path=raw)
        rel = "/".join(pure.parts[1:]) if strip and len(pure.parts) > 1 else raw
        paths.append(_check_path(root, rel, where)[0])

    for n, line in enumerate(patch.split("\n"), start=1):
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag in (" ", ""):
                old_left, new_left = old_left - 1, new_left - 1
                continue
            if tag == "-":
                old_left -= 1
                continue
            if tag == "+":
                new_left -= 1
                continue
            if tag == "\\":
                continue
            old_left = new_left = 0  # a short hunk; git will call the patch corrupt
        if m := _HUNK.match(line):
            old_left = int(m.group(1) or "1")
            new_left = int(m.group(2) or "1")
        elif line.startswith("diff --git "):
            headers += 1
            for raw in _git_header_paths(line[len("diff --git ") :]):
                add(raw, True, n)
        elif line.startswith(("--- ", "+++ ")):
            headers += 1
            add(_header_path(line[4:]), True, n)
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            add(_header_path(line.split(" ", 2)[2]), False, n)
        elif (m := _MODE_LINE.match(line) or _INDEX_LINE.match(line)) and (
            m.group(1) in _LINK_MODES and not line.startswith(("deleted", "old"))
        ):
            raise EditNotApplied(
                "bad-path",
                f"patch line {n}: creates a symbolic link or submodule (mode {m.group(1)})",
            )
    if headers == 0:
        raise EditNotApplied(
            "malformed", "not a unified diff: no 'diff --git' or '---'/'+++' file headers"
        )
    return paths


def _git_message(err: GitError) -> str:
    return err.stderr.strip() or str(err)


def apply_unified_diff(worktree: Path, patch: str) -> list[str]:
    """Apply a unified diff with `git apply`, falling back to `git apply --3way`.

    Returns the paths the patch touches (old and new names of a rename), sorted. On failure
    the reason is "does-not-apply" with git's own message, and the worktree is as before.
    """
    root = Path(worktree).resolve()
    if not isinstance(patch, str) or not patch.strip():
        raise EditNotApplied("malformed", "the patch is empty")
    if not patch.endswith("\n"):
        patch += "\n"  # models often drop it; git would call the last line corrupt
    data = patch.encode("utf-8", "surrogateescape")
    paths = set(_patch_paths(root, patch))
    try:
        numstat = git(["apply", "--numstat", "-z"], cwd=root, input=data)
    except GitError as e:
        raise EditNotApplied(
            "malformed", f"git cannot parse the patch: {_git_message(e)}"
        ) from None
    for record in numstat.split(b"\0"):
        if record:
            # git's own reading of the names must pass the same checks as ours.
            name = record.split(b"\t", 2)[-1].decode("utf-8", "surrogateescape")
            paths.add(_check_path(root, name, "patch")[0])
    args = ["apply", "--whitespace=nowarn"]
    try:
        git([*args, "--check"], cwd=root, input=data)
    except GitError as plain:
        _apply_3way(root, data, paths, _git_message(plain))
    else:
        try:
            git(args, cwd=root, input=data)
        except GitError as e:  # git apply writes nothing unless every hunk applies
            raise EditNotApplied("does-not-apply", _git_message(e)) from None
    return sorted(paths)


def _apply_3way(root: Path, data: bytes, paths: set[str], plain_error: str) -> None:
    """Retry with --3way; whatever happens, the index and untouched state are put back.

    --3way writes conflict markers and unmerged index entries when the merge conflicts, and
    stages its result when it succeeds; both are undone from a snapshot taken first.
    """
    index_file = root / git(["rev-parse", "--git-path", "index"], cwd=root).decode().strip()
    index_before = index_file.read_bytes() if index_file.exists() else None
    files_before: dict[str, tuple[bytes | None, int | None]] = {}
    absent_dirs: list[Path] = []
    for rel in paths:
        target = root / rel
        if target.is_file() and not target.is_symlink():
            files_before[rel] = (target.read_bytes(), target.stat().st_mode)
        else:
            files_before[rel] = (None, None)
            parent = target.parent
            while parent != root and not parent.exists():
                absent_dirs.append(parent)
                parent = parent.parent
    try:
        git(["apply", "--3way", "--whitespace=nowarn"], cwd=root, input=data)
        error = None
    except GitError as e:
        error = _git_message(e)
    if error is not None:
        for rel, (old, mode) in files_before.items():
            target = root / rel
            if old is not None:
                _write_file(target, old, mode)
            elif target.is_file() or target.is_symlink():
                target.unlink()
        for d in sorted(set(absent_dirs), key=lambda p: len(p.parts), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    _restore_index(root, index_file, index_before)
    if error is not None:
        message = plain_error
        if error != plain_error:
            message += f"\n3-way merge: {error}"
        raise EditNotApplied("does-not-apply", f"patch does not apply: {message}")


def _restore_index(root: Path, index_file: Path, before: bytes | None) -> None:
    if before is None:
        index_file.unlink(missing_ok=True)
    else:
        _write_file(index_file, before, index_file.stat().st_mode if index_file.exists() else None)
    # The snapshot held no unmerged entries; should any remain, reset the index to the commit.
    if git(["ls-files", "-u", "-z"], cwd=root):
        git(["reset", "-q"], cwd=root)


# --- loading and dispatch ----------------------------------------------------------------


def load_edits(path: Path) -> tuple[str, object]:
    """Read a --patch FILE: JSON search/replace edits, or else a unified diff.

    JSON is a list of {"path", "search", "replace"} objects or {"edits": [...]}, and gives
    ("search_replace", [SearchReplace, ...]); anything else is a diff and gives ("diff", text).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise EditNotApplied("malformed", f"cannot read {path}: {e.strerror or e}") from None
    # surrogateescape keeps a diff of a non-UTF-8 file byte-exact through to git apply.
    text = raw.decode("utf-8", "surrogateescape")
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise EditNotApplied("malformed", f"{path} is empty")
    if stripped[0] in "[{":
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EditNotApplied("malformed", f"{path} looks like JSON but is not: {e}") from None
        if isinstance(data, dict):
            if set(data) != {"edits"}:
                raise EditNotApplied(
                    "malformed", f'{path}: a JSON object must hold only "edits", not {sorted(data)}'
                )
            data = data["edits"]
        return "search_replace", parse_search_replace(data)
    return "diff", text


def apply_edits(worktree: Path, kind: str, payload: object) -> list[str]:
    """Apply what `load_edits` returned; `payload` may also be raw JSON-like edit data."""
    if kind == "search_replace":
        if isinstance(payload, Sequence) and all(isinstance(e, SearchReplace) for e in payload):
            return apply_search_replace(worktree, payload)
        return apply_search_replace(worktree, parse_search_replace(payload))
    if kind == "diff":
        if not isinstance(payload, str):
            raise EditNotApplied("malformed", f"a diff must be text, not {type(payload).__name__}")
        return apply_unified_diff(worktree, payload)
    raise EditNotApplied("malformed", f"unknown edit kind {kind!r}; use 'search_replace' or 'diff'")


def diff_of(worktree: Path) -> str:
    """The worktree's changes against its commit as a git diff, new untracked files included.

    New files are marked intent-to-add so `git diff` shows them, then unmarked, leaving the
    index as it was.
    """
    root = Path(worktree).resolve()
    # Literal pathspecs: a file named "*.py" must not match every Python file.
    untracked = git(
        ["--literal-pathspecs", "ls-files", "-z", "--others", "--exclude-standard"], cwd=root
    )
    names = b"\0".join(n for n in untracked.split(b"\0") if n)
    spec = ["--pathspec-from-file=-", "--pathspec-file-nul"]
    if names:
        git(["--literal-pathspecs", "add", "--intent-to-add", *spec], cwd=root, input=names)
    try:
        out = git(
            [
                "diff",
                "HEAD",
                "--binary",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--src-prefix=a/",
                "--dst-prefix=b/",
            ],
            cwd=root,
        )
    finally:
        if names:
            git(["--literal-pathspecs", "reset", "-q", *spec], cwd=root, input=names)
    return out.decode("utf-8", "surrogateescape")
