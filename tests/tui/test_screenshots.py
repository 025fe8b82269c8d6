"""`python tests/tui/tui_screenshots.py OUTDIR` writes the two pictures of docs/."""

from __future__ import annotations

from tui_screenshots import main


def test_screenshots_of_overview_and_adapters(tmp_path, monkeypatch):
    monkeypatch.delenv("FORGE_HOME", raising=False)
    assert main([str(tmp_path)]) == 0
    overview = (tmp_path / "tui-overview.svg").read_text()
    adapters = (tmp_path / "tui-adapters.svg").read_text()
    assert overview.startswith("<svg") and adapters.startswith("<svg")
    # Textual writes spaces as &#160; in the SVG text
    assert "Running" in overview and "Tesla&#160;P40" in overview
    assert "accuracy&#160;across&#160;versions" in adapters
