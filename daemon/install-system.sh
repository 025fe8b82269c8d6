#!/usr/bin/env bash
# Install forged as a system service (run by `sudo ./install.sh --system`, after the venv):
# the `forge` user and group, FORGE_HOME=/var/lib/forge, /etc/forge, the units (forged and
# forge-serve), `forge` on PATH with FORGE_HOME set for login shells, and the services
# enabled and started.
#
#   daemon/install-system.sh ROOT      ROOT: the Forge tree (its .venv is used in place)
#
# Environment: DESTDIR (write every file under it, create no user, call no systemctl:
# for packaging and tests), FORGE_NO_START=1 (enable the unit, do not start it),
# FORGE_OPERATOR (user added to group forge; default: the user who ran sudo).
# Re-running is safe.
set -euo pipefail

ROOT="${1:?usage: daemon/install-system.sh ROOT}"
ROOT="$(cd "$ROOT" && pwd)"
DESTDIR="${DESTDIR:-}"
STATE=/var/lib/forge
UNIT_DIR=/etc/systemd/system
say() { printf '==> %s\n' "$*"; }
fail() { echo "install.sh --system: $*" >&2; exit 1; }

if [ -z "$DESTDIR" ]; then
    [ "$(id -u)" = 0 ] || fail "needs root: sudo ./install.sh --system"
    command -v systemctl >/dev/null 2>&1 || fail "no systemctl: this box does not run systemd"
fi
case "$ROOT" in
    /home/*|/root|/root/*|/run/user/*)
        fail "the unit runs with ProtectHome=yes, so forged cannot see $ROOT; move the Forge tree outside /home and /root (e.g. sudo mv $ROOT /opt/forge) and run this again" ;;
esac
[ -x "$ROOT/.venv/bin/forged" ] || fail "$ROOT/.venv/bin/forged is missing: run ./install.sh first"

if [ -z "$DESTDIR" ]; then
    say "user and group forge"
    getent group forge >/dev/null || groupadd --system forge
    id -u forge >/dev/null 2>&1 || useradd --system --gid forge --home-dir "$STATE" \
        --no-create-home --shell /usr/sbin/nologin --comment "Forge appliance" forge
    operator="${FORGE_OPERATOR:-${SUDO_USER:-}}"
    if [ -n "$operator" ] && [ "$operator" != root ]; then
        usermod -a -G forge "$operator"
        say "$operator is in group forge (log in again for forge status and the socket)"
    fi
    runuser -u forge -- test -x "$ROOT/.venv/bin/python" \
        || fail "user forge cannot run $ROOT/.venv/bin/python: make the tree readable (chmod -R o+rX $ROOT)"
    if [ -u "$(command -v bwrap)" ]; then
        echo "warning: bwrap is setuid here; the unit's NoNewPrivileges=yes stops it. Use a non-setuid bwrap (user namespaces) or override NoNewPrivileges in a drop-in." >&2
    fi
fi

say "directories: $STATE (FORGE_HOME), /etc/forge"
install -d -m 2770 "$DESTDIR$STATE"  # setgid: new files stay group forge
install -d -m 0755 "$DESTDIR/etc/forge" "$DESTDIR$UNIT_DIR" "$DESTDIR/etc/profile.d" \
    "$DESTDIR/usr/local/bin"
if [ ! -e "$DESTDIR/etc/forge/forge.toml" ]; then
    cat >"$DESTDIR/etc/forge/forge.toml" <<'TOML'
# Forge settings (every key has a default; see README.md, "Configuration").
# FORGE_HOME/forge.toml, if present, is read instead of this file.
# [daemon]
# ingest_every_s = 30
# campaign_window = "22:00-06:00"
# cycle_every_minutes = 360
# backup_at = "03:00"
# [serve]
# host = "127.0.0.1"
# port = 8765
# queue = 8
# gpus = []
# yield_to_jobs = false
TOML
fi

say "unit $UNIT_DIR/forged.service"
sed "s#/opt/forge#$ROOT#g" "$ROOT/daemon/forged.service" >"$DESTDIR$UNIT_DIR/forged.service.tmp"
mv "$DESTDIR$UNIT_DIR/forged.service.tmp" "$DESTDIR$UNIT_DIR/forged.service"
say "unit $UNIT_DIR/forge-serve.service"
sed "s#/opt/forge#$ROOT#g" "$ROOT/daemon/forge-serve.service" >"$DESTDIR$UNIT_DIR/forge-serve.service.tmp"
mv "$DESTDIR$UNIT_DIR/forge-serve.service.tmp" "$DESTDIR$UNIT_DIR/forge-serve.service"
printf '# Forge: operators use the system daemon'"'"'s state.\nexport FORGE_HOME=%s\n' "$STATE" \
    >"$DESTDIR/etc/profile.d/forge.sh"
ln -sfn "$ROOT/.venv/bin/forge" "$DESTDIR/usr/local/bin/forge"

if [ -n "$DESTDIR" ]; then
    say "DESTDIR set: no user made, no systemctl called"
    exit 0
fi
chown forge:forge "$STATE"
say "state"
runuser -u forge -- env FORGE_HOME="$STATE" "$ROOT/.venv/bin/forge" init >/dev/null
systemctl daemon-reload
systemctl enable forged.service forge-serve.service
if [ "${FORGE_NO_START:-0}" = 1 ]; then
    say "forged and forge-serve are enabled; start them with: systemctl start forged forge-serve"
else
    systemctl restart forged.service forge-serve.service
    say "forged runs: systemctl status forged; journalctl -u forged -f; forge status"
    say "forge serve runs: journalctl -u forge-serve (its address: serve.host and serve.port, 127.0.0.1:8765 by default)"
fi
