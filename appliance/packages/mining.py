"""Which commits of a repository make good tasks: the filters of `forge package build`.

A commit is kept when it is not a merge, not from a bot, has a message of at least
three words starting with an imperative verb (and not a wip/bump/release message; after a
conventional-commit prefix such as `feat:` or a scope such as `hooks:`, the verb that
follows counts, and feat/fix/perf/refactor count as verbs themselves),
changes 1–5 files and fewer than 200 lines, touches Python, and is not only
documentation or CI. Each commit is judged by the first filter it fails.

By default a commit must also change both code and tests: a task needs a test that fails
before the change and passes after it (R2E-Gym and SWE-smith select the same way).
`any_commit` keeps commits that change only one of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.packages.testfiles import is_test_path

MAX_FILES = 5
MAX_LINES = 200  # changed lines (added + deleted) must be fewer than this
FILTERS = (
    "root",
    "merge",
    "bot",
    "message",
    "docs-or-ci-only",
    "no-python",
    "too-many-files",
    "too-many-lines",
    "no-test-change",
    "tests-only",
)
BOT = re.compile(
    r"(\[bot\]|dependabot|renovate|pre-commit-ci|github-actions|greenkeeper"
    r"|snyk-bot|mergify|codecov|allcontributors)",
    re.IGNORECASE,
)
NOT_A_TASK = {
    "wip",
    "misc",
    "update",
    "updates",
    "updated",
    "bump",
    "bumped",
    "release",
    "released",
    "version",
    "merge",
    "revert",
    "fixup!",
    "squash!",
}
IMPERATIVE = set(
    [
        "accept",
        "add",
        "adjust",
        "allow",
        "apply",
        "avoid",
        "bound",
        "build",
        "bump",
        "cache",
        "call",
        "cap",
        "change",
        "check",
        "clarify",
        "clean",
        "cleanup",
        "clear",
        "compare",
        "count",
        "cover",
        "describe",
        "document",
        "explain",
        "fetch",
        "list",
        "lower",
        "mention",
        "query",
        "send",
        "close",
        "collect",
        "combine",
        "compute",
        "configure",
        "convert",
        "copy",
        "correct",
        "create",
        "deduplicate",
        "default",
        "define",
        "delete",
        "decode",
        "deprecate",
        "detect",
        "disable",
        "drop",
        "emit",
        "enable",
        "enforce",
        "ensure",
        "escape",
        "exclude",
        "expand",
        "expose",
        "extend",
        "extract",
        "fix",
        "flatten",
        "forbid",
        "format",
        "generalize",
        "guard",
        "handle",
        "hide",
        "ignore",
        "implement",
        "import",
        "improve",
        "include",
        "increase",
        "infer",
        "inline",
        "introduce",
        "keep",
        "limit",
        "load",
        "log",
        "make",
        "mark",
        "merge",
        "migrate",
        "move",
        "normalize",
        "optimize",
        "override",
        "parse",
        "pass",
        "permit",
        "port",
        "preserve",
        "prevent",
        "print",
        "propagate",
        "protect",
        "raise",
        "read",
        "record",
        "reduce",
        "refactor",
        "register",
        "reject",
        "remove",
        "rename",
        "reorder",
        "replace",
        "report",
        "require",
        "reset",
        "resolve",
        "respect",
        "restore",
        "restrict",
        "retry",
        "return",
        "reuse",
        "rewrite",
        "run",
        "sanitize",
        "save",
        "scope",
        "separate",
        "serialize",
        "set",
        "share",
        "show",
        "simplify",
        "skip",
        "sort",
        "speed",
        "split",
        "store",
        "strip",
        "support",
        "switch",
        "test",
        "throw",
        "tidy",
        "tolerate",
        "track",
        "translate",
        "treat",
        "trim",
        "truncate",
        "tweak",
        "undo",
        "unify",
        "unwrap",
        "upgrade",
        "use",
        "validate",
        "verify",
        "warn",
        "wrap",
        "write",
        # verbs of real fixes the first survey met (six, pluggy, tomli, tomlkit)
        "alias",
        "bind",
        "catch",
        "coerce",
        "do",
        "encode",
        "forward",
        "give",
        "honor",
        "instantiate",
        "prefer",
        "put",
        "refine",
        "relax",
        "render",
        "rework",
    ]
)
DOC_SUFFIXES = (".md", ".rst", ".txt", ".adoc")
DOC_NAMES = {
    "readme",
    "changelog",
    "changes",
    "history",
    "license",
    "licence",
    "authors",
    "contributing",
    "news",
    "notice",
    "copying",
}
CI_PREFIXES = (".github/", ".gitlab/", ".circleci/", ".azure-pipelines/", ".buildkite/")
CI_NAMES = {
    ".gitlab-ci.yml",
    ".travis.yml",
    "appveyor.yml",
    "azure-pipelines.yml",
    ".pre-commit-config.yaml",
    "tox.ini",
    "noxfile.py",
    "Jenkinsfile",
    "codecov.yml",
    ".readthedocs.yml",
    ".readthedocs.yaml",
}


@dataclass(frozen=True)
class CandidateCommit:
    sha: str
    parents: tuple[str, ...]
    author: str  # "Name <email>"
    message: str
    files: tuple[tuple[str, int, int], ...]  # (path, added, deleted)
    date: str = ""  # author date, ISO 8601


def _is_doc(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    stem = name.split(".", 1)[0]
    return (
        path.startswith(("docs/", "doc/"))
        or stem in DOC_NAMES
        or (name.endswith(DOC_SUFFIXES) and not name.startswith("requirements"))
    )


def _is_ci(path: str) -> bool:
    return path.startswith(CI_PREFIXES) or path.rsplit("/", 1)[-1] in CI_NAMES


# A conventional-commit type or a scope before the subject: "feat: ", "fix(parser)!: ",
# "hooks: ", "NEW: ". The verb after it is what is judged.
PREFIX = re.compile(r"^[A-Za-z][\w.-]*(\([^)]*\))?!?:\s+")
PREFIX_TYPES = {"feat", "fix", "perf", "refactor"}  # types that name a code change


def message_ok(message: str) -> bool:
    words = message.strip().splitlines()[0].split() if message.strip() else []
    if len(words) < 3:
        return False
    first = words[0].lower().rstrip(":,.")
    prefix = PREFIX.match(words[0] + " ")
    if prefix and first.split("(")[0].rstrip("!") in NOT_A_TASK:
        return False  # "release: 2.0", "revert: ..."
    if prefix and first.split("(")[0].rstrip("!") in PREFIX_TYPES:
        return True
    if prefix:
        first = words[1].lower().rstrip(":,.")
    return first not in NOT_A_TASK and first in IMPERATIVE


def reject_reason(commit: CandidateCommit, *, any_commit: bool = False) -> str | None:
    """The first filter `commit` fails, or None when it makes a task."""
    if not commit.parents:
        return "root"
    if len(commit.parents) > 1:
        return "merge"
    if BOT.search(commit.author):
        return "bot"
    if not message_ok(commit.message):
        return "message"
    paths = [f[0] for f in commit.files]
    if paths and all(_is_doc(p) or _is_ci(p) for p in paths):
        return "docs-or-ci-only"
    if not any(p.endswith(".py") for p in paths):
        return "no-python"
    if not 1 <= len(paths) <= MAX_FILES:
        return "too-many-files"
    if sum(a + d for _, a, d in commit.files) >= MAX_LINES:
        return "too-many-lines"
    if not any_commit:
        code = [p for p in paths if p.endswith(".py") and not is_test_path(p) and not _is_doc(p)]
        tests = [p for p in paths if is_test_path(p)]
        if not tests:
            return "no-test-change"
        if not code:
            return "tests-only"
    return None


def filter_commits(
    commits: Sequence[CandidateCommit], *, any_commit: bool = False
) -> tuple[list[CandidateCommit], dict[str, int]]:
    """Split `commits` into kept ones and a count of removals per filter."""
    kept, removed = [], dict.fromkeys(FILTERS, 0)
    for commit in commits:
        reason = reject_reason(commit, any_commit=any_commit)
        if reason is None:
            kept.append(commit)
        else:
            removed[reason] += 1
    return kept, removed
