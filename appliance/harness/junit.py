"""Per-test outcomes from pytest's JUnit XML report (written with junit_family=xunit1).

Test ids look like pytest node ids: `tests/test_x.py::TestClass::test_name[param]`.
Collection errors are returned apart, as the test module paths that failed to import.
The report is written by the code under test, so it is read with a size cap and
treated as untrusted input.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ForgeError

MAX_REPORT_BYTES = 64 << 20
OUTCOMES = ("passed", "failed", "error", "skipped")
# When one test id appears more than once (an error in teardown after a pass), the worst wins.
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def worst(known: str | None, outcome: str) -> str:
    """The outcome that stands for a test reported both `known` (or nothing) and `outcome`."""
    return outcome if known is None or _RANK[outcome] >= _RANK[known] else known


class ReportUnreadable(ForgeError):
    """The JUnit report is missing, too large or not the XML pytest writes."""


@dataclass(frozen=True)
class Report:
    outcomes: dict[str, str]  # test id -> one of OUTCOMES
    collection_errors: tuple[str, ...]  # module paths that failed to collect


def module_path(dotted: str) -> str:
    """The file of a module named by its dotted name (how a collection error names it)."""
    return dotted.replace(".", "/") + ".py"


def junit_id(file: str | None, classname: str, name: str) -> str:
    """The test id of a <testcase> with these attributes. The result stream gives the same
    three for each test, so both channels name a test the same way."""
    if file:
        module = file[:-3].replace("/", ".") if file.endswith(".py") else file
        inner = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
        return "::".join(p for p in (file, inner.replace(".", "::"), name) if p)
    return f"{classname}::{name}" if classname else name


def _outcome(case: ET.Element) -> str:
    tags = {child.tag for child in case}
    if "error" in tags:
        return "error"
    if "failure" in tags:
        return "failed"
    if "skipped" in tags:
        return "skipped"
    return "passed"


def parse_report(data: bytes) -> Report:
    if len(data) > MAX_REPORT_BYTES:
        raise ReportUnreadable(
            f"the JUnit report is {len(data)} bytes; the cap is {MAX_REPORT_BYTES}"
        )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ReportUnreadable(f"the JUnit report is not valid XML: {exc}") from exc
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportUnreadable(f"the JUnit report's root is <{root.tag}>, not <testsuites>")
    outcomes: dict[str, str] = {}
    broken: list[str] = []
    for case in root.iter("testcase"):
        error = case.find("error")
        # pytest reports a module that fails to import as a nameless-class error case.
        if (
            not case.get("classname")
            and error is not None
            and "collection" in (error.get("message") or "")
        ):
            broken.append(module_path(case.get("name", "")))
            continue
        case_id = junit_id(case.get("file"), case.get("classname", ""), case.get("name", ""))
        outcomes[case_id] = worst(outcomes.get(case_id), _outcome(case))
    return Report(outcomes, tuple(sorted(set(broken))))


def read_report(path: Path) -> Report:
    try:
        if path.is_symlink() or not path.is_file():
            raise ReportUnreadable("pytest wrote no JUnit report")
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise ReportUnreadable(f"the JUnit report is larger than {MAX_REPORT_BYTES} bytes")
        return parse_report(path.read_bytes())
    except OSError as exc:
        raise ReportUnreadable(f"cannot read the JUnit report: {exc.strerror}") from exc
