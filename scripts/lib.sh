# shellcheck shell=bash
# Shared helpers for Tollgate's scripts (quickstart, tests, .ci/run). Source it:
#
#   source scripts/lib.sh
#   ensure_services              # PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672
#   ensure_database tollgate_dev # CREATE DATABASE unless it exists
#   DATABASE_URL=$(pg_url tollgate_dev)
#
# Sourcing has no side effect beyond defining functions and exporting CARGO_TARGET_DIR.
#
# Environment it reads:
#   DATABASE_URL  when set (CI), the PostgreSQL server and credentials to use (its user must
#                 be able to create databases); otherwise the users `postgres`, then `root`,
#                 then `tollgate` (password `tollgate`) are tried on 127.0.0.1:5432.
#   AMQP_URL      RabbitMQ URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
#   TOLLGATE_NO_INSTALL=1   never install packages; print what to install instead.
# It exports:
#   CARGO_TARGET_DIR   default $HOME/.cache/tollgate/target (a cache shared by every checkout)
#   PGUSER_DETECTED    the PostgreSQL user that works (PGPASSWORD_DETECTED its password, if any)
#   AMQP_URL_DETECTED  the RabbitMQ URL

: "${CARGO_TARGET_DIR:=${HOME:-/root}/.cache/tollgate/target}"
export CARGO_TARGET_DIR

TOLLGATE_PG_HOST=127.0.0.1
TOLLGATE_PG_PORT=${TOLLGATE_PG_PORT:-5432}
TOLLGATE_AMQP_HOST=127.0.0.1
TOLLGATE_AMQP_PORT=${TOLLGATE_AMQP_PORT:-5672}

# ---------------------------------------------------------------------------------------------
# Output

tg_log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
tg_warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }
tg_die() {
    printf '\033[1;31merror:\033[0m %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Privileges and packages

# Runs a command as root: directly when we are root, through sudo otherwise.
tg_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

# True when packages can be installed here: Debian/Ubuntu (apt-get) as root or with sudo.
tg_can_apt() {
    [ "${TOLLGATE_NO_INSTALL:-0}" != 1 ] || return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1
}

TG_APT_UPDATED=0
# Installs Debian packages (apt-get update once per run).
tg_apt_install() {
    if [ "$TG_APT_UPDATED" -eq 0 ]; then
        tg_log "apt-get update"
        tg_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || tg_die "apt-get update failed"
        TG_APT_UPDATED=1
    fi
    tg_log "apt-get install $*"
    tg_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        || tg_die "apt-get install $* failed"
}

# What to tell a user who must install things by hand, for this platform.
# $1: what is missing (postgresql, rabbitmq, tools).
tg_install_hint() {
    case "$(uname -s)" in
        Darwin)
            case "$1" in
                postgresql) echo "brew install postgresql@15 && brew services start postgresql@15" ;;
                rabbitmq) echo "brew install rabbitmq && brew services start rabbitmq" ;;
                *) echo "brew install $1" ;;
            esac
            ;;
        *)
            if command -v apt-get >/dev/null 2>&1; then
                case "$1" in
                    postgresql) echo "sudo apt-get install postgresql && sudo service postgresql start" ;;
                    rabbitmq) echo "sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached" ;;
                    *) echo "sudo apt-get install $1" ;;
                esac
            elif command -v dnf >/dev/null 2>&1; then
                case "$1" in
                    postgresql) echo "sudo dnf install postgresql-server && sudo postgresql-setup --initdb && sudo systemctl start postgresql" ;;
                    rabbitmq) echo "sudo dnf install rabbitmq-server && sudo systemctl start rabbitmq-server" ;;
                    *) echo "sudo dnf install $1" ;;
                esac
            else
                case "$1" in
                    postgresql) echo "install PostgreSQL 13+ and start it on 127.0.0.1:5432" ;;
                    rabbitmq) echo "install RabbitMQ 3.10+ and start it on 127.0.0.1:5672" ;;
                    *) echo "install $1 with your package manager" ;;
                esac
            fi
            ;;
    esac
    echo "  (or run both in Docker: docker compose -f deploy/docker-compose.yml up -d postgres rabbitmq"
    echo "   and export AMQP_URL=amqp://tollgate:tollgate@127.0.0.1:5672/%2f)"
}

# ---------------------------------------------------------------------------------------------
# Probes

tg_pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$TOLLGATE_PG_HOST" -p "$TOLLGATE_PG_PORT" >/dev/null 2>&1
    else
        tg_tcp_open "$TOLLGATE_PG_HOST" "$TOLLGATE_PG_PORT"
    fi
}

tg_rabbit_up() { tg_tcp_open "$TOLLGATE_AMQP_HOST" "$TOLLGATE_AMQP_PORT"; }

# True when a TCP connection to $1:$2 opens (bash /dev/tcp), within 2 s.
tg_tcp_open() {
    if command -v timeout >/dev/null 2>&1; then
        timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/$1/$2") >/dev/null 2>&1
    fi
}

# Waits up to $2 seconds for probe function $1; $3 names it in messages.
tg_wait_for() {
    local probe=$1 secs=$2 what=$3 i
    for ((i = 0; i < secs; i++)); do
        if "$probe"; then
            return 0
        fi
        if ((i > 0 && i % 10 == 0)); then
            tg_log "still waiting for $what (${i}s)"
        fi
        sleep 1
    done
    "$probe"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

tg_pg_server_installed() {
    compgen -G "/etc/postgresql/*/main" >/dev/null 2>&1 \
        || compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null 2>&1 \
        || command -v postgres >/dev/null 2>&1
}

tg_pg_start() {
    local version
    # shellcheck disable=SC2012 # cluster versions are plain numbers
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$version" ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        tg_log "starting PostgreSQL $version (pg_ctlcluster)"
        tg_as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>&1 \
            | sed 's/^/    /' >&2 || true
    fi
    if ! tg_pg_up && command -v service >/dev/null 2>&1; then
        tg_log "starting PostgreSQL (service postgresql start)"
        tg_as_root service postgresql start 2>&1 | sed 's/^/    /' >&2 || true
    fi
    if ! tg_pg_up && [ "$(uname -s)" = Darwin ] && command -v brew >/dev/null 2>&1; then
        brew services start postgresql@15 >&2 || true
    fi
}

tg_ensure_postgres() {
    if tg_pg_up; then
        return 0
    fi
    if [ -n "${DATABASE_URL:-}" ] && command -v psql >/dev/null 2>&1 && psql "$DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; then
        return 0
    fi
    if ! tg_pg_server_installed; then
        if tg_can_apt; then
            tg_apt_install postgresql
        else
            tg_die "PostgreSQL is not running on $TOLLGATE_PG_HOST:$TOLLGATE_PG_PORT and not installed. Install it:
  $(tg_install_hint postgresql)"
        fi
    fi
    if ! tg_pg_up; then
        tg_pg_start
    fi
    tg_wait_for tg_pg_up 60 "PostgreSQL on $TOLLGATE_PG_HOST:$TOLLGATE_PG_PORT" \
        || tg_die "PostgreSQL did not come up on $TOLLGATE_PG_HOST:$TOLLGATE_PG_PORT within 60 s (see /var/log/postgresql/)"
    tg_log "PostgreSQL is up"
}

# Percent-encodes $1 for a URL's user or password part.
tg_urlencode() {
    local s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case "$c" in
            [a-zA-Z0-9._~-]) out+=$c ;;
            *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

# The URL of database $1 on the detected server, as the detected user.
pg_url() {
    local db=${1:-postgres} auth
    if [ -n "${TG_PG_BASE_URL:-}" ]; then
        # DATABASE_URL given: same server, credentials and query, other database.
        local base=${TG_PG_BASE_URL%%\?*} query=''
        [ "$base" != "$TG_PG_BASE_URL" ] && query="?${TG_PG_BASE_URL#*\?}"
        local scheme=${base%%://*} rest=${base#*://}
        local hostpart=${rest%%/*}
        printf '%s://%s/%s%s' "$scheme" "$hostpart" "$db" "$query"
        return
    fi
    auth=$(tg_urlencode "${PGUSER_DETECTED:-postgres}")
    if [ -n "${PGPASSWORD_DETECTED:-}" ]; then
        auth+=":$(tg_urlencode "$PGPASSWORD_DETECTED")"
    fi
    printf 'postgres://%s@%s:%s/%s' "$auth" "$TOLLGATE_PG_HOST" "$TOLLGATE_PG_PORT" "$db"
}

tg_psql_ok() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

# Finds a PostgreSQL user that can log in over TCP; exports PGUSER_DETECTED (and
# PGPASSWORD_DETECTED). Order: DATABASE_URL, then postgres, root (trust auth), tollgate/tollgate
# (docker compose and CI). As a last resort, on a server this machine runs and we are root (or
# have sudo), creates the role `tollgate` (password `tollgate`, CREATEDB) through the local
# socket's peer authentication: a fresh Debian install has no trust auth over TCP.
tg_detect_pg_user() {
    TG_PG_BASE_URL=''
    PGPASSWORD_DETECTED=''
    if [ -n "${DATABASE_URL:-}" ] && tg_psql_ok "$DATABASE_URL"; then
        TG_PG_BASE_URL=$DATABASE_URL
        PGUSER_DETECTED=$(psql "$DATABASE_URL" -Atqc 'select current_user')
        export TG_PG_BASE_URL PGUSER_DETECTED PGPASSWORD_DETECTED
        return 0
    fi
    local user
    for user in postgres root; do
        if PGCONNECT_TIMEOUT=5 psql -w -h "$TOLLGATE_PG_HOST" -p "$TOLLGATE_PG_PORT" -U "$user" -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
            PGUSER_DETECTED=$user
            export TG_PG_BASE_URL PGUSER_DETECTED PGPASSWORD_DETECTED
            return 0
        fi
    done
    if PGPASSWORD=tollgate PGCONNECT_TIMEOUT=5 psql -w -h "$TOLLGATE_PG_HOST" -p "$TOLLGATE_PG_PORT" -U tollgate -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
        PGUSER_DETECTED=tollgate
        PGPASSWORD_DETECTED=tollgate
        export TG_PG_BASE_URL PGUSER_DETECTED PGPASSWORD_DETECTED
        return 0
    fi
    if tg_pg_server_installed && id postgres >/dev/null 2>&1 && [ "${TOLLGATE_NO_INSTALL:-0}" != 1 ]; then
        tg_log "no PostgreSQL user accepts password-less TCP logins; creating role tollgate (password tollgate) for local development"
        local sql="DO \$\$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tollgate') THEN
                CREATE ROLE tollgate LOGIN CREATEDB PASSWORD 'tollgate';
            END IF; END \$\$;"
        if (cd / && printf '%s\n' "$sql" | tg_as_root runuser -u postgres -- psql -p "$TOLLGATE_PG_PORT" -d postgres -q) >/dev/null 2>&1 \
            || (cd / && printf '%s\n' "$sql" | tg_as_root su postgres -s /bin/sh -c "psql -p $TOLLGATE_PG_PORT -d postgres -q") >/dev/null 2>&1; then
            if PGPASSWORD=tollgate psql -w -h "$TOLLGATE_PG_HOST" -p "$TOLLGATE_PG_PORT" -U tollgate -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
                PGUSER_DETECTED=tollgate
                PGPASSWORD_DETECTED=tollgate
                export TG_PG_BASE_URL PGUSER_DETECTED PGPASSWORD_DETECTED
                return 0
            fi
        fi
    fi
    tg_die "cannot log in to PostgreSQL on $TOLLGATE_PG_HOST:$TOLLGATE_PG_PORT as postgres, root or tollgate.
  Either set DATABASE_URL=postgres://USER:PASSWORD@127.0.0.1:5432/postgres (a user allowed to create databases),
  or create a role:  sudo -u postgres psql -c \"CREATE ROLE tollgate LOGIN CREATEDB PASSWORD 'tollgate'\""
}

# Creates database $1 unless it exists.
ensure_database() {
    local name=${1:?ensure_database NAME}
    [ -n "${PGUSER_DETECTED:-}" ] || tg_detect_pg_user
    local admin
    admin=$(pg_url postgres)
    if [ "$(psql "$admin" -Atqc "SELECT 1 FROM pg_database WHERE datname = '${name//\'/\'\'}'")" != 1 ]; then
        tg_log "creating database $name"
        psql "$admin" -qc "CREATE DATABASE \"${name//\"/\"\"}\"" >/dev/null \
            || tg_die "could not create database $name as $PGUSER_DETECTED"
    fi
}

# Drops database $1 if it exists (disconnecting its sessions first).
drop_database() {
    local name=${1:?drop_database NAME}
    [ -n "${PGUSER_DETECTED:-}" ] || tg_detect_pg_user
    local admin quoted
    admin=$(pg_url postgres)
    quoted="\"${name//\"/\"\"}\""
    psql "$admin" -qc "DROP DATABASE IF EXISTS $quoted WITH (FORCE)" >/dev/null 2>&1 \
        || psql "$admin" -qc "DROP DATABASE IF EXISTS $quoted" >/dev/null \
        || tg_die "could not drop database $name"
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ

tg_rabbit_bin() {
    local p
    for p in "$(command -v rabbitmq-server 2>/dev/null)" /usr/sbin/rabbitmq-server /usr/lib/rabbitmq/bin/rabbitmq-server; do
        if [ -n "$p" ] && [ -x "$p" ]; then
            printf '%s' "$p"
            return 0
        fi
    done
    return 1
}

tg_rabbit_start() {
    local bin
    bin=$(tg_rabbit_bin) || return 0
    tg_log "starting RabbitMQ ($bin -detached; takes 10-20 s)"
    (cd / && tg_as_root "$bin" -detached) 2>&1 | sed 's/^/    /' >&2 || true
    sleep 3
    if ! tg_rabbit_up && ! pgrep -f beam >/dev/null 2>&1 && command -v service >/dev/null 2>&1; then
        tg_log "starting RabbitMQ (service rabbitmq-server start)"
        tg_as_root service rabbitmq-server start 2>&1 | sed 's/^/    /' >&2 || true
    fi
}

tg_ensure_rabbitmq() {
    if tg_rabbit_up; then
        return 0
    fi
    if ! tg_rabbit_bin >/dev/null; then
        if tg_can_apt; then
            tg_apt_install rabbitmq-server
        elif [ "$(uname -s)" = Darwin ] && command -v brew >/dev/null 2>&1 && brew list rabbitmq >/dev/null 2>&1; then
            brew services start rabbitmq >&2 || true
        else
            tg_die "RabbitMQ is not running on $TOLLGATE_AMQP_HOST:$TOLLGATE_AMQP_PORT and not installed. Install it:
  $(tg_install_hint rabbitmq)"
        fi
    fi
    if ! tg_rabbit_up; then
        tg_rabbit_start
    fi
    tg_wait_for tg_rabbit_up 60 "RabbitMQ on $TOLLGATE_AMQP_HOST:$TOLLGATE_AMQP_PORT" \
        || tg_die "RabbitMQ did not come up on $TOLLGATE_AMQP_HOST:$TOLLGATE_AMQP_PORT within 60 s (see /var/log/rabbitmq/)"
    tg_log "RabbitMQ is up"
}

# ---------------------------------------------------------------------------------------------
# Tools

# Checks the build and client tools: cargo, a C compiler (the `ring` crate), curl, psql.
# Installs the missing Debian packages when it can; rustup is never installed for you.
tg_ensure_tools() {
    local missing=() pkgs=()
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-}/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || tg_die "cargo not found. Install Rust via rustup:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"
  (see https://rustup.rs; Tollgate needs Rust 1.88 or newer)"
    command -v curl >/dev/null 2>&1 || { missing+=(curl); pkgs+=(curl ca-certificates); }
    command -v psql >/dev/null 2>&1 || { missing+=(psql); pkgs+=(postgresql-client); }
    command -v cc >/dev/null 2>&1 || { missing+=("cc (C compiler)"); pkgs+=(build-essential); }
    if ((${#pkgs[@]})); then
        if tg_can_apt; then
            tg_apt_install "${pkgs[@]}"
        else
            local hint
            case "$(uname -s)" in
                Darwin) hint="xcode-select --install; brew install curl libpq && brew link --force libpq" ;;
                *) hint="install: ${pkgs[*]} (Debian package names)" ;;
            esac
            tg_die "missing tools: ${missing[*]}. $hint"
        fi
    fi
}

# Node.js 20+ and the npm packages in tests/js (the official Stripe SDK and the Standard
# Webhooks library, pinned by tests/js/package-lock.json): the webhook tests check Tollgate's
# signatures against them. Installs the packages with `npm ci` when the lockfile changed.
ensure_node_test_deps() {
    local major
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        tg_die "Node.js 20+ with npm is needed by the webhook tests (they verify signatures with
  the official Stripe and Standard Webhooks libraries). Install it from https://nodejs.org
  (or: nvm install 20), then rerun."
    fi
    major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$major" -ge 20 ] || tg_die "Node.js $(node --version) is too old for tests/js (needs 20+):
  install a newer one from https://nodejs.org (or: nvm install 20)"
    if [ ! -f tests/js/node_modules/.package-lock.json ] \
        || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
        tg_log "npm ci --prefix tests/js"
        npm ci --prefix tests/js --no-audit --no-fund --loglevel=error >/dev/null \
            || tg_die "npm ci --prefix tests/js failed (is the npm registry reachable?)"
    fi
}

# ---------------------------------------------------------------------------------------------
# The entry point

# Makes sure cargo, curl and psql exist, PostgreSQL and RabbitMQ run locally (installing and
# starting them when possible), and a PostgreSQL user works (PGUSER_DETECTED).
ensure_services() {
    tg_ensure_tools
    tg_ensure_postgres
    tg_ensure_rabbitmq
    tg_detect_pg_user
    AMQP_URL_DETECTED=${AMQP_URL:-amqp://guest:guest@$TOLLGATE_AMQP_HOST:$TOLLGATE_AMQP_PORT/%2f}
    export AMQP_URL_DETECTED
    tg_log "PostgreSQL user: $PGUSER_DETECTED; RabbitMQ: ${AMQP_URL_DETECTED%%://*}://${AMQP_URL_DETECTED#*@}"
}
