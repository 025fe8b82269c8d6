"""Build the git history of Forge's demo repository ("metrica") deterministically.

The history itself is data, in history.py next to this file; this module replays it
with fixed authors, dates and git settings, isolated from any user or system git
configuration, so that every build gives the same commit shas.

    python make_demo_repo.py DEST    # builds DEST, prints the HEAD sha

Also used by Forge: make_demo_repo(), commit_shas(), task_commits_with_tests() and the
constants HISTORY, TASK_COMMITS, TASK_COMMITS_WITH_TESTS and FILTERED_COMMITS.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _load_history():
    name = "forge_demo_history"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("history.py"))
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up in sys.modules while the class bodies run.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


history = _load_history()

HISTORY = history.HISTORY
# Subjects (first message lines) of the commits Forge's miner should keep as tasks.
TASK_COMMITS = tuple(c.subject for c in HISTORY if c.kind in history.TASK_KINDS)
# The tasks whose added or changed tests fail at the parent and pass at the commit.
TASK_COMMITS_WITH_TESTS = tuple(c.subject for c in HISTORY if c.kind == "task")
# Subject -> the filter that must drop the commit (see history.FILTER_KINDS).
FILTERED_COMMITS = {c.subject: c.kind for c in HISTORY if c.kind in history.FILTER_KINDS}

START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)

_GIT_SETTINGS = (
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", "core.autocrlf=false",
    "-c", "core.fsmonitor=false",
    "-c", "init.templateDir=",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)  # fmt: skip


def commit_time(index: int) -> datetime:
    """Author and commit date of the ``index``-th step: three a day, in working hours."""
    return START + timedelta(days=index // 3, hours=3 * (index % 3), minutes=17 * index % 60)


def git_env(author: history.Author | None = None, when: datetime | None = None) -> dict:
    """Environment for git that ignores user and system configuration."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_MERGE_AUTOEDIT="no",
        LC_ALL="C",
        TZ="UTC",
    )
    if author is not None and when is not None:
        stamp = when.isoformat()
        env.update(
            GIT_AUTHOR_NAME=author.name,
            GIT_AUTHOR_EMAIL=author.email,
            GIT_AUTHOR_DATE=stamp,
            GIT_COMMITTER_NAME=author.name,
            GIT_COMMITTER_EMAIL=author.email,
            GIT_COMMITTER_DATE=stamp,
        )
    return env


def git(repo: Path, *args: str, env: dict | None = None, stdin: str | None = None) -> str:
    """Run git in ``repo`` with the isolated settings; return its stdout."""
    result = subprocess.run(
        ["git", *_GIT_SETTINGS, "-C", str(repo), *args],
        input=stdin,
        capture_output=True,
        encoding="utf-8",
        env=env or git_env(),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _apply(repo: Path, change: history.Change) -> None:
    path = repo / change.path
    if isinstance(change, history.Write):
        text = change.content
    else:
        text = path.read_text(encoding="utf-8")
        if isinstance(change, history.Append):
            text = text.rstrip("\n") + "\n\n\n" + change.block.strip("\n") + "\n"
        else:
            count = text.count(change.old)
            if count != 1:
                raise ValueError(f"{change.path}: snippet found {count} times: {change.old!r}")
            text = text.replace(change.old, change.new)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    path.chmod(0o644)


def _commit(repo: Path, commit: history.Commit, env: dict) -> None:
    for change in commit.changes:
        _apply(repo, change)
    git(repo, "add", "--all", env=env)
    if not git(repo, "status", "--porcelain", env=env).strip():
        raise ValueError(f"commit changes nothing: {commit.subject}")
    git(repo, "commit", "--quiet", "--no-verify", "--file=-", env=env, stdin=commit.message)


def make_demo_repo(dest: Path) -> str:
    """Create the demo repository at ``dest`` (absent or empty); return the HEAD sha."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    git(dest, "init", "--quiet", "--initial-branch=main")
    branch = "main"
    for index, step in enumerate(HISTORY):
        env = git_env(step.author, commit_time(index))
        if isinstance(step, history.Merge):
            git(dest, "checkout", "--quiet", "main", env=env)
            git(dest, "merge", "--quiet", "--no-ff", "--no-verify", "-m", step.message,
                step.branch, env=env)  # fmt: skip
            git(dest, "branch", "--quiet", "--delete", step.branch, env=env)
            branch = "main"
            continue
        if step.branch != branch:
            git(dest, "checkout", "--quiet", "-b", step.branch, env=env)
            branch = step.branch
        _commit(dest, step, env)
    if branch != "main":
        raise ValueError(f"history ends on branch {branch!r}, not main")
    return git(dest, "rev-parse", "HEAD").strip()


def commit_shas(repo: Path) -> dict[str, str]:
    """Map the subject of every commit in HISTORY to its sha in ``repo``."""
    shas = {}
    for line in git(repo, "log", "--format=%H %s", "HEAD").splitlines():
        sha, _, subject = line.partition(" ")
        shas[subject] = sha
    missing = [c.subject for c in HISTORY if c.subject not in shas]
    if missing:
        raise ValueError(f"{repo} lacks commits: {missing}")
    return {c.subject: shas[c.subject] for c in HISTORY}


def task_commits_with_tests(repo: Path) -> list[str]:
    """Shas, oldest first, of the task commits whose new tests fail at their parent."""
    shas = commit_shas(repo)
    return [shas[subject] for subject in TASK_COMMITS_WITH_TESTS]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DEST", file=sys.stderr)
        return 2
    print(make_demo_repo(Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
