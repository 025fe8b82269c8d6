"""The `forge` command: the click group and the error boundary, nothing else of substance.

Each group of commands lives in its own module; every ForgeError reaching here is
printed as a message with its fix, never as a traceback. Exit codes: 0 success,
1 the work failed or found problems, 2 bad usage, 70 a bug in Forge
(the traceback is saved under FORGE_HOME/runs/).
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

import click

from appliance.cli import (
    backup,
    campaign,
    daemon_jobs,
    dashboard,
    datapackages,
    datasets,
    evaluation,
    harness,
    models,
    packages,
    registry,
    sandbox,
    serve,
    solve,
    state,
    teacher,
    training,
    upkeep,
)
from appliance.config import load_config
from appliance.errors import ForgeError


class ForgeGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ForgeError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  → {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was left half-done (re-run to resume)", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # the last boundary: a bug must not show the operator a traceback
            where = _save_traceback()
            click.secho(f"internal error: {type(exc).__name__}: {exc}", fg="red", err=True)
            click.echo(f"  → this is a bug in Forge; the details are in {where}", err=True)
            ctx.exit(70)


def _save_traceback() -> str:
    text = traceback.format_exc()
    try:
        folder = load_config().dir("runs")
        folder.mkdir(parents=True, exist_ok=True)
    except Exception:  # config itself may be what broke
        folder = Path(tempfile.gettempdir())
    path = folder / f"crash-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.log"
    path.write_text(text)
    return str(path)


@click.group(cls=ForgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="forge-appliance", prog_name="forge")
def cli() -> None:
    """Forge: an air-gapped appliance that makes local code models better at real repos.

    State lives in FORGE_HOME (default ~/.local/share/forge, /var/lib/forge under
    systemd); settings in forge.toml. `forge doctor` checks the box.
    """


def _register() -> None:
    cli.add_command(packages.package)
    cli.add_command(packages.ingest)
    cli.add_command(datapackages.data_package)
    cli.add_command(teacher.teacher)
    cli.add_command(state.init)
    cli.add_command(state.status)
    cli.add_command(state.doctor)
    cli.add_command(harness.harness)
    cli.add_command(models.models)
    cli.add_command(campaign.campaign)
    cli.add_command(datasets.datasets)
    cli.add_command(training.train)
    cli.add_command(training.adapters)

    cli.add_command(registry.rollback)

    cli.add_command(evaluation.eval_)
    cli.add_command(evaluation.promote)
    cli.add_command(evaluation.decisions)
    cli.add_command(evaluation.cycle)

    cli.add_command(backup.backup)
    cli.add_command(backup.restore)

    cli.add_command(dashboard.tui)
    cli.add_command(daemon_jobs.job)
    cli.add_command(daemon_jobs.daemon)

    cli.add_command(sandbox.sandbox)
    cli.add_command(serve.serve)

    cli.add_command(solve.solve)
    cli.add_command(solve.runs_)
    cli.add_command(solve.feedback)

    cli.add_command(upkeep.gc)
    cli.add_command(upkeep.alerts)


_register()


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))
