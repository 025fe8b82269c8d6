"""The docker backend against a fake client that records calls; no engine runs on this machine.

The fakes raise the SDK's real exception classes, and the container settings are also fed through
the real SDK's argument conversion, so a misspelt or unknown keyword fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import docker.errors
import docker.types
import pytest
import requests.exceptions
from docker.models.containers import _create_container_args

from appliance.errors import SandboxError
from appliance.sandbox import docker as docker_backend
from appliance.sandbox.docker import DockerBackend
from appliance.sandbox.spec import Bind, Limits, SandboxRequest

IMAGE = "forge-sandbox:test"


class FakeContainer:
    def __init__(self, exit_code=0, logs=b"", oom=False, wait_error=None, remove_error=None):
        self.exit_code = exit_code
        self.log_data = logs
        self.oom = oom
        self.wait_error = wait_error
        self.remove_error = remove_error
        self.attrs = {"State": {"OOMKilled": False}}
        self.calls: list[tuple] = []

    def start(self):
        self.calls.append(("start",))

    def wait(self, timeout=None):
        self.calls.append(("wait", timeout))
        if self.wait_error is not None:
            raise self.wait_error
        return {"StatusCode": self.exit_code, "Error": None}

    def reload(self):
        # The OOM flag is only seen after a reload, as with a real container.
        self.calls.append(("reload",))
        self.attrs = {"State": {"OOMKilled": self.oom, "ExitCode": self.exit_code}}

    def logs(self, stdout=False, stderr=False):
        self.calls.append(("logs", stdout, stderr))
        return self.log_data

    def kill(self):
        self.calls.append(("kill",))

    def remove(self, force=False):
        self.calls.append(("remove", force))
        if self.remove_error is not None:
            raise self.remove_error

    def called(self, name):
        return [c for c in self.calls if c[0] == name]


class FakeContainers:
    def __init__(self, container, create_error=None):
        self.container = container
        self.create_error = create_error
        self.created: list[dict] = []

    def create(self, **kwargs):
        self.created.append(kwargs)
        if self.create_error is not None:
            raise self.create_error
        return self.container

    def run(self, **kwargs):
        raise AssertionError("run() may pull a missing image; the backend must use create()")


class FakeImages:
    def __init__(self, present):
        self.present = set(present)
        self.asked: list[str] = []

    def get(self, name):
        self.asked.append(name)
        if name not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return object()

    def pull(self, *args, **kwargs):
        raise AssertionError("the box is offline: the backend must never pull")


class FakeClient:
    def __init__(self, container=None, images=(IMAGE,), ping_error=None, create_error=None):
        self.container = container or FakeContainer()
        self.containers = FakeContainers(self.container, create_error)
        self.images = FakeImages(images)
        self.ping_error = ping_error
        self.pings = 0

    def ping(self):
        self.pings += 1
        if self.ping_error is not None:
            raise self.ping_error
        return True


def backend_for(client, image=IMAGE):
    return DockerBackend(image, client_factory=lambda: client)


def request_in(tmp_path, **kwargs):
    return SandboxRequest(argv=("python", "-m", "pytest", "-q"), cwd=tmp_path, **kwargs)


def created_kwargs(client):
    assert len(client.containers.created) == 1
    return client.containers.created[0]


# -- the container's settings ------------------------------------------------------------


def test_container_is_created_with_every_confinement_setting(tmp_path):
    client = FakeClient(FakeContainer(exit_code=0, logs=b"ok\n"))
    limits = Limits(
        wall_s=42.0,
        cpu_s=30.2,
        memory_mb=512,
        processes=64,
        file_size_mb=8,
        open_files=256,
        tmp_mb=128,
    )
    result = backend_for(client).run(request_in(tmp_path, limits=limits, env={"FOO": "bar"}))

    kw = created_kwargs(client)
    assert kw["image"] == IMAGE
    assert kw["command"] == ["python", "-m", "pytest", "-q"]
    assert kw["working_dir"] == str(tmp_path)
    assert kw["environment"] == {
        "FOO": "bar",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
    }
    assert kw["network_mode"] == "none"
    assert kw["read_only"] is True
    assert kw["security_opt"] == ["no-new-privileges"]
    assert kw["cap_drop"] == ["ALL"]
    assert kw["mem_limit"] == "512m"
    assert kw["memswap_limit"] == "512m"
    assert kw["pids_limit"] == 64
    assert kw["ulimits"] == [
        docker.types.Ulimit(name="cpu", soft=31, hard=31),
        docker.types.Ulimit(name="fsize", soft=8 << 20, hard=8 << 20),
        docker.types.Ulimit(name="nofile", soft=256, hard=256),
        docker.types.Ulimit(name="core", soft=0, hard=0),
    ]
    assert all(isinstance(u, docker.types.Ulimit) for u in kw["ulimits"])
    assert kw["tmpfs"] == {"/tmp": "size=128m,mode=1777"}
    assert kw["volumes"] == {}
    assert kw["user"] == f"{os.getuid()}:{os.getgid()}"
    assert kw["detach"] is True
    assert kw["auto_remove"] is False
    assert kw["stdin_open"] is False
    assert kw["init"] is True

    container = client.container
    assert container.called("wait") == [("wait", 42.0)]
    assert container.called("logs") == [("logs", True, True)]
    assert container.called("remove") == [("remove", True)]
    assert result.returncode == 0
    assert result.output == "ok\n"
    assert result.limit is None
    assert not result.truncated
    assert result.backend == "docker"
    assert result.duration_s >= 0


def test_the_real_sdk_accepts_the_settings_and_builds_the_host_config(tmp_path):
    client = FakeClient()
    request = request_in(
        tmp_path, binds=(Bind(tmp_path, writable=True),), limits=Limits(memory_mb=256)
    )
    kwargs = backend_for(client).container_kwargs(request)

    # The conversion containers.create() does; it raises on any keyword it does not know.
    created = _create_container_args(dict(kwargs, version="1.45"))

    host = created["host_config"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 256 << 20
    assert host["PidsLimit"] == 256
    assert host["Init"] is True
    assert not host.get("AutoRemove")  # the SDK leaves the default (False) out
    assert host["Tmpfs"] == {"/tmp": "size=1024m,mode=1777"}
    assert host["Binds"] == [f"{tmp_path}:{tmp_path}:rw"]
    assert {u["Name"] for u in host["Ulimits"]} == {"cpu", "fsize", "nofile", "core"}
    assert created["user"] == f"{os.getuid()}:{os.getgid()}"
    assert created["image"] == IMAGE
    assert created["stdin_open"] is False


def test_binds_map_to_the_same_path_read_only_or_writable(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    client = FakeClient()
    binds = (Bind(src), Bind(out, writable=True), Bind(Path("/opt/forge/python")))
    backend_for(client).run(request_in(tmp_path, binds=binds))

    assert created_kwargs(client)["volumes"] == {
        str(src): {"bind": str(src), "mode": "ro"},
        str(out): {"bind": str(out), "mode": "rw"},
        "/opt/forge/python": {"bind": "/opt/forge/python", "mode": "ro"},
    }


def test_path_from_the_request_is_kept_and_home_stays_in_tmp(tmp_path):
    client = FakeClient()
    env = {"PATH": "/venv/bin:/usr/bin", "HOME": "/root"}
    backend_for(client).run(request_in(tmp_path, env=env))

    environment = created_kwargs(client)["environment"]
    assert environment["PATH"] == "/venv/bin:/usr/bin"
    assert environment["HOME"] == "/tmp"
    assert environment["TMPDIR"] == "/tmp"


# -- how a run ends ----------------------------------------------------------------------


def test_wait_timeout_kills_the_container_and_reports_wall_time(tmp_path):
    container = FakeContainer(
        logs=b"still running\n", wait_error=requests.exceptions.ReadTimeout("read timed out")
    )
    client = FakeClient(container)
    result = backend_for(client).run(request_in(tmp_path, limits=Limits(wall_s=5)))

    assert container.called("kill") == [("kill",)]
    assert container.called("remove") == [("remove", True)]
    assert result.limit == "wall_time"
    assert result.returncode == 137
    assert result.output == "still running\n"
    assert result.backend == "docker"
    assert "wall-time" in result.describe()


def test_a_connection_error_at_the_limit_is_a_wall_timeout(tmp_path):
    # urllib3 can surface a read timeout on the socket as a requests ConnectionError.
    container = FakeContainer(wait_error=requests.exceptions.ConnectionError("read timed out"))
    client = FakeClient(container)
    result = backend_for(client).run(request_in(tmp_path, limits=Limits(wall_s=0.0)))

    assert container.called("kill") == [("kill",)]
    assert result.limit == "wall_time"
    assert result.returncode == 137


def test_a_connection_lost_well_before_the_limit_is_an_engine_error(tmp_path):
    container = FakeContainer(wait_error=requests.exceptions.ConnectionError("connection reset"))
    client = FakeClient(container)
    with pytest.raises(SandboxError, match="docker engine is unreachable"):
        backend_for(client).run(request_in(tmp_path, limits=Limits(wall_s=600)))

    assert container.called("kill") == []
    assert container.called("remove") == [("remove", True)]


def test_oom_killed_reports_memory(tmp_path):
    container = FakeContainer(exit_code=137, oom=True)
    client = FakeClient(container)
    result = backend_for(client).run(request_in(tmp_path))

    assert container.called("reload") == [("reload",)]
    assert result.limit == "memory"
    assert result.returncode == 137
    assert result.stopped


@pytest.mark.parametrize(("code", "limit"), [(152, "cpu_time"), (153, "file_size"), (1, None)])
def test_rlimit_signals_map_to_their_limits(tmp_path, code, limit):
    client = FakeClient(FakeContainer(exit_code=code))
    result = backend_for(client).run(request_in(tmp_path))

    assert result.returncode == code
    assert result.limit == limit


def test_long_output_keeps_head_and_tail(tmp_path):
    half = 512 << 10
    middle = 2 << 20
    data = b"H" * half + b"m" * middle + b"T" * half
    client = FakeClient(FakeContainer(logs=data))
    result = backend_for(client).run(request_in(tmp_path))

    head, marker, tail = result.output.partition(f"\n[... {middle} bytes not shown ...]\n")
    assert marker
    assert head == "H" * half
    assert tail == "T" * half
    assert result.truncated
    assert result.limit is None  # 3 MiB is under the default 64 MiB output limit


def test_output_over_the_limit_is_reported(tmp_path):
    client = FakeClient(FakeContainer(logs=b"x" * 5000))
    result = backend_for(client).run(request_in(tmp_path, limits=Limits(output_bytes=4096)))

    assert result.limit == "output"
    assert not result.truncated
    assert len(result.output) == 5000


def test_output_at_one_mebibyte_is_kept_whole(tmp_path):
    client = FakeClient(FakeContainer(logs=b"y" * (1 << 20)))
    result = backend_for(client).run(request_in(tmp_path))

    assert not result.truncated
    assert len(result.output) == 1 << 20


def test_container_is_removed_even_when_wait_raises(tmp_path):
    container = FakeContainer(wait_error=RuntimeError("something unexpected"))
    client = FakeClient(container)
    with pytest.raises(RuntimeError):
        backend_for(client).run(request_in(tmp_path))

    assert container.called("remove") == [("remove", True)]


def test_a_docker_error_while_waiting_is_a_sandbox_error_and_still_removes(tmp_path):
    container = FakeContainer(
        wait_error=docker.errors.APIError("500 Server Error"),
        remove_error=docker.errors.NotFound("No such container"),
    )
    client = FakeClient(container)
    with pytest.raises(SandboxError, match="docker failed to run the sandbox"):
        backend_for(client).run(request_in(tmp_path))

    assert container.called("remove") == [("remove", True)]


def test_a_container_already_gone_at_removal_is_fine(tmp_path):
    container = FakeContainer(logs=b"done\n", remove_error=docker.errors.NotFound("gone"))
    result = backend_for(FakeClient(container)).run(request_in(tmp_path))

    assert result.output == "done\n"


def test_run_with_a_missing_image_never_pulls(tmp_path):
    client = FakeClient(images=(), create_error=docker.errors.ImageNotFound("No such image"))
    with pytest.raises(SandboxError, match="not present") as caught:
        backend_for(client).run(request_in(tmp_path))

    assert "docker load" in caught.value.hint


# -- check() -----------------------------------------------------------------------------


def test_check_passes_when_the_engine_answers_and_the_image_is_loaded():
    client = FakeClient()
    backend_for(client).check()

    assert client.pings == 1
    assert client.images.asked == [IMAGE]


@pytest.mark.parametrize(
    "error",
    [
        docker.errors.DockerException("Error while fetching server API version"),
        requests.exceptions.ConnectionError("Connection refused"),
    ],
)
def test_check_names_an_unreachable_engine(error):
    with pytest.raises(SandboxError, match="docker engine is unreachable") as caught:
        backend_for(FakeClient(ping_error=error)).check()

    assert "daemon" in caught.value.hint


def test_check_names_an_engine_the_client_cannot_reach_at_all():
    def factory():
        raise docker.errors.DockerException("Error while fetching server API version")

    with pytest.raises(SandboxError, match="docker engine is unreachable"):
        DockerBackend(IMAGE, client_factory=factory).check()


def test_check_names_a_missing_image_and_says_to_load_it():
    client = FakeClient(images=("other:latest",))
    with pytest.raises(SandboxError, match="forge-sandbox:test") as caught:
        backend_for(client).check()

    assert "not present" in caught.value.message
    assert "docker load" in caught.value.hint


def test_check_names_a_missing_image_setting():
    client = FakeClient()
    with pytest.raises(SandboxError, match="no image configured") as caught:
        backend_for(client, image="").check()

    assert "sandbox.docker_image" in caught.value.hint
    assert client.pings == 0


def test_check_names_a_missing_sdk(monkeypatch):
    monkeypatch.setattr(docker_backend, "docker_sdk", None)
    with pytest.raises(SandboxError, match="SDK is not installed"):
        backend_for(FakeClient()).check()


def test_check_with_the_real_sdk_and_no_engine_is_a_sandbox_error():
    def factory():
        return docker.DockerClient(base_url="unix:///nonexistent.sock")

    backend = DockerBackend(IMAGE, client_factory=factory)
    with pytest.raises(SandboxError, match="docker engine is unreachable") as caught:
        backend.check()

    assert "start the docker daemon" in str(caught.value)
