"""A teacher run's state in its output folder: every sample done so far, with each stage's
prompt and answer and the harness's verdict, in `teacher-state.json`.

It is rewritten whole after each sample (a temporary file, fsync, rename), so a run
killed at any moment leaves the state of the samples it had finished, and a run started
again skips them. The data package is made from this file alone. No secret is in it:
the endpoint is kept without user:password, and the API key is never given to it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from appliance.errors import UsageError

STATE_NAME = "teacher-state.json"
STATE_VERSION = 1


def sample_key(sha: str, sample: int) -> str:
    return f"{sha}/{sample}"


class RunState:
    """The run's identity (what a resumed run must match) and its samples."""

    def __init__(self, folder: Path, identity: dict, samples: dict | None = None,
                 written: str | None = None) -> None:  # fmt: skip
        self.folder = folder
        self.identity = identity
        self.samples: dict[str, dict] = samples or {}
        self.written = written

    @property
    def path(self) -> Path:
        return self.folder / STATE_NAME

    @classmethod
    def open(cls, folder: Path, identity: dict) -> RunState:
        """The state in `folder` (made when absent); UsageError when it is another run's."""
        path = folder / STATE_NAME
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"-o {folder} is not a folder", "name a folder for the run")
        if not path.is_file():
            if folder.is_dir() and any(p.name != STATE_NAME for p in folder.iterdir()):
                raise UsageError(
                    f"-o {folder} holds files and no teacher run",
                    "name a new or empty folder, or the folder of the run to resume",
                )
            return cls(folder, identity)
        try:
            data = json.loads(path.read_text())
            version, samples = data["version"], data["samples"]
            theirs, written = data["identity"], data.get("written")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"{path} cannot be read: {exc}", "name a new folder with -o to start afresh"
            ) from None
        if version != STATE_VERSION:
            raise UsageError(f"{path} is of state version {version}; this Forge reads "
                             f"{STATE_VERSION}", "name a new folder with -o")  # fmt: skip
        differ = sorted(k for k in identity if theirs.get(k) != identity[k])
        if differ:
            said = "; ".join(f"{k}: {theirs.get(k)!r} there, {identity[k]!r} now" for k in differ)
            raise UsageError(
                f"-o {folder} holds another teacher run ({said})",
                "resume it with the same package, model and settings, or name a new folder",
            )
        return cls(folder, identity, samples, written)

    def done(self, sha: str, sample: int) -> bool:
        return sample_key(sha, sample) in self.samples

    def record(self, sample: dict) -> None:
        self.samples[sample_key(sample["sha"], sample["sample"])] = sample
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"version": STATE_VERSION, "identity": self.identity, "written": self.written,
                "samples": self.samples}  # fmt: skip
        fd, tmp = tempfile.mkstemp(prefix=f".{STATE_NAME}.", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
