"""The docker sandbox backend: DockerBackend runs a SandboxRequest in a throwaway container of a
locally loaded image with no network, a read-only root, no capabilities, the request's limits as
cgroup and rlimit settings, and only the request's binds visible from the host; check() says what
is missing (the SDK, the image setting, the engine, the image) and nothing ever falls back to an
unconfined run or pulls an image.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from typing import Any

from appliance.errors import SandboxError
from appliance.sandbox.spec import Limits, SandboxRequest, SandboxResult

try:  # the SDK is a dependency, but a broken install must be a clear error, not an ImportError
    import docker as docker_sdk
    import docker.errors
    import docker.types
    import requests.exceptions
except ImportError:  # pragma: no cover - exercised by monkeypatching docker_sdk to None
    docker_sdk = None

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_KEEP = 1 << 20  # bytes of output kept in the result; longer output keeps head and tail
OUTPUT_HALF = OUTPUT_KEEP // 2
SIGXCPU_EXIT = 128 + 24  # the kernel kills a process past RLIMIT_CPU with SIGXCPU
SIGXFSZ_EXIT = 128 + 25  # and one writing past RLIMIT_FSIZE with SIGXFSZ
KILLED_EXIT = 128 + 9  # what `docker kill` (SIGKILL) leaves as the exit status
IMAGE_HINT = "set sandbox.docker_image in forge.toml to an image loaded with `docker load`"


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


def keep_head_and_tail(data: bytes) -> tuple[str, bool]:
    """Decode output, keeping the first and last 512 KiB when it is longer than 1 MiB."""
    if len(data) <= OUTPUT_KEEP:
        return data.decode("utf-8", errors="replace"), False
    dropped = len(data) - 2 * OUTPUT_HALF
    head = data[:OUTPUT_HALF].decode("utf-8", errors="replace")
    tail = data[-OUTPUT_HALF:].decode("utf-8", errors="replace")
    return f"{head}\n[... {dropped} bytes not shown ...]\n{tail}", True


class DockerBackend:
    """Runs sandbox requests in containers of one local image; see the module docstring."""

    name = "docker"

    def __init__(self, image: str, client_factory: Callable[[], Any] | None = None) -> None:
        self.image = image
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
            client.images.get(self.image)
        except docker.errors.ImageNotFound as exc:
            raise self._image_missing() from exc
        except _engine_errors() as exc:
            raise _unreachable(exc) from exc

    def _image_missing(self) -> SandboxError:
        # The box is offline: the image must be loaded from a file, never pulled.
        return SandboxError(
            f"the docker image {self.image!r} is not present on this machine",
            f"load it with `docker load -i IMAGE.tar` (Forge never pulls), or {IMAGE_HINT}",
        )

    def container_kwargs(self, request: SandboxRequest) -> dict[str, Any]:
        """Everything containers.create is given: the confinement lives here."""
        limits = request.limits
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
        env.update(request.env)
        # The root is read-only and the uid may have no passwd entry: /tmp is the only home.
        env.update({"HOME": "/tmp", "TMPDIR": "/tmp"})
        return {
            "image": self.image,
            "command": list(request.argv),
            "working_dir": str(request.cwd),
            "environment": env,
            "network_mode": "none",
            "read_only": True,
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "mem_limit": f"{limits.memory_mb}m",
            "memswap_limit": f"{limits.memory_mb}m",  # equal to mem_limit: no swap
            "pids_limit": limits.processes,
            "ulimits": _ulimits(limits),
            "tmpfs": {"/tmp": f"size={limits.tmp_mb}m,mode=1777"},
            "volumes": {
                str(b.path): {"bind": str(b.path), "mode": "rw" if b.writable else "ro"}
                for b in request.binds
            },
            "user": f"{os.getuid()}:{os.getgid()}",
            "detach": True,
            "auto_remove": False,  # its logs and OOM state are read after it exits
            "stdin_open": False,
            "tty": False,
            "init": True,  # an init reaps orphans and passes signals on to the tree
            "use_config_proxy": False,  # the host's proxy settings must not enter the env
        }

    def run(self, request: SandboxRequest) -> SandboxResult:
        """Run the request in a fresh container, then remove it whatever happened."""
        client = self._connect()
        limits = request.limits
        try:
            container = client.containers.create(**self.container_kwargs(request))
        except docker.errors.ImageNotFound as exc:
            raise self._image_missing() from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"docker refused to create the sandbox: {exc}") from exc
        except _engine_errors() as exc:
            raise _unreachable(exc) from exc
        start = time.monotonic()
        try:
            try:
                container.start()
                status = container.wait(timeout=limits.wall_s)
            except requests.exceptions.ReadTimeout:
                _kill(container)
                return self._result(container, limits, KILLED_EXIT, start, "wall_time")
            except requests.exceptions.ConnectionError as exc:
                # urllib3 can report a read timeout as a ConnectionError; well before the limit
                # it means the engine went away, which is not the command's fault.
                if time.monotonic() - start < 0.95 * limits.wall_s:
                    raise _unreachable(exc) from exc
                _kill(container)
                return self._result(container, limits, KILLED_EXIT, start, "wall_time")
            except docker.errors.APIError as exc:
                raise SandboxError(f"docker failed to run the sandbox: {exc}") from exc
            duration = time.monotonic() - start
            code = int(status.get("StatusCode", -1))
            container.reload()
            limit = None
            if container.attrs.get("State", {}).get("OOMKilled"):
                limit = "memory"
            elif code == SIGXCPU_EXIT:
                limit = "cpu_time"
            elif code == SIGXFSZ_EXIT:
                limit = "file_size"
            return self._result(container, limits, code, start, limit, duration)
        finally:
            # NotFound is an APIError: a container already gone is fine.
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)

    def _result(
        self,
        container: Any,
        limits: Limits,
        code: int,
        start: float,
        limit: str | None,
        duration: float | None = None,
    ) -> SandboxResult:
        if duration is None:
            duration = time.monotonic() - start
        data = container.logs(stdout=True, stderr=True)
        output, truncated = keep_head_and_tail(data)
        if limit is None and len(data) > limits.output_bytes:
            limit = "output"
        return SandboxResult(
            returncode=code,
            output=output,
            duration_s=duration,
            truncated=truncated,
            limit=limit,
            backend=self.name,
        )


def _ulimits(limits: Limits) -> list[Any]:
    cpu = math.ceil(limits.cpu_s)
    fsize = limits.file_size_mb << 20
    return [
        docker.types.Ulimit(name="cpu", soft=cpu, hard=cpu),
        docker.types.Ulimit(name="fsize", soft=fsize, hard=fsize),
        docker.types.Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
        docker.types.Ulimit(name="core", soft=0, hard=0),
    ]


def _kill(container: Any) -> None:
    # It may have ended on its own between the timeout and the kill.
    with contextlib.suppress(docker.errors.APIError):
        container.kill()
