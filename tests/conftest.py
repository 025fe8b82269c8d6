"""Shared fixtures: a FORGE_HOME per test, real git repositories, real packages."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.store import open_db

ROOT = Path(__file__).resolve().parent.parent
DEMO_WHEELS = ROOT / "repo_packages" / ".demo-wheels"
PYTEST_PINS = [
    line.strip()
    for line in (ROOT / "repo_packages" / "demo_source" / "requirements.txt")
    .read_text()
    .splitlines()
    if line.strip() and not line.startswith("#")
]
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@tests.invalid",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@tests.invalid",
}


def pytest_configure(config):
    """Under pytest-xdist (pyproject's addopts: `-n 2`), each worker is pinned to a core
    of its own.

    Forge's thread counts left at 0 follow the affinity (appliance.cores), so a worker's
    llama.cpp, torch and their subprocesses run on its one core and never spin threads
    against the other worker's: two workers on a 2-core machine, not four threads.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """The pinned pytest wheels the demo ships; install.sh gathers them."""
    if not all(
        any(DEMO_WHEELS.glob(f"{pin.split('==')[0]}-{pin.split('==')[1]}-*.whl"))
        for pin in PYTEST_PINS
    ):
        import sys

        sys.path.insert(0, str(ROOT / "repo_packages"))
        from build_demo import gather_wheels

        gather_wheels()
    return DEMO_WHEELS


@pytest.fixture
def forge_home(tmp_path, monkeypatch):
    """A fresh FORGE_HOME with a forge.toml (quiet period 0) and a migrated database."""
    home = tmp_path / "forge-home"
    home.mkdir()
    (home / "forge.toml").write_text("[ingest]\nquiet_seconds = 0\n")
    monkeypatch.setenv("FORGE_HOME", str(home))
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    config = load_config()
    config.ensure_dirs()
    return config


@pytest.fixture
def db(forge_home):
    database = open_db(forge_home)
    yield database
    database.close()


def git(repo: Path, *args: str, env: dict | None = None, stdin: str | None = None) -> str:
    full_env = {**os.environ, **GIT_ENV, **(env or {})}
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        input=stdin,
        check=True,
        capture_output=True,
        text=True,
        env=full_env,
    ).stdout.strip()


class RepoBuilder:
    """A real git repository in a temp dir, written commit by commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main", "--template=")
        self.tick = 0

    def commit(self, message: str, files: dict[str, str | None], author: str | None = None) -> str:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git(self.path, "add", "-A")
        self.tick += 1
        date = f"2024-01-01T{self.tick % 24:02d}:00:00+00:00"
        env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        if author:
            name, email = author.rsplit(" <", 1)
            env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email.rstrip(">"))
        git(self.path, "commit", "-q", "-m", message, env=env)
        return git(self.path, "rev-parse", "HEAD")


CALC_V1 = "def add(a, b):\n    return a + b\n"
CALC_V2 = CALC_V1 + "\n\ndef sub(a, b):\n    return a - b\n"
TEST_V1 = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
TEST_V2 = TEST_V1.replace("import add", "import add, sub") + (
    "\n\ndef test_sub():\n    assert sub(3, 2) == 1\n"
)
PYPROJECT = '[tool.pytest.ini_options]\npythonpath = ["src"]\ntestpaths = ["tests"]\n'


@pytest.fixture
def calc_repo(tmp_path) -> RepoBuilder:
    """A tiny real project: a root commit and one task commit (code + test)."""
    repo = RepoBuilder(tmp_path / "calc-src")
    repo.commit(
        "Create calculator with addition",
        {"pyproject.toml": PYPROJECT, "src/calc.py": CALC_V1, "tests/test_calc.py": TEST_V1},
    )
    repo.commit(
        "Add subtraction to the calculator", {"src/calc.py": CALC_V2, "tests/test_calc.py": TEST_V2}
    )
    return repo


def build(repo: RepoBuilder, output: Path, wheelhouse: Path, **options):
    from appliance.packages.build import BuildOptions, build_package

    opts = BuildOptions(
        source=str(repo.path),
        output=output,
        requirements=PYTEST_PINS,
        find_links=wheelhouse,
        **options,
    )
    return build_package(opts, cache_dir=output.parent / ".uv-cache")


@pytest.fixture
def calc_package(tmp_path, calc_repo, wheelhouse) -> Path:
    """A valid repo package built by the real builder from `calc_repo`."""
    return build(calc_repo, tmp_path / "calc-pkg", wheelhouse, name="calc", version="1.0").path


def copy_package(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)  # writable, so tests can tamper
    return dest


# Training fixtures: the dequantized default model and small LoRA adapters trained on it.
# torch, transformers and peft are imported inside them: they take seconds to import and
# most tests never train.

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_STEPS = 12  # at lr 3e-3 a 20-token sentence is learnt by heart (loss < 0.01)


@pytest.fixture(scope="session")
def training_base(tmp_path_factory) -> Path:
    """The shipped SmolLM2 GGUF as a plain HF checkpoint (made once per session)."""
    from appliance.models.default_model import shipped_gguf
    from appliance.models.hf_base import make_training_base

    return make_training_base(shipped_gguf(), tmp_path_factory.mktemp("training-base") / "base")


@pytest.fixture(scope="session")
def lora_factory(training_base, tmp_path_factory):
    """make(text, name, steps) → a GGUF LoRA adapter that has learnt to continue `text`.

    The PEFT adapter it was exported from lies beside it, in `path.parent / "peft"`.
    Each (text, name, steps) is trained once per session.
    """
    import hashlib

    root = tmp_path_factory.mktemp("adapters")
    made: dict[tuple[str, str, int], Path] = {}

    def make(text: str, name: str, steps: int = LORA_STEPS) -> Path:
        key = (text, name, steps)
        if key not in made:
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
            made[key] = _train_lora(training_base, text, root / f"{name}-{digest}", steps)
        return made[key]

    return make


class OneTorchThread:
    """Run torch on one thread inside the block.

    torch's OpenMP threads spin at barriers: on the shared 2-core machine, with another
    process busy, a training step took 6.8 s on 2 threads and 0.3 s on 1 (0.2 s on 2 idle).
    """

    def __enter__(self) -> None:
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc_info) -> None:
        import torch

        torch.set_num_threads(self.before)


def _train_lora(base: Path, text: str, workdir: Path, steps: int) -> Path:
    with OneTorchThread():
        return _train_lora_here(base, text, workdir, steps)


def _train_lora_here(base: Path, text: str, workdir: Path, steps: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from appliance.training.export_gguf import export_adapter

    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)  # lora_A's initialisation is random
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            bias="none",
            target_modules=LORA_TARGETS,
            task_type="CAUSAL_LM",
        ),
    )
    ids = tokenizer(text, return_tensors="pt").input_ids
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(workdir / "peft")
    return export_adapter(workdir / "peft", base, workdir / "adapter.gguf").path


def private_models(tmp_path: Path, monkeypatch) -> Path:
    """A models/ folder of the test's own, its models.toml naming the shipped SmolLM2 for
    every role, and FORGE_HOME/FORGE_CONFIG pointing at it: `forge models import` may
    change it freely. Returns the folder."""
    from appliance.digest import sha256_file
    from appliance.models.default_model import shipped_gguf

    models = tmp_path / "models"
    models.mkdir()
    gguf = shipped_gguf()
    (models / "models.toml").write_text(
        f'[bases.default]\npath = "{gguf}"\nsha256 = "{sha256_file(gguf)}"\n'
    )
    toml = tmp_path / "forge.toml"
    toml.write_text(f'[models]\nmanifest = "{models / "models.toml"}"\n')
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FORGE_CONFIG", str(toml))
    return models
