"""forged's control socket (FORGE_HOME/forged.sock): the protocol and the client.

One JSON object on one line each way per connection. Every request is one of the pydantic
models below, chosen by its `command` (a `run` request's model also by its job `kind`):
strict types, bounded sizes, unknown keys refused. `parse_request` is the one way forged
reads a request; `request` is how `forge` and the dashboard send one, None when no daemon
answers, so callers work in the foreground instead.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from appliance.config import Config
from appliance.errors import ForgeError, UsageError, validation_problems

SOCKET = "forged.sock"
MAX_REQUEST_BYTES = 64 * 1024  # the longest request is a few hundred bytes
MAX_REQUEST_DEPTH = 8  # objects and arrays inside each other; requests use 2
MAX_ANSWER_BYTES = 64 << 20  # a status answer lists jobs: large, never this large


class BadRequest(UsageError):
    """A control-socket request forged does not take: not JSON, too large or too deep, or
    not one of its commands with the arguments that command accepts."""


# --- the requests ----------------------------------------------------------------------

Stage = Annotated[StrictStr, Field(min_length=1, max_length=64)]
Version = Annotated[StrictInt, Field(ge=1, le=(1 << 31) - 1)]
JobId = Annotated[StrictInt, Field(ge=1, le=(1 << 63) - 1)]  # SQLite's INTEGER


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Ping(_Strict):
    command: Literal["ping"]


class Status(_Strict):
    command: Literal["status"]


class Pause(_Strict):
    command: Literal["pause"]


class Resume(_Strict):
    command: Literal["resume"]


class Ingest(_Strict):
    """Look at ingest/ now (a job)."""

    command: Literal["ingest"]


class Cancel(_Strict):
    command: Literal["cancel"]
    id: JobId


class Rollback(_Strict):
    command: Literal["rollback"]
    stage: Stage
    to: Version | None = None
    to_base: StrictBool = False


class Promote(_Strict):
    """force: promoted at once, no gate; else the gate's evaluation runs as a job."""

    command: Literal["promote"]
    stage: Stage
    version: Version
    force: StrictBool = False


class NoArgs(_Strict):
    """The arguments of a job that takes none: exactly {}."""


class CycleArgs(_Strict):
    """cycle, campaign, train, evaluate: what `forge cycle` passes."""

    source: Annotated[StrictStr, Field(min_length=1, max_length=4096)] | None = None
    demo: StrictBool = False
    commits: Annotated[StrictInt, Field(ge=0, le=1_000_000)] | None = None


class PromoteArgs(_Strict):
    stage: Stage
    version: Version


class RunIngest(_Strict):
    command: Literal["run"]
    kind: Literal["ingest"]
    args: NoArgs = NoArgs()


class RunBackup(_Strict):
    command: Literal["run"]
    kind: Literal["backup", "gc"]
    args: NoArgs = NoArgs()


class RunCycle(_Strict):
    command: Literal["run"]
    kind: Literal["cycle", "campaign", "train", "evaluate"]
    args: CycleArgs = CycleArgs()


class RunPromote(_Strict):
    command: Literal["run"]
    kind: Literal["promote"]
    args: PromoteArgs


Run = Annotated[RunIngest | RunBackup | RunCycle | RunPromote, Field(discriminator="kind")]
Request = Annotated[
    Ping | Status | Pause | Resume | Ingest | Cancel | Rollback | Promote | Run,
    Field(discriminator="command"),
]
_REQUEST = TypeAdapter(Request)
# Every kind a `run` request may name (appliance.ops.work.KINDS, which a test holds them to).
RUN_KINDS = ("ingest", "backup", "gc", "cycle", "campaign", "train", "evaluate", "promote")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def _depth(line: bytes) -> int:
    """How deep objects and arrays nest in `line`, counted without parsing it (so a
    request nested 100,000 deep never reaches the recursive parser)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", line)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _summary(exc: ValidationError) -> str:
    """The first few problems, by where they are; never the values sent."""
    problems = validation_problems(exc, "the request")
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5])[:1000] + more


def parse_request(line: bytes) -> Request:
    """The request in one line from the socket; BadRequest says what is wrong with it."""
    hint = 'one JSON object per line, such as {"command": "status"}; forge sends these for you'
    if len(line) > MAX_REQUEST_BYTES:
        raise BadRequest(f"the request is longer than {MAX_REQUEST_BYTES} bytes", hint)
    if _depth(line) > MAX_REQUEST_DEPTH:
        raise BadRequest(f"the request nests deeper than {MAX_REQUEST_DEPTH} levels", hint)
    try:
        data = json.loads(line)
    except ValueError as exc:  # not JSON, not UTF-8, or a number too long to read
        raise BadRequest(f"the request is not JSON: {exc}", hint) from exc
    try:
        return _REQUEST.validate_python(data)
    except ValidationError as exc:
        raise BadRequest(f"bad request: {_summary(exc)}", hint) from exc


def refusal(exc: ForgeError) -> dict:
    """The answer that says no: the error, its hint and the exit code `forge` uses."""
    return {"ok": False, "error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}


# --- the client ------------------------------------------------------------------------


def request(config: Config, command: str, timeout: float = 10.0, **args) -> dict | None:
    """forged's answer to `command` with `args`; None when no daemon answers."""
    path = config.home / SOCKET
    if not path.exists():
        return None
    hint = "see journalctl -u forged"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall((json.dumps({"command": command, **args}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_ANSWER_BYTES:
                    raise ForgeError(f"forged's answer on {path} is larger than "
                                     f"{MAX_ANSWER_BYTES >> 20} MiB", hint)  # fmt: skip
    except (ConnectionRefusedError, FileNotFoundError):
        return None  # a socket a crash left behind: no daemon
    except TimeoutError as exc:
        raise ForgeError(f"forged did not answer on {path} within {timeout:g} s", hint) from exc
    except OSError as exc:
        raise ForgeError(f"forged did not answer on {path}: {exc}", hint) from exc
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise ForgeError(f"forged answered something that is not JSON on {path}", hint) from exc
    if not isinstance(answer, dict):
        raise ForgeError(f"forged answered something that is not a JSON object on {path}", hint)
    return answer
