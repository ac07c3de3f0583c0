#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs are installed for the tests of the PostgreSQL audit store
# (issue 23), which start a temporary server of their own (initdb into a temporary directory, the
# socket in it, no TCP port). Idempotent: when /usr/lib/postgresql/*/bin/initdb (or `pg_config
# --bindir`) exists, it does nothing. Otherwise it installs the distribution's `postgresql` package
# with apt (as root, as CI runs on this machine kind); it never starts the system's own server.
set -euo pipefail

found() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
    command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]
}

if found; then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "PostgreSQL's server programs (initdb, pg_ctl) are missing: install the postgresql package (as root: apt-get install -y postgresql)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "PostgreSQL's server programs are missing and apt-get is not available: install PostgreSQL 13 or later by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package's post-install starts a cluster of its own where it can; the tests never use it.
apt-get install -y -qq postgresql >/dev/null
found || { echo "installed postgresql, yet initdb is not where the tests look (/usr/lib/postgresql/*/bin)" >&2; exit 1; }
# The tests run the server as the package's `postgres` user when they run as root.
id postgres >/dev/null || { echo "the postgresql package created no postgres user" >&2; exit 1; }
echo "PostgreSQL server programs ready: $(ls -d /usr/lib/postgresql/*/bin | tail -1)" >&2
