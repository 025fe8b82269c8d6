"""`forge serve`: the OpenAI-compatible endpoint, and `forge serve keys add|list|revoke`.

The server runs in the foreground (systemd's forge-serve.service runs it the same way)
until SIGTERM or Ctrl-C; it prints where it listens before the first request, so
`--port 0` (any free port) is usable from a script.
"""

from __future__ import annotations

import click
from rich.markup import escape

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json
from appliance.config import load_config
from appliance.records import as_json
from appliance.serve import keys as serve_keys
from appliance.serve.names import served_models


@click.group(invoke_without_command=True)
@click.option("--host", help="Address to bind (default serve.host: 127.0.0.1). Any other "
              "address needs API keys.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535),
              help="Port (default serve.port); 0: a free one, printed.")  # fmt: skip
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the models over an OpenAI-compatible HTTP API (/v1/models,
    /v1/chat/completions, /v1/completions, /health).

    Model names: each role (its base alone) and each stage (its base with the stage's
    active adapter, read on every request). Point a tool at it with
    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1.
    """
    if ctx.invoked_subcommand is not None:
        return
    # the HTTP stack and llama.cpp load only in the process that serves
    from appliance.serve.server import run

    config, db = open_forge()
    db.close()
    settings = config.settings.serve
    host = host or settings.host
    port = settings.port if port is None else port

    def ready(service) -> None:
        names = ", ".join(m.name for m in served_models(service.manifest))
        console.print(f"forge serve: listening on {escape(service.url)}")
        console.print(f"  models: {escape(names)}")
        keys = "required" if service.keys_required() else "not required (loopback, no keys)"
        console.print(f"  API keys: {keys}; queue: {settings.queue} per base")
        console.print(f"  OPENAI_BASE_URL={escape(service.url)}")
        console.file.flush()

    run(config, host, port, ready)


@serve.group()
def keys() -> None:
    """API keys: bearer tokens kept hashed in serve.keys_file (mode 0600)."""


@keys.command("add")
@click.argument("name")
def keys_add(name: str) -> None:
    """Add a key NAME and print its token (shown this once only)."""
    config = load_config()
    path = config.serve_keys_file
    token = serve_keys.add_key(path, name)
    console.print(f"key {escape(name)} added to {escape(str(path))}; its token (shown once):")
    click.echo(token)


@keys.command("list")
@click.option("--json", "as_json_", is_flag=True, help="Print machine-readable JSON.")
def keys_list(as_json_: bool) -> None:
    """The keys: name, the token's first characters, when added."""
    config = load_config()
    found = serve_keys.read_keys(config.serve_keys_file)
    if as_json_:
        emit_json({"file": str(config.serve_keys_file),
                   "keys": [as_json(k, "name", "shown", "created_at") for k in found]})  # fmt: skip
        return
    if not found:
        console.print("no API keys: forge serve answers on loopback only")
        return
    for key in found:
        console.print(f"{escape(key.name):<24} {escape(key.shown)}…  added {key.created_at}")


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Remove key NAME: the next request that carries it gets 401."""
    config = load_config()
    gone = serve_keys.revoke_key(config.serve_keys_file, name)
    console.print(f"key {escape(gone.name)} ({escape(gone.shown)}…) revoked")
