#!/usr/bin/env bash
# Runs Tollgate's checks and tests: formatting, clippy (warnings are errors) and every test of
# the workspace against the real PostgreSQL and RabbitMQ (each test makes its own database and
# queue names). Starts the services when installed but down; says what to install otherwise.
#
#   bash scripts/test.sh              # everything
#   bash scripts/test.sh -- happy     # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_services
ensure_node_test_deps

base=$(pg_url postgres)
export TEST_PG_URL=${base%/postgres}
export TEST_AMQP_URL=${AMQP_URL_DETECTED:-amqp://guest:guest@127.0.0.1:5672/%2f}

# Test databases of earlier runs (each test creates one; nothing else is named like this).
stale=$(psql "$base" -Atqc "select datname from pg_database where datname like 'tollgate_test_%'" 2>/dev/null || true)
for db in $stale; do
    psql "$base" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
done

tg_log "cargo fmt --check"
cargo fmt --all -- --check
tg_log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
tg_log "cargo test --workspace"
# Service logs inside tests: warnings and errors only unless RUST_LOG says otherwise.
export RUST_LOG=${RUST_LOG:-warn}
cargo test --workspace "$@"
