#!/usr/bin/env bash
# Make sure a PostgreSQL server (initdb, pg_ctl, postgres) is installed and
# print its bin directory on stdout. Everything else goes to stderr.
#
# Idempotent: when /usr/lib/postgresql/<ver>/bin/initdb already exists nothing
# is installed. Otherwise installs Debian's `postgresql` package with apt-get
# (as root, or through `sudo -n` when not root).
#
# We never use the distribution's default cluster (5432). If the package's
# postinst starts it, it is left alone; the test harness starts its own
# throwaway clusters (see tests/pgcluster.py).
#
# Env:
#   RELEASEGATE_PG_BINDIR  use this bin directory instead of searching
#                          (must contain initdb, pg_ctl and postgres).
set -euo pipefail

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_bindir() {
    if [[ -n "${RELEASEGATE_PG_BINDIR:-}" ]]; then
        if [[ -x "$RELEASEGATE_PG_BINDIR/initdb" && -x "$RELEASEGATE_PG_BINDIR/pg_ctl" \
              && -x "$RELEASEGATE_PG_BINDIR/postgres" ]]; then
            printf '%s\n' "$RELEASEGATE_PG_BINDIR"
            return 0
        fi
        die "RELEASEGATE_PG_BINDIR=$RELEASEGATE_PG_BINDIR lacks initdb/pg_ctl/postgres"
    fi
    local candidates=() d
    shopt -s nullglob
    for d in /usr/lib/postgresql/*/bin; do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            candidates+=("$d")
        fi
    done
    shopt -u nullglob
    ((${#candidates[@]})) || return 1
    # Highest major version wins.
    printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1
}

if bindir=$(find_bindir); then
    printf '%s\n' "$bindir"
    exit 0
fi

# Not installed: install it.
if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin and cannot install them: \
not running as root and passwordless sudo is unavailable. Install the Debian 'postgresql' package \
(apt-get install postgresql), or set RELEASEGATE_TEST_PG_URL to an existing server's admin URL."
fi
command -v apt-get >/dev/null 2>&1 \
    || die "PostgreSQL is not installed and apt-get is not available to install it."

# Serialise concurrent callers (e.g. several pytest-xdist workers on a fresh
# machine) so only one runs apt-get; the others wait, then find the binaries.
lockfile="${TMPDIR:-/tmp}/releasegate-ensure-postgres.lock"
exec 9>>"$lockfile" || die "cannot open lock file $lockfile"
if command -v flock >/dev/null 2>&1; then
    flock -w 1800 9 || die "timed out waiting for $lockfile"
fi
if bindir=$(find_bindir); then
    printf '%s\n' "$bindir"
    exit 0
fi

log "PostgreSQL not found; installing Debian package 'postgresql' (this takes a minute)..."
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2 \
    || die "apt-get update failed"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
    --no-install-recommends postgresql >&2 \
    || die "apt-get install postgresql failed"

bindir=$(find_bindir) || die "installed 'postgresql' but found no initdb under /usr/lib/postgresql/*/bin"
getent passwd postgres >/dev/null || log "warning: no 'postgres' system user after install"
log "installed PostgreSQL: $bindir"
printf '%s\n' "$bindir"
