"""Reading pytest's JUnit report, which the code under test could have overwritten."""

from __future__ import annotations

import pytest

from appliance.harness.junit import MAX_REPORT_BYTES, ReportUnreadable, parse_report, read_report

REPORT = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="6">
<testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py" line="1"/>
<testcase classname="tests.test_a.TestBox" name="test_p[1-2]" file="tests/test_a.py">
  <failure message="assert 1 == 2">boom</failure></testcase>
<testcase classname="tests.test_a" name="test_skip" file="tests/test_a.py">
  <skipped type="pytest.skip" message="later"/></testcase>
<testcase classname="tests.test_a" name="test_teardown" file="tests/test_a.py"/>
<testcase classname="tests.test_a" name="test_teardown" file="tests/test_a.py">
  <error message="failed on teardown">x</error></testcase>
<testcase classname="" name="tests.test_new">
  <error message="collection failure">E</error></testcase>
</testsuite></testsuites>"""


def test_outcomes_and_collection_errors():
    report = parse_report(REPORT)
    assert report.outcomes == {
        "tests/test_a.py::test_ok": "passed",
        "tests/test_a.py::TestBox::test_p[1-2]": "failed",
        "tests/test_a.py::test_skip": "skipped",
        "tests/test_a.py::test_teardown": "error",  # the worst of its two entries
    }
    assert report.collection_errors == ("tests/test_new.py",)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"<testsuites><testcase", "not valid XML"),
        (b"<html></html>", "not <testsuites>"),
        (b"<!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><testsuites>&a;</testsuites>",
         "not valid XML"),
    ],
)  # fmt: skip
def test_bad_reports_are_refused(data, words):
    with pytest.raises(ReportUnreadable, match=words):
        parse_report(data)


def test_missing_huge_or_linked_reports(tmp_path):
    with pytest.raises(ReportUnreadable, match="no JUnit report"):
        read_report(tmp_path / "report.xml")
    big = tmp_path / "big.xml"
    with big.open("wb") as fh:
        fh.truncate(MAX_REPORT_BYTES + 1)
    with pytest.raises(ReportUnreadable, match="larger than"):
        read_report(big)
    (tmp_path / "link.xml").symlink_to("/etc/passwd")
    with pytest.raises(ReportUnreadable, match="no JUnit report"):
        read_report(tmp_path / "link.xml")
