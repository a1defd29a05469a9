#!/usr/bin/env bash
# PostgreSQL for the MLflow tracking server, from Debian's `postgresql` package, on 127.0.0.1 only.
#
#   bash .ci/postgres.sh start   install (as root, if missing), start the cluster, create role + database
#   bash .ci/postgres.sh stop    stop the cluster, only if `start` started it
#
# Idempotent: the role `convlab` (LOGIN CREATEDB) and the database `convlab` are created when missing,
# the password is generated once and kept, mode 600, in $CONVLAB_SERVER_HOME/pgpass (libpq's PGPASSFILE
# format), so it never appears in a URI, a command line, a config or a log. Writes
# $CONVLAB_SERVER_HOME/backend-uri: postgresql+psycopg://convlab@127.0.0.1:PORT/convlab (no password in it).
set -euo pipefail

STATE="${CONVLAB_SERVER_HOME:-${XDG_STATE_HOME:-$HOME/.local/state}/convlab-server}"
ROLE=convlab
DATABASE=convlab

say() { echo "[postgres] $*" >&2; }

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    elif sudo -n true 2>/dev/null; then
        sudo -n -u postgres -- "$@"
    else
        say "administering PostgreSQL needs root or password-less sudo (or point CONVLAB_SERVER_HOME at a"
        say "directory whose backend-uri + pgpass name a database you already have)"
        exit 1
    fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

install_if_missing() {
    if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && command -v pg_ctlcluster >/dev/null; then
        return
    fi
    say "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

cluster() {  # "VERSION NAME PORT STATUS" of the first cluster, creating one if there is none
    local line
    line=$(pg_lsclusters --no-header 2>/dev/null | head -n1)
    if [ -z "$line" ]; then
        local version
        version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
        say "creating cluster $version/main"
        as_root pg_createcluster "$version" main >/dev/null
        line=$(pg_lsclusters --no-header | head -n1)
    fi
    echo "$line" | awk '{print $1, $2, $3, $4}'
}

start() {
    install_if_missing
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    read -r version name port status < <(cluster)
    if [ "$status" != online ]; then
        say "starting cluster $version/$name on 127.0.0.1:$port"
        as_root pg_ctlcluster "$version" "$name" start -- -o "-c listen_addresses=127.0.0.1" -w
        echo "$version $name" >"$STATE/postgres.started-by-convlab"
    fi
    for _ in $(seq 1 30); do
        as_postgres pg_isready -q -p "$port" && break
        sleep 1
    done

    if [ ! -s "$STATE/pgpass" ]; then
        (umask 077; echo "127.0.0.1:$port:*:$ROLE:$(openssl rand -hex 24)" >"$STATE/pgpass")
    fi
    chmod 600 "$STATE/pgpass"
    local password
    password=$(cut -d: -f5 "$STATE/pgpass")
    # the password goes through psql's standard input (not its command line), into a psql variable
    as_postgres psql -q -X -v ON_ERROR_STOP=1 -p "$port" -d postgres >/dev/null <<SQL
\set password '$password'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') AS create_role \gset
\if :create_role
CREATE ROLE $ROLE LOGIN CREATEDB;
\endif
ALTER ROLE $ROLE WITH LOGIN CREATEDB PASSWORD :'password';
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DATABASE') AS create_db \gset
\if :create_db
CREATE DATABASE $DATABASE OWNER $ROLE;
\endif
SQL
    echo "postgresql+psycopg://$ROLE@127.0.0.1:$port/$DATABASE" >"$STATE/backend-uri"
    say "role $ROLE and database $DATABASE ready on 127.0.0.1:$port (password in $STATE/pgpass)"
}

stop() {
    if [ -f "$STATE/postgres.started-by-convlab" ]; then
        read -r version name <"$STATE/postgres.started-by-convlab"
        say "stopping cluster $version/$name"
        as_root pg_ctlcluster "$version" "$name" stop -m fast || true
        rm -f "$STATE/postgres.started-by-convlab"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
