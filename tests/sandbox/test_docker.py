"""The docker backend: against a real engine (the `docker_image` fixture in conftest.py), and
against a fake client for the engine failures a real one cannot easily be made to show.

The fakes raise the SDK's real exception classes, and the container settings are also fed through
the real SDK's argument conversion, so a misspelt or unknown keyword fails here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import sys
import tarfile
import time
from pathlib import Path

import docker
import docker.errors
import docker.types
import pytest
import requests.exceptions
from click.testing import CliRunner
from docker.models.containers import _create_container_args

from appliance.cli import cli
from appliance.errors import SandboxError
from appliance.sandbox import backend_for as configured_backend
from appliance.sandbox import base_python, seccomp
from appliance.sandbox import docker as docker_backend
from appliance.sandbox.docker import DockerBackend
from appliance.sandbox.identity import sandbox_ids
from appliance.sandbox.image import (
    LABEL_DIGEST,
    LABEL_FROM,
    build_image,
    plan_image,
    write_tarball,
)
from appliance.sandbox.spec import Bind, Limits, SandboxRequest

IMAGE = "forge-sandbox:test"
IDS = (4242, 4343)
PYTHON = base_python()


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

    def logs(self, stdout=False, stderr=False, stream=False, follow=False):
        self.calls.append(("logs", stdout, stderr, stream, follow))
        return iter([self.log_data]) if stream else self.log_data

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


class FakeImage:
    def __init__(self, labels):
        self.labels = labels


class FakeImages:
    def __init__(self, present, labels=None):
        self.present = set(present)
        self.labels = labels or {}
        self.asked: list[str] = []

    def get(self, name):
        self.asked.append(name)
        if name not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return FakeImage(self.labels)

    def pull(self, *args, **kwargs):
        raise AssertionError("the box is offline: the backend must never pull")


class FakeClient:
    def __init__(
        self, container=None, images=(IMAGE,), ping_error=None, create_error=None, labels=None
    ):
        self.container = container or FakeContainer()
        self.containers = FakeContainers(self.container, create_error)
        self.images = FakeImages(images, labels)
        self.ping_error = ping_error
        self.pings = 0

    def ping(self):
        self.pings += 1
        if self.ping_error is not None:
            raise self.ping_error
        return True


def fake_backend(client, image=IMAGE):
    return DockerBackend(image, ids=IDS, client_factory=lambda: client)


def request_in(tmp_path, **kwargs):
    return SandboxRequest(argv=("python", "-m", "pytest", "-q"), cwd=tmp_path, **kwargs)


def created_kwargs(client):
    assert len(client.containers.created) == 1
    return client.containers.created[0]


# -- the container's settings (fake client) ----------------------------------------------


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
        shm_mb=32,
    )
    result = fake_backend(client).run(request_in(tmp_path, limits=limits, env={"FOO": "bar"}))

    kw = created_kwargs(client)
    assert kw["image"] == IMAGE
    # Forge's seccomp filter is stacked first by the image's interpreter, then the command runs.
    assert kw["command"][:4] == [PYTHON, "-I", "-S", "-c"]
    assert kw["command"][5] == seccomp.program().hex()
    assert kw["command"][6:] == ["python", "-m", "pytest", "-q"]
    assert kw["working_dir"] == str(tmp_path)
    assert kw["environment"] == {
        "FOO": "bar",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
    }
    assert kw["network_mode"] == "none"
    assert kw["ipc_mode"] == "private"
    assert kw["read_only"] is True
    assert kw["security_opt"] == ["no-new-privileges"]  # and so Docker's default seccomp
    assert kw["cap_drop"] == ["ALL"]
    assert kw["mem_limit"] == "512m"
    assert kw["memswap_limit"] == "512m"
    assert kw["shm_size"] == "32m"
    assert kw["pids_limit"] == 65  # and docker-init
    assert kw["ulimits"] == [
        docker.types.Ulimit(name="cpu", soft=31, hard=36),
        docker.types.Ulimit(name="fsize", soft=8 << 20, hard=8 << 20),
        docker.types.Ulimit(name="nofile", soft=256, hard=256),
        docker.types.Ulimit(name="core", soft=0, hard=0),
    ]
    assert kw["tmpfs"] == {"/tmp": "size=128m,mode=1777,nosuid,nodev"}
    assert kw["volumes"] == {}
    assert kw["user"] == "4242:4343"
    assert kw["detach"] is True
    assert kw["auto_remove"] is False
    assert kw["stdin_open"] is False
    assert kw["init"] is True

    container = client.container
    assert container.called("wait") == [("wait", 42.0 + docker_backend.WAIT_GRACE_S)]
    assert container.called("logs") == [("logs", True, True, True, True)]
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
    kwargs = fake_backend(client).container_kwargs(request)

    # The conversion containers.create() does; it raises on any keyword it does not know.
    created = _create_container_args(dict(kwargs, version="1.41"))

    host = created["host_config"]
    assert host["NetworkMode"] == "none"
    assert host["IpcMode"] == "private"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 256 << 20
    assert host["ShmSize"] == 64 << 20
    assert host["PidsLimit"] == 257
    assert host["Init"] is True
    assert not host.get("AutoRemove")  # the SDK leaves the default (False) out
    assert host["Binds"] == [f"{tmp_path}:{tmp_path}:rw"]
    assert {u["Name"] for u in host["Ulimits"]} == {"cpu", "fsize", "nofile", "core"}
    assert created["user"] == "4242:4343"
    assert created["image"] == IMAGE


def test_the_backend_never_runs_as_root():
    with pytest.raises(ValueError, match="never runs as uid or gid 0"):
        DockerBackend(IMAGE, ids=(0, 0))


def test_the_configured_backend_runs_as_the_sandbox_identity(forge_home):
    toml = forge_home.home / "forge.toml"
    toml.write_text(toml.read_text() + '[sandbox]\nbackend = "docker"\ndocker_image = "x:1"\n')
    from appliance.config import load_config

    config = load_config()
    backend = configured_backend(config)
    assert isinstance(backend, DockerBackend)
    assert (backend.uid, backend.gid) == sandbox_ids(config.settings.sandbox)
    assert backend.uid != 0


# -- engine failures (fake client) --------------------------------------------------------


def test_a_connection_lost_while_waiting_is_an_engine_error(tmp_path):
    container = FakeContainer(wait_error=requests.exceptions.ConnectionError("connection reset"))
    client = FakeClient(container)
    with pytest.raises(SandboxError, match="docker engine is unreachable"):
        fake_backend(client).run(request_in(tmp_path, limits=Limits(wall_s=600)))

    assert container.called("remove") == [("remove", True)]


def test_output_cut_off_by_the_engine_is_an_engine_error_not_a_short_result(tmp_path):
    class CutOff(FakeContainer):
        def logs(self, stdout=False, stderr=False, stream=False, follow=False):
            def chunks():
                yield b"first part\n"
                raise requests.exceptions.ConnectionError("connection reset by peer")

            return chunks()

    container = CutOff()
    with pytest.raises(SandboxError, match="docker engine is unreachable"):
        fake_backend(FakeClient(container)).run(request_in(tmp_path))

    assert container.called("remove") == [("remove", True)]


def test_container_is_removed_even_when_wait_raises(tmp_path):
    container = FakeContainer(wait_error=RuntimeError("something unexpected"))
    client = FakeClient(container)
    with pytest.raises(RuntimeError):
        fake_backend(client).run(request_in(tmp_path))

    assert container.called("remove") == [("remove", True)]


def test_a_docker_error_while_waiting_is_a_sandbox_error_and_still_removes(tmp_path):
    container = FakeContainer(
        wait_error=docker.errors.APIError("500 Server Error"),
        remove_error=docker.errors.NotFound("No such container"),
    )
    client = FakeClient(container)
    with pytest.raises(SandboxError, match="docker failed to run the sandbox"):
        fake_backend(client).run(request_in(tmp_path))

    assert container.called("remove") == [("remove", True)]


def test_a_container_already_gone_at_removal_is_fine(tmp_path):
    container = FakeContainer(logs=b"done\n", remove_error=docker.errors.NotFound("gone"))
    result = fake_backend(FakeClient(container)).run(request_in(tmp_path))

    assert result.output == "done\n"


def test_oom_killed_reports_memory(tmp_path):
    container = FakeContainer(exit_code=137, oom=True)
    result = fake_backend(FakeClient(container)).run(request_in(tmp_path))

    assert container.called("reload")
    assert result.limit == "memory"


def test_run_with_a_missing_image_never_pulls(tmp_path):
    client = FakeClient(images=(), create_error=docker.errors.ImageNotFound("No such image"))
    with pytest.raises(SandboxError, match="not present") as caught:
        fake_backend(client).run(request_in(tmp_path))

    assert "forge sandbox image build" in caught.value.hint


def test_check_passes_when_the_engine_answers_and_the_image_is_loaded():
    client = FakeClient()
    fake_backend(client).check()

    assert client.pings == 1
    assert client.images.asked == [IMAGE]


def test_check_refuses_an_image_built_for_another_python():
    labels = {LABEL_FROM: json.dumps({"python": "/opt/elsewhere/bin/python3.11"})}
    with pytest.raises(SandboxError, match="/opt/elsewhere") as caught:
        fake_backend(FakeClient(labels=labels)).check()

    assert "forge sandbox image build" in caught.value.hint


@pytest.mark.parametrize(
    "error",
    [
        docker.errors.DockerException("Error while fetching server API version"),
        requests.exceptions.ConnectionError("Connection refused"),
    ],
)
def test_check_names_an_unreachable_engine(error):
    with pytest.raises(SandboxError, match="docker engine is unreachable") as caught:
        fake_backend(FakeClient(ping_error=error)).check()

    assert "daemon" in caught.value.hint


def test_check_names_an_engine_the_client_cannot_reach_at_all():
    def factory():
        raise docker.errors.DockerException("Error while fetching server API version")

    with pytest.raises(SandboxError, match="docker engine is unreachable"):
        DockerBackend(IMAGE, client_factory=factory).check()


def test_check_names_a_missing_image_and_says_how_to_build_it():
    client = FakeClient(images=("other:latest",))
    with pytest.raises(SandboxError, match="forge-sandbox:test") as caught:
        fake_backend(client).check()

    assert "not present" in caught.value.message
    assert "forge sandbox image build" in caught.value.hint


def test_check_names_a_missing_image_setting():
    client = FakeClient()
    with pytest.raises(SandboxError, match="no image configured") as caught:
        fake_backend(client, image="").check()

    assert "sandbox.docker_image" in caught.value.hint
    assert client.pings == 0


def test_check_names_a_missing_sdk(monkeypatch):
    monkeypatch.setattr(docker_backend, "docker_sdk", None)
    with pytest.raises(SandboxError, match="SDK is not installed"):
        fake_backend(FakeClient()).check()


def test_check_with_the_real_sdk_and_no_engine_is_a_sandbox_error():
    def factory():
        return docker.DockerClient(base_url="unix:///nonexistent.sock")

    backend = DockerBackend(IMAGE, client_factory=factory)
    with pytest.raises(SandboxError, match="docker engine is unreachable") as caught:
        backend.check()

    assert "start the docker daemon" in str(caught.value)


def test_image_build_without_an_engine_is_a_clear_error():
    def factory():
        return docker.DockerClient(base_url="unix:///nonexistent.sock")

    with pytest.raises(SandboxError, match="docker engine is unreachable"):
        build_image("forge-sandbox:never", client_factory=factory)


def test_the_command_without_an_engine_says_so(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    result = CliRunner().invoke(cli, ["sandbox", "image", "build"])

    assert result.exit_code == 1
    assert "docker engine is unreachable" in result.output
    assert "Traceback" not in result.output


# -- the image ----------------------------------------------------------------------------


def test_the_image_holds_forges_interpreter_root_owned_and_nothing_setuid(tmp_path):
    plan = plan_image()
    assert Path(PYTHON) in plan.files
    assert any(p.name == "git" for p in plan.files)
    assert not any("site-packages/" in str(p) for p in plan.files)
    assert plan.built_from["python"] == PYTHON
    assert plan_image().digest == plan.digest  # the same machine plans the same image

    write_tarball(plan, tmp_path / "root.tar")
    with tarfile.open(tmp_path / "root.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert not [m.name for m in members.values() if m.mode & (stat.S_ISUID | stat.S_ISGID)]
    assert not [m.name for m in members.values() if m.isfile() and m.mode & 0o022]
    # Every directory above the interpreter can be passed by the sandbox's uid (/root is
    # 0700 on the host), and /tmp is a sticky mount point.
    parents = Path(PYTHON.lstrip("/")).parents
    assert all(members[str(d)].mode == 0o755 for d in parents if str(d) != ".")
    assert members["tmp"].mode == 0o1777
    assert "root:x:0:0" in tar_text(tmp_path / "root.tar", "etc/passwd")


def tar_text(path: Path, name: str) -> str:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read().decode()


def test_the_command_builds_the_image_and_is_idempotent(docker_image):
    runner = CliRunner()
    result = runner.invoke(cli, ["sandbox", "image", "build", "--tag", docker_image, "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["built"] is False  # the session fixture built it with the same code
    assert made["tag"] == docker_image
    assert 'backend = "docker"' in made["forge_toml"]
    assert f'docker_image = "{docker_image}"' in made["forge_toml"]

    image = docker.from_env().images.get(docker_image)
    assert image.labels[LABEL_DIGEST] == made["digest"]
    assert json.loads(image.labels[LABEL_FROM])["python"] == PYTHON

    text = runner.invoke(cli, ["sandbox", "image", "build", "--tag", docker_image])
    assert text.exit_code == 0
    assert "already up to date" in text.output
    assert "sandbox.docker_image" not in text.output  # it prints the toml lines themselves
    assert f'docker_image = "{docker_image}"' in text.output


# -- against the real engine ---------------------------------------------------------------


def run_in(config, tmp_path, script: str, **limits):
    """Run `script` with Forge's interpreter in the configured docker sandbox."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    backend = configured_backend(config)
    backend.check()
    request = SandboxRequest(
        argv=(PYTHON, "-c", script),
        cwd=work,
        binds=(Bind(work, writable=True),),
        limits=dataclasses.replace(Limits.from_settings(config.settings.sandbox, 30.0), **limits),
    )
    return backend.run(request), work


CONFINED = r"""
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
print("ids", os.getuid(), os.getgid(), os.getgroups())
print("caps", status["CapEff"].strip(), status["CapBnd"].strip())
print("nnp", status["NoNewPrivs"].strip(), "seccomp", status["Seccomp"].strip(),
      status.get("Seccomp_filters", "?").strip())
print("io_uring", libc.syscall(425, 1, ctypes.create_string_buffer(120)), ctypes.get_errno())
print("add_key", libc.syscall(248, b"user", b"k", b"v", 1, -3), ctypes.get_errno())
print("userns", libc.syscall(272, 0x10000000), ctypes.get_errno())
print("ifaces", sorted(n for _, n in socket.if_nameindex()))
for path in ("/usr/forge-was-here", "/proc/sys/kernel/core_pattern"):
    try:
        open(path, "a").close()
        print("writable", path)
    except OSError as exc:
        print("refused", path, exc.errno)
shm = os.statvfs("/dev/shm")
print("shm", shm.f_blocks * shm.f_frsize)
print("home", os.path.exists(os.environ["PROBE_HOME"]))
open("mine", "w").write("x")
os.chmod("mine", 0o4755)
"""


def test_a_real_container_is_confined(docker_sandbox_config, tmp_path):
    config = docker_sandbox_config
    script = CONFINED.replace('os.environ["PROBE_HOME"]', repr(str(config.home)))
    result, work = run_in(config, tmp_path, script, shm_mb=16)

    assert result.returncode == 0, result.output
    lines = dict(line.split(" ", 1) for line in result.output.splitlines())
    uid, gid = sandbox_ids(config.settings.sandbox)
    assert uid != 0
    assert lines["ids"] in (f"{uid} {gid} []", f"{uid} {gid} [{gid}]")  # no group of the host
    assert lines["caps"] == "0000000000000000 0000000000000000"
    assert lines["nnp"] == "1 seccomp 2 2"  # Docker's default profile and Forge's filter
    assert lines["io_uring"] == "-1 1"  # EPERM: Docker 20.10's profile alone allows it
    assert lines["add_key"] == "-1 1"
    assert lines["userns"] == "-1 1"
    assert lines["ifaces"] == "['lo']"
    assert "writable" not in lines
    refused = [line.split()[1] for line in result.output.splitlines() if line.startswith("refused")]
    assert refused == ["/usr/forge-was-here", "/proc/sys/kernel/core_pattern"]
    assert lines["shm"] == str(16 << 20)
    assert lines["home"] == "False"  # FORGE_HOME is not there
    # The file the run made is Forge's again, without its setuid bit.
    made = (work / "mine").stat()
    assert (made.st_uid, made.st_gid) == (os.getuid(), os.getgid())
    assert not made.st_mode & stat.S_ISUID


def test_wall_time_kills_the_container(docker_sandbox_config, tmp_path):
    result, _ = run_in(
        docker_sandbox_config, tmp_path, "import time; print('up', flush=True); time.sleep(60)",
        wall_s=2.0,
    )  # fmt: skip
    assert result.limit == "wall_time"
    assert result.returncode == 137
    assert result.duration_s < 15
    assert "up" in result.output


def test_memory_and_shm_bytes_count_against_the_memory_limit(docker_sandbox_config, tmp_path):
    # /dev/shm may be larger than the memory limit; its pages are charged to the container.
    script = (
        "import os\n"
        "with open('/dev/shm/fill', 'wb') as fh:\n"
        "    for _ in range(200):\n"
        "        fh.write(os.urandom(1 << 20))\n"
        "print('survived')\n"
    )
    result, _ = run_in(docker_sandbox_config, tmp_path, script, memory_mb=96, shm_mb=256)

    assert result.limit == "memory", result.output
    assert "survived" not in result.output


def test_the_disk_cap_stops_a_run_that_writes_too_much(docker_sandbox_config, tmp_path):
    script = (
        "import os\n"
        "for i in range(400):\n"
        "    with open(f'blob{i}', 'wb') as fh:\n"
        "        fh.write(os.urandom(1 << 20))\n"
        "print('wrote it all')\n"
    )
    result, work = run_in(docker_sandbox_config, tmp_path, script, disk_mb=16, file_size_mb=4)

    assert result.limit == "disk", result.output
    assert "wrote it all" not in result.output
    assert sum(p.stat().st_size for p in work.iterdir()) < 200 << 20


def test_output_past_the_limit_is_stopped_and_long_output_keeps_head_and_tail(
    docker_sandbox_config, tmp_path
):
    flood = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result, _ = run_in(docker_sandbox_config, tmp_path, flood, output_bytes=4 << 20)
    assert result.limit == "output"
    assert result.truncated

    long = "import sys\nsys.stdout.write('H' * (1 << 20) + 'T' * (1 << 20))\n"
    result, _ = run_in(docker_sandbox_config, tmp_path, long)
    assert result.limit is None
    assert result.truncated
    assert result.output.startswith("H" * 1000)
    assert result.output.endswith("T" * 1000)
    assert "bytes not shown" in result.output


def test_rlimits_end_the_run_with_their_limit(docker_sandbox_config, tmp_path):
    result, _ = run_in(docker_sandbox_config, tmp_path, "while True: pass", cpu_s=1.0)
    assert result.limit == "cpu_time", result
    assert result.returncode == 152  # SIGXCPU

    # Python ignores SIGXFSZ (the write fails with EFBIG instead); the shell does not.
    work = tmp_path / "work"
    backend = configured_backend(docker_sandbox_config)
    result = backend.run(
        SandboxRequest(
            argv=("sh", "-c", "head -c 8388608 /dev/zero > big"),
            cwd=work,
            binds=(Bind(work, writable=True),),
            limits=Limits(file_size_mb=2, wall_s=30),
        )
    )
    assert result.limit == "file_size", result
    assert (work / "big").stat().st_size == 2 << 20

    # Nothing is left ignored by the interpreter that stacks the seccomp filter.
    result = backend.run(SandboxRequest(argv=("grep", "SigIgn", "/proc/self/status"), cwd=work))
    assert result.output.split() == ["SigIgn:", "0000000000000000"]


def test_a_fork_bomb_meets_the_pids_limit_and_ends_as_processes(docker_sandbox_config, tmp_path):
    bomb = "import os, time\nwhile True:\n    try: os.fork()\n    except OSError: time.sleep(0.01)"
    result, _ = run_in(docker_sandbox_config, tmp_path, bomb, processes=32, wall_s=60)
    assert result.limit == "processes", result
    assert result.duration_s < 30


def test_a_missing_command_is_exit_127_not_a_crash(docker_sandbox_config, tmp_path):
    backend = configured_backend(docker_sandbox_config)
    result = backend.run(SandboxRequest(argv=("no-such-program",), cwd=Path("/")))
    assert result.returncode == 127
    assert "no-such-program" in result.output


def test_an_image_that_is_not_there_is_refused_without_a_pull(docker_image, tmp_path):
    backend = DockerBackend("forge-sandbox:no-such-tag", ids=IDS)
    with pytest.raises(SandboxError, match="not present"):
        backend.check()


# -- the harness on docker -----------------------------------------------------------------

WHITESPACE = "Strip surrounding whitespace before parsing quantities"


@contextlib.contextmanager
def _demo_home(path: Path, toml: str):
    """(config, db) of a FORGE_HOME at `path` holding the demo package."""
    from tests.harness.conftest import DEMO, ingest_package, make_home

    if not (DEMO / "manifest.json").is_file():
        pytest.fail("repo_packages/demo is missing: run ./install.sh (it builds the demo)")
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(path, monkeypatch, "[harness]\ngold_runs = 1\n" + toml)
        ingest_package(config, db, DEMO)
        try:
            yield config, db
        finally:
            db.close()


def _whitespace_task(config, db):
    from appliance.harness.results import gold_for
    from appliance.harness.spec import commit_specs

    spec = next(s for s in commit_specs(config, db, "demo") if s.message.startswith(WHITESPACE))
    gold, _ = gold_for(config, db, spec)
    return spec, gold


@pytest.fixture(scope="module")
def docker_demo(docker_image, tmp_path_factory):
    """(config, spec, gold) of the demo's whitespace commit, graded on the docker backend;
    the events the engine saw meanwhile show that containers of the image did the work."""
    client = docker.from_env()
    since = int(time.time()) - 1
    toml = f'[sandbox]\nbackend = "docker"\ndocker_image = "{docker_image}"\n'
    with _demo_home(tmp_path_factory.mktemp("docker") / "home", toml) as (config, db):
        spec, gold = _whitespace_task(config, db)
        events = client.events(
            since=since, until=int(time.time()) + 1, filters={"event": "create"}, decode=True
        )
        created = [e for e in events if e.get("from") == docker_image]
        yield config, spec, gold, created


def test_grading_a_demo_commit_on_docker_matches_bwrap(docker_demo, tmp_path):
    _, _, gold, created = docker_demo
    # The ingest's test collection, the run before the commit and the gold run at least.
    assert len(created) >= 3
    with _demo_home(tmp_path / "home", '[sandbox]\nbackend = "bwrap"\n') as (config, db):
        _, on_bwrap = _whitespace_task(config, db)

    assert gold.status == "ok" and gold.usable, gold
    assert gold.fail_to_pass == ("tests/test_parser.py::test_ignores_surrounding_whitespace",)
    assert (gold.fail_to_pass, gold.pass_to_pass, gold.flaky) == (
        on_bwrap.fail_to_pass,
        on_bwrap.pass_to_pass,
        on_bwrap.flaky,
    )


def test_patches_are_graded_on_docker_and_a_forged_report_is_tampered(docker_demo):
    from appliance.harness.grading import grade_patch
    from tests.harness.test_tamper import STRIP_FAILURES, WRITE_THE_FIFO, _fix, _hooked

    config, spec, gold, _ = docker_demo
    resolved = grade_patch(config, spec, gold, "search_replace", [_fix(spec)])
    assert resolved.verdict == "resolved", resolved
    for attack in (STRIP_FAILURES, WRITE_THE_FIFO):
        verdict = grade_patch(config, spec, gold, "search_replace", _hooked(attack))
        assert verdict.verdict == "tampered", verdict
        assert not verdict.resolved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
