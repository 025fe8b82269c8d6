"""Search/replace edits and unified diffs on real git worktrees: each failure has the right
reason, and a failed edit leaves the worktree exactly as it was."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from appliance.harness.edits import (
    EditNotApplied,
    SearchReplace,
    apply_edits,
    apply_search_replace,
    apply_unified_diff,
    diff_of,
    load_edits,
    parse_search_replace,
)
from appliance.packages.gitsafe import GitError, git

CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
TWENTY = "".join(f"line {i}\n" for i in range(1, 21))


def make_worktree(path: Path, files: dict[str, str | bytes]) -> Path:
    """A git repository at `path` with `files` committed as its one commit."""
    path.mkdir(parents=True)
    git(["init", "-q"], cwd=path)
    for rel, content in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_bytes(content.encode())
    git(["add", "-A"], cwd=path)
    git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base"], cwd=path)
    return path


def status(wt: Path) -> str:
    return git(["status", "--porcelain", "--untracked-files=all"], cwd=wt).decode()


def snapshot(wt: Path) -> dict[str, bytes]:
    """Every file under the worktree except .git, by path."""
    return {
        p.relative_to(wt).as_posix(): p.read_bytes()
        for p in sorted(wt.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(wt).parts
    }


@pytest.fixture
def wt(tmp_path: Path) -> Path:
    return make_worktree(
        tmp_path / "wt",
        {"src/calc.py": CALC, "README.md": "# calc\n", "data/twenty.txt": TWENTY},
    )


def fails(wt: Path, edits: list[SearchReplace], reason: str) -> EditNotApplied:
    """Apply edits that must fail with `reason`; check nothing in the worktree moved."""
    before = snapshot(wt)
    with pytest.raises(EditNotApplied) as info:
        apply_search_replace(wt, edits)
    assert info.value.reason == reason, str(info.value)
    assert snapshot(wt) == before
    assert status(wt) == ""
    return info.value


# --- search/replace ----------------------------------------------------------------------


def test_search_replace_applies_in_order(wt):
    edits = [
        SearchReplace("src/calc.py", "return a + b", "return a + b  # sum"),
        SearchReplace("src/calc.py", "# sum", "# the sum"),  # sees the edit before it
        SearchReplace("README.md", "# calc\n", "# calc\n\nAdds and subtracts.\n"),
    ]
    assert apply_search_replace(wt, edits) == ["README.md", "src/calc.py"]
    assert (wt / "src/calc.py").read_text() == CALC.replace("a + b", "a + b  # the sum")
    assert (wt / "README.md").read_text() == "# calc\n\nAdds and subtracts.\n"


def test_search_replace_deletes_text_and_skips_no_op(wt):
    edits = [
        SearchReplace("src/calc.py", "\n\ndef sub(a, b):\n    return a - b\n", ""),
        SearchReplace("README.md", "# calc", "# calc"),
    ]
    assert apply_search_replace(wt, edits) == ["src/calc.py"]
    assert (wt / "src/calc.py").read_text() == "def add(a, b):\n    return a + b\n"


def test_search_replace_keeps_bytes_and_mode(tmp_path):
    script = b"#!/bin/sh\r\necho one\r\necho two\r\n"
    wt = make_worktree(tmp_path / "wt", {"run.sh": script})
    (wt / "run.sh").chmod(0o755)
    git(["add", "-A"], cwd=wt)
    git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x"], cwd=wt)
    apply_search_replace(wt, [SearchReplace("run.sh", "echo one\r\n", "echo uno\r\n")])
    assert (wt / "run.sh").read_bytes() == b"#!/bin/sh\r\necho uno\r\necho two\r\n"
    assert stat.S_IMODE((wt / "run.sh").stat().st_mode) == 0o755


def test_not_found_names_edit_path_and_search_line(wt):
    edits = [
        SearchReplace("README.md", "# calc", "# Calc"),
        SearchReplace("src/calc.py", "def mul(a, b):\n    return a * b\n", ""),
    ]
    err = fails(wt, edits, "not-found")
    assert err.path == "src/calc.py"
    assert err.index == 1
    assert "edit 2 of 2" in err.message
    assert "src/calc.py" in err.message
    assert "'def mul(a, b):'" in err.message


def test_not_found_hints_at_crlf(tmp_path):
    wt = make_worktree(tmp_path / "wt", {"a.txt": b"one\r\ntwo\r\n"})
    err = fails(wt, [SearchReplace("a.txt", "one\ntwo", "x")], "not-found")
    assert "CRLF" in (err.hint or "")


def test_ambiguous_gives_count(wt):
    err = fails(wt, [SearchReplace("src/calc.py", "(a, b):", "(x, y):")], "ambiguous")
    assert "occurs 2 times" in err.message
    assert err.path == "src/calc.py"


def test_ambiguous_counts_overlapping_matches(tmp_path):
    wt = make_worktree(tmp_path / "wt", {"a.txt": "aaa\n"})
    err = fails(wt, [SearchReplace("a.txt", "aa", "b")], "ambiguous")
    assert "occurs 2 times" in err.message


def test_missing_file(wt):
    err = fails(wt, [SearchReplace("src/nope.py", "x = 1", "x = 2")], "missing-file")
    assert err.path == "src/nope.py"
    assert "'x = 1'" in err.message


def test_empty_search_creates_file(wt):
    edits = [
        SearchReplace("src/pkg/new.py", "", "VALUE = 1\n"),
        SearchReplace("src/pkg/new.py", "VALUE = 1", "VALUE = 2"),  # a new file can be edited
        SearchReplace("empty.txt", "", ""),
    ]
    assert apply_search_replace(wt, edits) == ["empty.txt", "src/pkg/new.py"]
    assert (wt / "src/pkg/new.py").read_text() == "VALUE = 2\n"
    assert (wt / "empty.txt").read_bytes() == b""
    assert stat.S_IMODE((wt / "src/pkg/new.py").stat().st_mode) == 0o644


@pytest.mark.parametrize("rel", ["README.md", "src", "empty.txt"])
def test_empty_search_on_existing_path_is_file_exists(tmp_path, rel):
    wt = make_worktree(tmp_path / "wt", {"README.md": "x\n", "src/a.py": "", "empty.txt": ""})
    err = fails(wt, [SearchReplace(rel, "", "new\n")], "file-exists")
    assert err.path == rel


@pytest.mark.parametrize(
    "rel",
    ["../x", "/etc/passwd", ".git/config", "src/../../x", "", "sub/.GIT/hooks/pre-commit", "a\0b"],
)
def test_bad_paths(wt, rel):
    for search in ("", "x"):
        err = fails(wt, [SearchReplace(rel, search, "owned\n")], "bad-path")
        assert err.index == 0
    assert not (wt.parent / "x").exists()


def test_refuses_writing_through_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    wt = make_worktree(tmp_path / "wt", {"a.txt": "a\n"})
    (wt / "linkdir").symlink_to(outside, target_is_directory=True)
    (wt / "link.txt").symlink_to(outside / "secret.txt")
    for edit in (
        SearchReplace("linkdir/secret.txt", "secret", "owned"),
        SearchReplace("linkdir/new.txt", "", "owned"),
        SearchReplace("link.txt", "secret", "owned"),
    ):
        before = snapshot(wt)
        with pytest.raises(EditNotApplied) as info:
            apply_search_replace(wt, [edit])
        assert info.value.reason == "bad-path"
        assert "symbolic link" in info.value.message
        assert snapshot(wt) == before
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "secret\n"


def test_not_utf8(tmp_path):
    wt = make_worktree(tmp_path / "wt", {"latin1.txt": "café\n".encode("latin-1")})
    err = fails(wt, [SearchReplace("latin1.txt", "caf", "cof")], "not-utf8")
    assert "0xe9" in err.message
    assert err.path == "latin1.txt"


def test_all_or_nothing(wt):
    edits = [
        SearchReplace("README.md", "# calc", "# CHANGED"),
        SearchReplace("src/brand_new.py", "", "x = 1\n"),
        SearchReplace("src/calc.py", "no such text", "y"),
    ]
    err = fails(wt, edits, "not-found")
    assert err.index == 2
    assert (wt / "README.md").read_text() == "# calc\n"
    assert not (wt / "src/brand_new.py").exists()


def test_parse_search_replace():
    data = [{"path": "a.py", "search": "x", "replace": "y"}]
    assert parse_search_replace(data) == [SearchReplace("a.py", "x", "y")]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"path": "a.py"}, "must be a list"),
        ([], "empty"),
        (["a.py"], "must be an object"),
        ([{"path": "a.py", "search": "x", "replace": "y", "mode": 1}], "unknown keys ['mode']"),
        ([{"path": "a.py", "search": "x"}], "lacks keys ['replace']"),
        ([{"path": "a.py", "search": 3, "replace": "y"}], "'search' must be a string"),
        ([{"path": "a.py", "search": "\ud800", "replace": "y"}], "'search' must be a string"),
    ],
)
def test_parse_search_replace_is_strict(data, words):
    with pytest.raises(EditNotApplied) as info:
        parse_search_replace(data)
    assert info.value.reason == "malformed"
    assert words in info.value.message


# --- unified diffs -----------------------------------------------------------------------


def changed_copy(tmp_path: Path, files: dict[str, str], change) -> str:
    """`git diff` (new files included) after `change` runs on a fresh repo holding `files`."""
    other = make_worktree(tmp_path / "other", files)
    change(other)
    return diff_of(other)


def test_unified_diff_applies(wt, tmp_path):
    files = snapshot(wt)

    def change(repo: Path) -> None:
        (repo / "src/calc.py").write_text(CALC.replace("a - b", "a - b  # difference"))
        (repo / "README.md").unlink()
        (repo / "docs").mkdir()
        (repo / "docs/usage.md").write_text("Use it.\n")

    patch = changed_copy(tmp_path, {k: v.decode() for k, v in files.items()}, change)
    assert apply_unified_diff(wt, patch) == ["README.md", "docs/usage.md", "src/calc.py"]
    assert (wt / "src/calc.py").read_text() == CALC.replace("a - b", "a - b  # difference")
    assert not (wt / "README.md").exists()
    assert (wt / "docs/usage.md").read_text() == "Use it.\n"
    # The index is left alone: new files are untracked, changes unstaged.
    assert status(wt) == " D README.md\n M src/calc.py\n?? docs/usage.md\n"


def test_plain_diff_u_with_prefixes_and_no_final_newline(wt):
    patch = (
        "--- a/src/calc.py\t2024-01-01 00:00:00.000000000 +0000\n"
        "+++ b/src/calc.py\t2024-01-01 00:00:01.000000000 +0000\n"
        "@@ -1,3 +1,3 @@\n"
        " def add(a, b):\n"
        "-    return a + b\n"
        "+    return b + a\n"
        " "  # the last context line (a blank one) without the newline models tend to drop
    )
    assert apply_unified_diff(wt, patch) == ["src/calc.py"]
    assert (wt / "src/calc.py").read_text() == CALC.replace("a + b", "b + a")


def test_removed_line_starting_with_dashes_is_not_a_header(tmp_path):
    # Removing "-- note" gives a hunk line "--- note", which must not be read as a file header.
    wt = make_worktree(tmp_path / "wt", {"q.sql": "select 1;\n-- ../../etc/passwd\nselect 2;\n"})
    patch = (
        "diff --git a/q.sql b/q.sql\n--- a/q.sql\n+++ b/q.sql\n"
        "@@ -1,3 +1,2 @@\n select 1;\n--- ../../etc/passwd\n select 2;\n"
    )
    assert apply_unified_diff(wt, patch) == ["q.sql"]
    assert (wt / "q.sql").read_text() == "select 1;\nselect 2;\n"


def three_way_case(tmp_path: Path, current: str) -> tuple[Path, str]:
    """A worktree holding `current` and a patch made against TWENTY that changes line 10.

    The worktree's commit is not the patch's base, so plain `git apply` fails on context;
    --3way needs the base blob, which a one-commit worktree does not hold, so it is written
    into the object store (as when the worktree's repository came from a fuller history).
    """
    patch = changed_copy(
        tmp_path,
        {"f.txt": TWENTY},
        lambda repo: (repo / "f.txt").write_text(TWENTY.replace("line 10\n", "line ten\n")),
    )
    wt = make_worktree(tmp_path / "wt3", {"f.txt": current})
    git(["hash-object", "-w", "--stdin"], cwd=wt, input=TWENTY.encode())
    with pytest.raises(GitError):
        git(["apply", "--check"], cwd=wt, input=patch.encode())
    return wt, patch


def test_diff_applies_only_with_3way(tmp_path):
    # Line 13 lies in the patch's context but does not touch line 10: the merge is clean.
    current = TWENTY.replace("line 13\n", "line thirteen\n")
    wt, patch = three_way_case(tmp_path, current)
    assert apply_unified_diff(wt, patch) == ["f.txt"]
    assert (wt / "f.txt").read_text() == current.replace("line 10\n", "line ten\n")
    # --3way stages its result; the index is put back so the change is merely unstaged.
    assert status(wt) == " M f.txt\n"


def test_3way_conflict_leaves_no_trace(tmp_path):
    current = TWENTY.replace("line 10\n", "line TEN\n")
    wt, patch = three_way_case(tmp_path, current)
    index_before = (wt / ".git/index").read_bytes()
    with pytest.raises(EditNotApplied) as info:
        apply_unified_diff(wt, patch)
    assert info.value.reason == "does-not-apply"
    assert "patch does not apply" in info.value.message
    assert "with conflicts" in info.value.message
    assert (wt / "f.txt").read_text() == current
    assert git(["ls-files", "-u"], cwd=wt) == b""
    assert (wt / ".git/index").read_bytes() == index_before
    assert status(wt) == ""


def test_diff_that_does_not_apply(wt):
    patch = (
        "diff --git a/src/calc.py b/src/calc.py\n--- a/src/calc.py\n+++ b/src/calc.py\n"
        "@@ -1,2 +1,2 @@\n def mul(a, b):\n-    return a * b\n+    return b * a\n"
        "diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n"
        "@@ -0,0 +1 @@\n+new\n"
    )
    before = snapshot(wt)
    with pytest.raises(EditNotApplied) as info:
        apply_unified_diff(wt, patch)
    assert info.value.reason == "does-not-apply"
    assert "error: patch failed: src/calc.py:1" in info.value.message
    assert "src/calc.py: patch does not apply" in info.value.message
    assert snapshot(wt) == before
    assert status(wt) == ""


@pytest.mark.parametrize(
    "patch",
    [
        "",
        "just some words\nnot a diff\n",
        "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\nbad\n",
    ],
)
def test_malformed_diff(wt, patch):
    with pytest.raises(EditNotApplied) as info:
        apply_unified_diff(wt, patch)
    assert info.value.reason == "malformed"
    assert status(wt) == ""


@pytest.mark.parametrize(
    "target",
    [".git/config", ".git/hooks/post-checkout", "../outside.txt", "src/../../outside.txt"],
)
def test_diff_outside_worktree_or_into_git(wt, target):
    patch = (
        f"diff --git a/{target} b/{target}\nnew file mode 100644\n--- /dev/null\n+++ b/{target}\n"
        "@@ -0,0 +1 @@\n+owned\n"
    )
    config = (wt / ".git/config").read_bytes()
    with pytest.raises(EditNotApplied) as info:
        apply_unified_diff(wt, patch)
    assert info.value.reason == "bad-path"
    assert (wt / ".git/config").read_bytes() == config
    assert not (wt / ".git/hooks/post-checkout").exists()
    assert not (wt.parent / "outside.txt").exists()


def test_traditional_diff_with_absolute_path_is_refused(wt):
    patch = "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-root\n+owned\n"
    with pytest.raises(EditNotApplied) as info:
        apply_unified_diff(wt, patch)
    assert info.value.reason == "bad-path"


def test_diff_creating_a_symlink_is_refused(wt):
    patch = (
        "diff --git a/evil b/evil\nnew file mode 120000\n--- /dev/null\n+++ b/evil\n"
        "@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n"
    )
    with pytest.raises(EditNotApplied) as info:
        apply_unified_diff(wt, patch)
    assert info.value.reason == "bad-path"
    assert not (wt / "evil").is_symlink()


def test_diff_through_existing_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    wt = make_worktree(tmp_path / "wt", {"a.txt": "a\n"})
    (wt / "out").symlink_to(outside, target_is_directory=True)
    patch = "--- /dev/null\n+++ b/out/x.txt\n@@ -0,0 +1 @@\n+owned\n"
    with pytest.raises(EditNotApplied) as info:
        apply_unified_diff(wt, patch)
    assert info.value.reason == "bad-path"
    assert list(outside.iterdir()) == []


# --- loading, dispatch and recording -----------------------------------------------------


def test_load_edits_json_list_and_object(tmp_path, wt):
    edits = [{"path": "README.md", "search": "# calc", "replace": "# Calc"}]
    as_list = tmp_path / "edits.json"
    as_list.write_text(json.dumps(edits))
    as_object = tmp_path / "edits-object.json"
    as_object.write_text(json.dumps({"edits": edits}))
    expected = ("search_replace", [SearchReplace("README.md", "# calc", "# Calc")])
    assert load_edits(as_list) == expected
    assert load_edits(as_object) == expected
    assert apply_edits(wt, *load_edits(as_list)) == ["README.md"]
    assert (wt / "README.md").read_text() == "# Calc\n"


def test_load_edits_diff(tmp_path, wt):
    patch = "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# calc\n+# Calc\n"
    path = tmp_path / "change.patch"
    path.write_text(patch)
    assert load_edits(path) == ("diff", patch)
    assert apply_edits(wt, *load_edits(path)) == ["README.md"]
    assert (wt / "README.md").read_text() == "# Calc\n"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read"),
        (b"", "is empty"),
        (b" \n\n", "is empty"),
        (b'[{"path": ', "looks like JSON"),
        (b'{"edits": [], "extra": 1}', 'only "edits"'),
        (b'{"edits": [{"path": "a"}]}', "lacks keys"),
    ],
)
def test_load_edits_rejects(tmp_path, content, words):
    path = tmp_path / "patch"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EditNotApplied) as info:
        load_edits(path)
    assert info.value.reason == "malformed"
    assert words in info.value.message


def test_apply_edits_dispatch(wt):
    raw = [{"path": "README.md", "search": "calc", "replace": "calculator"}]
    assert apply_edits(wt, "search_replace", raw) == ["README.md"]
    with pytest.raises(EditNotApplied) as info:
        apply_edits(wt, "sed", "s/a/b/")
    assert info.value.reason == "malformed"


def test_diff_of_shows_changes_and_new_files_and_round_trips(wt, tmp_path):
    pristine = snapshot(wt)
    assert diff_of(wt) == ""
    apply_search_replace(
        wt,
        [
            SearchReplace("src/calc.py", "return a + b", "return a + b + 0"),
            SearchReplace("src/new_module.py", "", "X = 1\n"),
            SearchReplace("odd name*.txt", "", "glob characters\n"),
        ],
    )
    (wt / "bin.dat").write_bytes(b"\0\1\2\xff")
    recorded = diff_of(wt)
    assert "+    return a + b + 0" in recorded
    assert "diff --git a/src/new_module.py b/src/new_module.py\nnew file mode 100644" in recorded
    assert "+X = 1" in recorded
    assert "GIT binary patch" in recorded
    # Recording leaves the index alone: new files are still untracked.
    assert "?? src/new_module.py\n" in status(wt)
    assert "A " not in status(wt)

    fresh = make_worktree(tmp_path / "fresh", dict(pristine))
    apply_unified_diff(fresh, recorded)
    assert snapshot(fresh) == snapshot(wt)
