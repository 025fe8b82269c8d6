"""The sandbox: the one way repository code (tests, model edits) is run.

No network, a read-only system, only named paths writable, its own PID namespace,
killed as a whole tree on timeout. Backend: bubblewrap. If the sandbox is unavailable
Forge refuses to run the command; it never falls back to running it unconfined.
"""

from appliance.sandbox.bwrap import SandboxResult, bwrap_path, check_sandbox, run_sandboxed

__all__ = ["SandboxResult", "bwrap_path", "check_sandbox", "run_sandboxed"]
