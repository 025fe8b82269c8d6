"""The docker sandbox backend: DockerBackend runs a SandboxRequest in a throwaway container of a
locally built image (`forge sandbox image build`) as the unprivileged sandbox uid, with no network,
a read-only root, no capabilities, no new privileges, Docker's default seccomp profile, a private
size-limited /dev/shm, the request's limits as cgroup and rlimit settings, and only the request's
binds visible from the host. While it runs, its output and the bytes under its writable binds are
counted and the container is killed past their limits. check() says what is missing (the SDK, the
image setting, the engine, the image); nothing ever falls back to an unconfined run or pulls.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import SandboxError
from appliance.sandbox import seccomp
from appliance.sandbox.identity import handed_over
from appliance.sandbox.interpreter import base_python
from appliance.sandbox.spec import Limits, SandboxRequest, SandboxResult
from appliance.sandbox.supervise import DISK_CHECK_S, DISK_WALK_SHARE
from appliance.sandbox.usage import disk_bytes

try:  # the SDK is a dependency, but a broken install must be a clear error, not an ImportError
    import docker as docker_sdk
    import docker.errors
    import docker.types
    import requests.exceptions
except ImportError:  # pragma: no cover - exercised by monkeypatching docker_sdk to None
    docker_sdk = None

# What `forge sandbox image build` (sandbox.image) labels its image with: the digest of
# its contents, and the interpreter and platform it was built from.
LABEL_DIGEST = "org.forge.sandbox.digest"
LABEL_FROM = "org.forge.sandbox.built-from"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_KEEP = 1 << 20  # bytes of output kept in the result; longer output keeps head and tail
OUTPUT_HALF = OUTPUT_KEEP // 2
SIGXCPU_EXIT = 128 + 24  # the kernel kills a process past RLIMIT_CPU with SIGXCPU
SIGXFSZ_EXIT = 128 + 25  # and one writing past RLIMIT_FSIZE with SIGXFSZ
KILLED_EXIT = 128 + 9  # what `docker kill` (SIGKILL) leaves as the exit status
POLL_S = 0.05  # how often wall time and output are looked at
WAIT_GRACE_S = 60.0  # the engine's wait call outlives the wall-time limit by this much
# Runs first in the container, in the image's copy of Forge's interpreter (isolated, no site:
# nothing of the repository is imported): stacks Forge's own seccomp filter (the one bwrap
# gets, given as hex in argv[1]) on top of Docker's default profile, then execs the command.
# Docker 20.10's default profile still allows io_uring; the stacked filter refuses it.
SECCOMP_EXEC = r"""
import ctypes, os, sys
prog = bytes.fromhex(sys.argv[1])
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
buf = ctypes.create_string_buffer(prog, len(prog))
fprog = Prog(len(prog) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
    sys.stderr.write("forge: the sandbox's seccomp filter was refused: "
                     + os.strerror(ctypes.get_errno()) + "\n")
    os._exit(126)
import signal  # Python ignores these at start, and an ignored signal stays so across exec
for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write(f"forge: cannot run {sys.argv[2]!r}: {exc.strerror}\n")
    os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
"""
IMAGE_HINT = (
    "build it with `forge sandbox image build` and set sandbox.docker_image in forge.toml "
    "to the tag it prints"
)


def _require_sdk() -> Any:
    if docker_sdk is None:
        raise SandboxError(
            "the docker Python SDK is not installed; the docker sandbox cannot start",
            "reinstall Forge (./install.sh installs the pinned `docker` wheel), "
            'or set sandbox.backend = "bwrap" in forge.toml',
        )
    return docker_sdk


def _engine_errors() -> tuple[type[BaseException], ...]:
    # What the SDK raises when the engine's socket is missing, refused or stops answering.
    return (docker.errors.DockerException, requests.exceptions.ConnectionError)


def _unreachable(exc: BaseException) -> SandboxError:
    return SandboxError(
        f"the docker engine is unreachable: {exc}",
        "start the docker daemon and make sure this user may use its socket "
        "(DOCKER_HOST, or membership of the 'docker' group)",
    )


def connect_engine(client_factory: Callable[[], Any] | None = None) -> Any:
    """A client of the docker engine that has answered a ping; SandboxError if none does."""
    sdk = _require_sdk()
    try:
        client = (client_factory or sdk.from_env)()
        client.ping()
    except _engine_errors() as exc:
        raise _unreachable(exc) from exc
    return client


def keep_head_and_tail(data: bytes) -> tuple[str, bool]:
    """Decode output, keeping the first and last 512 KiB when it is longer than 1 MiB."""
    if len(data) <= OUTPUT_KEEP:
        return data.decode("utf-8", errors="replace"), False
    dropped = len(data) - 2 * OUTPUT_HALF
    head = data[:OUTPUT_HALF].decode("utf-8", errors="replace")
    tail = data[-OUTPUT_HALF:].decode("utf-8", errors="replace")
    return f"{head}\n[... {dropped} bytes not shown ...]\n{tail}", True


class _Output:
    """Follows a container's output in a thread, counting every byte, keeping head and tail."""

    def __init__(self, container: Any) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.error: BaseException | None = None
        self._stream = container.logs(stdout=True, stderr=True, stream=True, follow=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for chunk in self._stream:
                self.total += len(chunk)
                room = OUTPUT_HALF - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail += chunk
                    if len(self.tail) > OUTPUT_HALF:
                        del self.tail[: len(self.tail) - OUTPUT_HALF]
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self.error = exc  # the engine went away: the run's output is not whole

    def text(self) -> tuple[str, bool]:
        self.thread.join(timeout=10)
        with contextlib.suppress(AttributeError):
            self._stream.close()
        dropped = self.total - len(self.head) - len(self.tail)
        if dropped <= 0:
            return keep_head_and_tail(bytes(self.head + self.tail))
        head = bytes(self.head).decode("utf-8", errors="replace")
        tail = bytes(self.tail).decode("utf-8", errors="replace")
        return f"{head}\n[... {dropped} bytes not shown ...]\n{tail}", True


class _ForkFailures:
    """Counts the forks the container's pids limit refused, as the kernel reports them in the
    pids cgroup's `pids.events` ("max N"). The limit itself is the kernel's; reading it lets a
    fork bomb end the run at once as "processes", as bwrap's supervisor does, rather than
    spin until its wall time. Best effort: without a readable file the limit still binds."""

    def __init__(self, container: Any) -> None:
        self.path: Path | None = None
        with contextlib.suppress(docker.errors.APIError, *_engine_errors()):
            container.reload()
            pid = int(container.attrs.get("State", {}).get("Pid") or 0)
            if pid > 0:
                self.path = _pids_events(pid)

    def seen(self) -> bool:
        if self.path is None:
            return False
        try:
            for line in self.path.read_text().splitlines():
                key, _, count = line.partition(" ")
                if key == "max":
                    return int(count) > 0
        except (OSError, ValueError):
            self.path = None
        return False


def _pids_events(pid: int) -> Path | None:
    """The pids.events file of the cgroup process `pid` is in (cgroup v1 or v2)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "pids" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/pids", path.lstrip("/"))  # cgroup v1
        elif controllers == "":
            folder = Path("/sys/fs/cgroup", path.lstrip("/"))  # v2: the unified hierarchy
        else:
            continue
        if (folder / "pids.events").is_file():
            return folder / "pids.events"
    return None


class _Waiter:
    """Waits for the container's end in a thread, so the caller can watch limits meanwhile."""

    def __init__(self, container: Any, timeout: float) -> None:
        self.status: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._wait, args=(container, timeout), daemon=True)
        self.thread.start()

    def _wait(self, container: Any, timeout: float) -> None:
        try:
            self.status = container.wait(timeout=timeout)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self.error = exc

    def done(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


class DockerBackend:
    """Runs sandbox requests in containers of one local image; see the module docstring.

    `ids`: the host (uid, gid) the container runs as, never 0 (sandbox.identity.sandbox_ids).
    """

    name = "docker"

    def __init__(
        self,
        image: str,
        ids: tuple[int, int] = (65534, 65534),
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        if 0 in ids:
            raise ValueError("the docker sandbox never runs as uid or gid 0")
        self.image = image
        self.uid, self.gid = ids
        self._client_factory = client_factory
        self._client: Any = None

    def _connect(self) -> Any:
        sdk = _require_sdk()
        if not self.image:
            raise SandboxError("the docker sandbox has no image configured", IMAGE_HINT)
        if self._client is None:
            factory = self._client_factory or sdk.from_env
            try:
                self._client = factory()
            except _engine_errors() as exc:
                raise _unreachable(exc) from exc
        return self._client

    def check(self) -> None:
        """Raise SandboxError unless the engine answers and the image is loaded locally."""
        client = self._connect()
        try:
            client.ping()
        except _engine_errors() as exc:
            raise _unreachable(exc) from exc
        try:
            image = client.images.get(self.image)
        except docker.errors.ImageNotFound as exc:
            raise self._image_missing() from exc
        except _engine_errors() as exc:
            raise _unreachable(exc) from exc
        # Every environment's python links to Forge's interpreter: the image must hold that
        # one, at that path. An image made elsewhere (no label) is taken on trust.
        python = _built_from(image).get("python")
        if python and python != base_python():
            raise SandboxError(
                f"the docker image {self.image!r} was built for the Python at {python}, "
                f"but Forge now runs on {base_python()}",
                "rebuild it: forge sandbox image build",
            )

    def _image_missing(self) -> SandboxError:
        # The box is offline: the image must be built here, never pulled.
        return SandboxError(
            f"the docker image {self.image!r} is not present on this machine",
            f"Forge never pulls: {IMAGE_HINT} (or `docker load -i IMAGE.tar` one made elsewhere)",
        )

    def container_kwargs(self, request: SandboxRequest) -> dict[str, Any]:
        """Everything containers.create is given: the confinement lives here."""
        limits = request.limits
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
        env.update(request.env)
        # The root is read-only and the uid has no passwd entry: /tmp is the only home.
        env.update({"HOME": "/tmp", "TMPDIR": "/tmp"})
        return {
            "image": self.image,
            "command": [
                base_python(),
                "-I",
                "-S",
                "-c",
                SECCOMP_EXEC,
                seccomp.program().hex(),
                *request.argv,
            ],
            "working_dir": str(request.cwd),
            "environment": env,
            "hostname": "sandbox",
            "network_mode": "none",
            "ipc_mode": "private",
            "read_only": True,
            # Leaving seccomp out keeps Docker's default profile; never "seccomp=unconfined".
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "mem_limit": f"{limits.memory_mb}m",
            "memswap_limit": f"{limits.memory_mb}m",  # equal to mem_limit: no swap
            "shm_size": f"{limits.shm_mb}m",  # tmpfs pages count against mem_limit as well
            "pids_limit": limits.processes + 1,  # the init counts too, as bwrap's own do
            "ulimits": _ulimits(limits),
            "tmpfs": {"/tmp": f"size={limits.tmp_mb}m,mode=1777,nosuid,nodev"},
            "volumes": {
                str(b.path): {"bind": str(b.inside), "mode": "rw" if b.writable else "ro"}
                for b in request.binds
            },
            "user": f"{self.uid}:{self.gid}",
            "detach": True,
            "auto_remove": False,  # its exit status and OOM state are read after it exits
            "stdin_open": False,
            "tty": False,
            "init": True,  # an init reaps orphans and passes signals on to the tree
            "use_config_proxy": False,  # the host's proxy settings must not enter the env
        }

    def run(self, request: SandboxRequest) -> SandboxResult:
        """Run the request in a fresh container, then remove it whatever happened."""
        client = self._connect()
        try:
            container = client.containers.create(**self.container_kwargs(request))
        except docker.errors.ImageNotFound as exc:
            raise self._image_missing() from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"docker refused to create the sandbox: {exc}") from exc
        except _engine_errors() as exc:
            raise _unreachable(exc) from exc
        writable = [Path(b.path) for b in request.binds if b.writable]
        try:
            with handed_over(writable, self.uid, self.gid):
                return self._watch(container, request.limits, writable)
        finally:
            # NotFound is an APIError: a container already gone is fine.
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)

    def _watch(self, container: Any, limits: Limits, writable: list[Path]) -> SandboxResult:
        """Start the container and watch it to its end or the first limit it crosses; the
        container is dead when this returns (handed_over then takes the binds back)."""
        # The cap is on what the run adds: the checkout it was given does not count.
        disk_cap = (limits.disk_mb << 20) + (disk_bytes(writable) if writable else 0)
        start = time.monotonic()
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise SandboxError(f"docker failed to start the sandbox: {exc}") from exc
        except _engine_errors() as exc:
            raise _unreachable(exc) from exc
        waiter: _Waiter | None = None
        limit = None
        next_disk = start + DISK_CHECK_S
        try:
            output = _Output(container)
            waiter = _Waiter(container, limits.wall_s + WAIT_GRACE_S)
            forks = _ForkFailures(container)
            while not waiter.done(POLL_S):
                now = time.monotonic()
                if now - start > limits.wall_s:
                    limit = "wall_time"
                elif output.total > limits.output_bytes:
                    limit = "output"
                elif forks.seen():
                    limit = "processes"
                elif writable and now >= next_disk:
                    # The same pace as bwrap's supervisor: a big worktree takes long to walk.
                    if disk_bytes(writable) > disk_cap:
                        limit = "disk"
                    took = time.monotonic() - now
                    next_disk = time.monotonic() + max(DISK_CHECK_S, took * DISK_WALK_SHARE)
                if limit is not None:
                    _kill(container)
                    waiter.done(WAIT_GRACE_S)
                    break
        except BaseException:  # interrupted (KeyboardInterrupt, a job cancelled): leave nothing
            _kill(container)
            if waiter is not None:
                waiter.done(WAIT_GRACE_S)
            raise
        duration = time.monotonic() - start
        text, truncated = output.text()  # the stream ends with the container: all is counted
        if waiter.error is not None or waiter.status is None or output.error is not None:
            _kill(container)
            exc = waiter.error or output.error
            exc = exc or TimeoutError("the engine never reported the container's end")
            if isinstance(exc, docker.errors.APIError):
                raise SandboxError(f"docker failed to run the sandbox: {exc}") from exc
            if isinstance(exc, (*_engine_errors(), requests.exceptions.RequestException)):
                raise _unreachable(exc) from exc
            raise exc
        code = int(waiter.status.get("StatusCode", -1))
        if limit is None:
            with contextlib.suppress(docker.errors.APIError):
                container.reload()
            if container.attrs.get("State", {}).get("OOMKilled"):
                limit = "memory"
            elif code == SIGXCPU_EXIT:
                limit = "cpu_time"
            elif code == SIGXFSZ_EXIT:
                limit = "file_size"
            elif output.total > limits.output_bytes:
                limit = "output"
            elif writable and disk_bytes(writable) > disk_cap:
                limit = "disk"  # written in the last moments before it ended
        return SandboxResult(
            returncode=code,
            output=text,
            duration_s=duration,
            truncated=truncated,
            limit=limit,
            backend=self.name,
        )


def _built_from(image: Any) -> dict[str, str]:
    try:
        found = json.loads((getattr(image, "labels", None) or {}).get(LABEL_FROM, "{}"))
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def _ulimits(limits: Limits) -> list[Any]:
    cpu = math.ceil(limits.cpu_s)
    fsize = limits.file_size_mb << 20
    return [
        # SIGXCPU at the soft limit, SIGKILL 5 s later (as bwrap): equal limits would kill
        # with SIGKILL at once, and the run would not be told apart from other kills.
        docker.types.Ulimit(name="cpu", soft=cpu, hard=cpu + 5),
        docker.types.Ulimit(name="fsize", soft=fsize, hard=fsize),
        docker.types.Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
        docker.types.Ulimit(name="core", soft=0, hard=0),
    ]


def _kill(container: Any) -> None:
    # It may have ended on its own between the check and the kill (APIError: not running);
    # an engine that is gone is reported by the caller.
    with contextlib.suppress(docker.errors.APIError, *_engine_errors()):
        container.kill()
