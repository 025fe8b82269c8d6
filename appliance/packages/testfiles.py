"""What counts as a file of a repository's test suite: one definition for mining (does a
commit change tests?), validation and grading (which files the commit's tests are).

Anything under a test/tests/testing folder — test modules and the data they read — and,
elsewhere, Python files named like test modules or conftest.py.
"""

from __future__ import annotations

from pathlib import PurePosixPath

TEST_DIRS = frozenset({"test", "tests", "testing"})


def is_test_path(path: str) -> bool:
    """Whether `path` (a repository path with / separators) belongs to the test suite."""
    p = PurePosixPath(path)
    if any(part in TEST_DIRS for part in p.parts[:-1]):
        return True
    name = p.name
    return p.suffix == ".py" and (
        name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"
    )
