"""What validation reports: one Problem per broken rule, naming the path and the fix."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.records import as_json


@dataclass(frozen=True)
class Problem:
    rule: str  # short id, e.g. "symlink", "wheel-hash"
    path: str  # inside the package, "" for the package as a whole
    message: str  # what is wrong
    fix: str  # what to do about it

    def line(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"[{self.rule}]{where} {self.message} — {self.fix}"

    def to_dict(self) -> dict[str, str]:
        return as_json(self)
