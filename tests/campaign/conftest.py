"""Campaign fixtures: the demo home of the harness tests."""

from tests.harness.conftest import demo_home  # noqa: F401 - a fixture, used by name
