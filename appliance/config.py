"""Where Forge keeps its state (FORGE_HOME) and its settings (forge.toml).

Every key has a default, so Forge runs with no config file at all. The file is looked
for at $FORGE_CONFIG, then $FORGE_HOME/forge.toml, then /etc/forge/forge.toml.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from appliance.errors import ConfigError, validation_problems

FORGE_ROOT = Path(__file__).resolve().parent.parent
SYSTEM_CONFIG = Path("/etc/forge/forge.toml")
STATE_DIRS = (
    "ingest",
    "quarantine",
    "corpus",
    "worktrees",
    "envs",
    "adapters",
    "datasets",
    "runs",
    "backups",
)
# The five stages, in pipeline order (appliance.stages has their prompts and schemas);
# here because forge.toml names them.
STAGES = ("task_analysis", "scope", "precision", "plan", "code")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackageLimits(_Section):
    """Limits a repo package must stay within to be accepted."""

    max_file_mb: float = Field(100, gt=0, description="largest single file")
    max_total_mb: float = Field(8192, gt=0, description="whole package on disk")
    max_wheel_uncompressed_mb: float = Field(2048, gt=0, description="one wheel, unpacked")
    max_compression_ratio: float = Field(
        200, gt=1, description="unpacked/packed size of a wheel member above 1 MiB"
    )
    max_commits: int = Field(5000, gt=0)
    dry_run_timeout_s: float = Field(
        300, gt=0, description="test collection (the environment: harness.env_timeout_s)"
    )


class DataPackageLimits(_Section):
    """Limits a data package (a teacher's rows, docs/data-package.md) must stay within."""

    max_file_mb: float = Field(64, gt=0, description="one rows file (STAGE.jsonl)")
    max_total_mb: float = Field(256, gt=0, description="the whole package")
    max_rows: int = Field(100_000, gt=0, description="rows in one package, all stages")
    max_row_kb: float = Field(512, gt=0, description="one row (a JSONL line)")


class IngestSettings(_Section):
    quiet_seconds: float = Field(
        30, ge=0, description="a package is complete once nothing in it changed for this long"
    )


class JobNeeds(_Section):
    """What each heavy job kind may write at most, in GB: the disk-pressure guard wants
    this much free on top of doctor.min_free_gb before the job starts."""

    cycle: float = Field(4, ge=0, description="a whole cycle: campaign, training, evaluation")
    campaign: float = Field(1, ge=0, description="worktrees, environments, the index")
    train: float = Field(3, ge=0, description="checkpoints, the adapter, its GGUF export")
    evaluate: float = Field(1, ge=0)
    promote: float = Field(1, ge=0, description="a gated promote evaluates first")


class DoctorSettings(_Section):
    min_free_gb: float = Field(
        5, ge=0, description="the floor: heavy work and ingest wait while less is free"
    )
    job_need_gb: JobNeeds = JobNeeds()


class ModelSettings(_Section):
    manifest: str = Field("", description="models.toml; default: models/ of the Forge install")


class SandboxSettings(_Section):
    """How repository code is confined; the limits apply to every run."""

    backend: Literal["bwrap", "docker"] = "bwrap"
    docker_image: str = Field(
        "", description="docker backend: an image holding Forge's Python at the same path"
    )
    memory_mb: int = Field(4096, ge=64, description="resident memory of the whole run")
    processes: int = Field(256, ge=8, description="live processes in one run")
    cpu_s: float = Field(0, ge=0, description="CPU seconds per process; 0: the wall-time limit")
    file_size_mb: int = Field(1024, ge=1)
    open_files: int = Field(1024, ge=64)
    output_mb: int = Field(64, ge=1, description="combined output; more stops the run")
    tmp_mb: int = Field(1024, ge=16, description="size of the private /tmp")
    disk_mb: int = Field(2048, ge=16, description="MB one run may add to its worktree")
    shm_mb: int = Field(64, ge=1, description="size of the private /dev/shm")
    user: str = Field(
        "forge-sandbox", description="bwrap as root: the unprivileged user tests run as"
    )


class HarnessSettings(_Section):
    gold_runs: int = Field(3, ge=1, le=20, description="runs of the gold side; flips = flaky")
    env_timeout_s: float = Field(600, gt=0, description="building one environment")
    keep_worktrees: bool = Field(False, description="leave worktrees behind for debugging")


class IndexSettings(_Section):
    """The repository index: embedding of text chunks with MiniLM on the CPU."""

    threads: int = Field(0, ge=0, description="torch threads for embedding; 0: every usable core")
    batch_size: int = Field(32, ge=1, le=1024, description="chunks embedded per forward pass")


class CampaignSettings(_Section):
    samples: int = Field(3, ge=1, le=32, description="stage runs per commit")
    temperatures: list[float] = Field(
        [0.3, 0.7, 1.0], min_length=1, description="sample i decodes at temperatures[i % n]"
    )
    max_tokens: int = Field(256, ge=16, le=8192, description="per stage answer")
    context_tokens: int = Field(1536, ge=128, description="per stage context package")
    workers: int = Field(1, ge=1, le=64, description="processes running units at once")
    lockstep: bool = Field(
        True, description="a commit's samples run stage by stage together (batched decoding)"
    )
    devices: list[str] = Field(
        default_factory=lambda: ["all"],
        description='one worker process per device: GPU ids ("0"), CPU stand-ins ("cpu0"), '
        'or ["all"]: every GPU the job holds, when two or more; else `workers` processes',
    )


class DatasetSettings(_Section):
    """How training datasets are built and which may be trained on."""

    per_task_cap: int = Field(2, ge=1, description="rows one task may put in a dataset")
    replay: float = Field(0.15, ge=0.1, le=0.2, description="share of earlier rows in a run")
    max_token_limit_rate: float = Field(0.10, gt=0, le=1)
    max_runaway_rate: float = Field(0.05, gt=0, le=1)
    max_invalid_json_rate: float = Field(0.05, gt=0, le=1)
    max_empty_rate: float = Field(0.05, gt=0, le=1)
    min_critic_agreement: float = Field(
        0.6, ge=0, lt=1, description="critic labels are used when the Wilson lower bound of "
        "its agreement with the harness is above this"
    )  # fmt: skip
    critic_lambda: float = Field(
        1.0, ge=0, description="ensemble reward: mean − λ·variance of the judges' p"
    )
    critic_min_score: float = Field(
        0.6, gt=0.5, le=1, description="an answer's ensemble reward that earns it the label"
    )

    def limits(self) -> dict[str, float]:
        return {
            "token_limit": self.max_token_limit_rate,
            "runaway": self.max_runaway_rate,
            "invalid_json": self.max_invalid_json_rate,
            "empty": self.max_empty_rate,
        }


class EvaluationSettings(_Section):
    """Held-out evaluation and the promotion gate."""

    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the gate")
    min_effect: float = Field(
        0.02, ge=0, le=1, description="smallest improvement of a metric that counts"
    )
    bootstrap_resamples: int = Field(2000, ge=100, le=100_000, description="paired bootstrap")
    holdout_fraction: float = Field(
        0.2, ge=0, lt=1, description="commits of each train package held out of training"
    )
    eval_fraction: float = Field(
        0.15, ge=0, lt=1, description="packages without a split hint that become eval"
    )
    max_examples: int = Field(40, ge=1, description="examples per stage in one evaluation")
    min_tasks: int = Field(
        10, ge=1, description="fewer compared tasks than this: the verdict is insufficient"
    )
    max_regression: float = Field(
        0.05,
        ge=0,
        le=1,
        description="non-inferiority margin: no primary metric's lower bound of "
        "(candidate − active) may fall below −this",
    )
    max_tokens: int = Field(
        512, ge=16, le=8192, description="per answer: room for a whole labelled list"
    )
    seed: int = Field(0, ge=0, description="deterministic decoding and resampling")
    devices: list[str] = Field(
        default_factory=lambda: ["all"],
        description='runs spread over one worker process per device: GPU ids ("0"), CPU '
        'stand-ins ("cpu0"), or ["all"]: every GPU the job holds; fewer than two: '
        "one run after another in the evaluating process",
    )


class DaemonSettings(_Section):
    """forged's schedules (APScheduler; its job store is FORGE_HOME/scheduler.db)."""

    ingest_every_s: int = Field(30, ge=1, description="how often ingest/ is looked at")
    cycle_every_minutes: int = Field(360, ge=0, description="a whole cycle; 0: never")
    campaign_window: str = Field(
        "",
        pattern=r"^$|^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$",
        description="local HH:MM-HH:MM in which campaigns and cycles may start (it may wrap "
        "midnight); empty: any time",
    )
    backup_at: str = Field(
        "03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="daily backup, HH:MM local"
    )
    gc_at: str = Field(
        "04:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="daily `forge gc`, HH:MM"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="/metrics (Prometheus text) on 127.0.0.1; 0: off"
    )


class RetentionSettings(_Section):
    """What `forge gc` (daily in forged) may delete. Adapters, dataset versions, the
    corpus, gate decisions and the backups their own retention keeps are never deleted."""

    failed_run_days: float = Field(
        14, ge=0, description="a training run that never finished keeps its checkpoints this long"
    )
    env_unused_days: float = Field(
        30, ge=0, description="an environment no corpus commit needs goes after this long unused"
    )
    job_log_days: float = Field(30, ge=0, description="logs of finished jobs, crash logs")
    cycle_reports: int = Field(60, ge=1, description="the newest cycle reports kept")
    call_log_days: float = Field(
        90, ge=0, description="model calls nothing refers to are deleted after this long"
    )


class AlertSettings(_Section):
    """The alerts forged raises (docs/operations.md: what each means, what to do)."""

    command: str = Field(
        "", description="run with each raised or cleared alert as JSON on stdin (no shell)"
    )
    command_timeout_s: float = Field(30, gt=0, le=600)
    every_s: int = Field(60, ge=5, description="how often forged evaluates the rules")
    cycle_stale_hours: float = Field(48, ge=0, description="no cycle finished this long; 0: off")
    gate_cycles: int = Field(
        7, ge=0, description="this many deciding cycles in a row promoted nothing; 0: off"
    )
    min_free_gb: float = Field(10, ge=0, description="free disk under this raises an alert")
    backup_max_age_hours: float = Field(26, gt=0, description="the newest backup is older")


class CycleSettings(_Section):
    """`forge cycle` and the daemon's scheduled loop."""

    commits: int = Field(0, ge=0, description="new commits per package a cycle runs; 0: all")
    min_new_rows: int = Field(8, ge=1, description="new SFT rows a stage needs to train")
    min_dpo_pairs: int = Field(
        8,
        ge=1,
        description="pairs a stage's newest DPO version needs before DPO is trained on top "
        "of its SFT candidate",
    )
    dpo_max_steps: int = Field(
        0, ge=0, description="optimizer steps of a cycle's DPO run; 0: training.max_steps"
    )
    dpo_stages: list[str] | None = Field(
        None, description="the stages a cycle trains DPO for; unset: every one of stages"
    )
    stages: list[str] = Field(
        list(STAGES),
        min_length=1,
        description="the stages a cycle trains and evaluates",
    )

    @field_validator("stages", "dpo_stages")
    @classmethod
    def _known_stages(cls, value: list[str] | None) -> list[str] | None:
        unknown = [s for s in value or () if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; stages are {list(STAGES)}")
        return value


LORA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainingHyperparameters(_Section):
    """One LoRA training run: the adapter's shape, the optimisation, the run's safety net."""

    rank: int = Field(8, ge=1, le=1024, description="LoRA rank r")
    alpha: float = Field(0, ge=0, description="LoRA alpha; 0: 2 × rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(
        LORA_PROJECTIONS, min_length=1, description="the linear projections LoRA adapts"
    )
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    epochs: int = Field(1, ge=1, description="passes over the rows when max_steps is 0")
    max_steps: int = Field(0, ge=0, description="optimizer steps; 0: from epochs")
    batch_size: int = Field(1, ge=1, description="rows per forward pass")
    grad_accum: int = Field(4, ge=1, description="forward passes per optimizer step")
    max_seq_len: int = Field(1024, ge=16, description="tokens per row; the prompt is cut first")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps warming up")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="gradients are clipped to this norm")
    checkpoint_every: int = Field(20, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(3, ge=1, description="rolling checkpoints kept")
    max_recoveries: int = Field(3, ge=0, description="NaN/inf rollbacks before giving up")
    grokfast: bool = Field(False, description="EMA gradient filter g ← g + λ·EMA(g)")
    grokfast_alpha: float = Field(0.98, ge=0, lt=1, description="Grokfast EMA decay α")
    grokfast_lambda: float = Field(2.0, ge=0, description="Grokfast amplification λ")
    dpo_beta: float = Field(0.1, gt=0, description="DPO's KL strength β")
    seed: int = Field(0, ge=0, description="LoRA initialisation and data order")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0: torch's default")

    @property
    def lora_alpha(self) -> float:
        return self.alpha or 2.0 * self.rank


def _optional(field) -> object:
    """A field's type with its constraints (gt, min_length, …), made optional."""
    if not field.metadata:
        return field.annotation | None
    return Annotated[(field.annotation, *field.metadata)] | None


# Per-stage overrides: every hyperparameter, optional, with the same constraints.
StageTraining = create_model(
    "StageTraining",
    __base__=_Section,
    **{
        name: (_optional(field), None)
        for name, field in TrainingHyperparameters.model_fields.items()
    },
)


class TrainingSettings(TrainingHyperparameters):
    """Defaults for every stage, and `[training.stages.NAME]` tables overriding some keys."""

    stages: dict[str, StageTraining] = Field(default_factory=dict)

    def for_stage(self, stage: str) -> TrainingSettings:
        """These settings with `stage`'s overrides applied (none: the defaults)."""
        override = self.stages.get(stage)
        if override is None:
            return self.model_copy(update={"stages": {}})
        return self.model_copy(update={**override.model_dump(exclude_unset=True), "stages": {}})


class ServeSettings(_Section):
    """`forge serve`: the OpenAI-compatible endpoint over the model pool."""

    host: str = Field(
        "127.0.0.1", min_length=1, description="bind address; any but loopback needs API keys"
    )
    port: int = Field(8765, ge=0, le=65535, description="0: a free port, printed at start")
    queue: int = Field(8, ge=0, le=1024, description="requests waiting per base; more: 429")
    keys_file: str = Field(
        "", description="API keys (hashed, mode 0600); empty: FORGE_HOME/serve-keys.json"
    )
    gpus: list[int] = Field(
        default_factory=list, description="GPUs serving holds; forged's heavy jobs avoid them"
    )
    yield_to_jobs: bool = Field(
        False, description="answer 503 while forged runs a heavy job (a CPU box's cores)"
    )


class ForgeSettings(_Section):
    home: str = ""
    packages: PackageLimits = PackageLimits()
    data_packages: DataPackageLimits = DataPackageLimits()
    ingest: IngestSettings = IngestSettings()
    doctor: DoctorSettings = DoctorSettings()
    models: ModelSettings = ModelSettings()
    sandbox: SandboxSettings = SandboxSettings()
    harness: HarnessSettings = HarnessSettings()
    campaign: CampaignSettings = CampaignSettings()
    datasets: DatasetSettings = DatasetSettings()
    index: IndexSettings = IndexSettings()
    training: TrainingSettings = TrainingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    cycle: CycleSettings = CycleSettings()
    daemon: DaemonSettings = DaemonSettings()
    serve: ServeSettings = ServeSettings()
    retention: RetentionSettings = RetentionSettings()
    alerts: AlertSettings = AlertSettings()


@dataclass(frozen=True)
class Config:
    """Settings plus the resolved paths every module uses."""

    home: Path
    source: Path | None  # the forge.toml read, None when running on defaults
    settings: ForgeSettings

    @property
    def db_path(self) -> Path:
        return self.home / "forge.db"

    @property
    def models_manifest(self) -> Path:
        if self.settings.models.manifest:
            return Path(self.settings.models.manifest)
        return FORGE_ROOT / "models" / "models.toml"

    @property
    def serve_keys_file(self) -> Path:
        """Where `forge serve` keeps its API keys (hashed)."""
        if self.settings.serve.keys_file:
            return Path(self.settings.serve.keys_file).expanduser()
        return self.home / "serve-keys.json"

    def dir(self, name: str) -> Path:
        if name not in STATE_DIRS:
            raise ValueError(f"unknown state directory {name!r}")
        return self.home / name

    def ensure_dirs(self) -> None:
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            for name in STATE_DIRS:
                (self.home / name).mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the state directory {exc.filename}: {exc.strerror}",
                "set FORGE_HOME to a writable folder, or fix its owner and permissions",
            ) from exc


MAX_CONFIG_BYTES = 1 << 20  # a forge.toml is a few hundred lines; more is not one


def _read_toml(path: Path) -> dict:
    hint = "fix the syntax or remove the file"
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a forge.toml",
                          hint)  # fmt: skip
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not text (not UTF-8 at byte {exc.start})", hint) from exc
    # TOMLDecodeError is a ValueError, as is the int() of a number too long to convert.
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint) from exc
    except RecursionError as exc:  # arrays or inline tables nested thousands deep
        raise ConfigError(f"{path} is not valid TOML: it nests too deep", hint) from exc


def _default_home() -> Path:
    # Under systemd (the daemon's unit sets STATE_DIRECTORY) state lives in /var/lib/forge.
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "forge"


def _config_file(home: Path | None) -> Path | None:
    explicit = os.environ.get("FORGE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"FORGE_CONFIG names {path}, which does not exist")
        return path
    candidates = ([home / "forge.toml"] if home else []) + [SYSTEM_CONFIG]
    return next((p for p in candidates if p.is_file()), None)


def load_config() -> Config:
    """Resolve FORGE_HOME and read forge.toml (if any), validating every key."""
    env_home = os.environ.get("FORGE_HOME")
    home = Path(env_home).expanduser() if env_home else None
    source = _config_file(home)
    raw = _read_toml(source) if source else {}
    try:
        settings = ForgeSettings.model_validate(raw)
    except ValidationError as exc:
        lines = validation_problems(exc)
        raise ConfigError(
            f"{source} has bad settings:\n    " + "\n    ".join(lines),
            "fix or remove these keys; every key has a default (see README, Configuration)",
        ) from exc
    if home is None:
        home = Path(settings.home).expanduser() if settings.home else _default_home()
    return Config(home=home.resolve(), source=source, settings=settings)
