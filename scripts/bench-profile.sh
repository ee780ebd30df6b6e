#!/usr/bin/env bash
# Where a pipeline run's CPU goes, on a release stack (scripts/stack.sh) on this machine:
#
#   scripts/bench-profile.sh [RATE] [JOBS]     # RATE jobs/s (default 1000) or `max`; JOBS default 10000
#
# After a 2,000-job warm-up it runs JOBS wordcount jobs through the gateway with
# tollgate-loadgen (which checks the ledger) and prints
#   - CPU per job of every process (stack_cpu_report);
#   - CPU per job of the PostgreSQL backends, by the service holding their connection
#     (pg_stat_activity.client_port matched against `ss -tnp`), measured over the submissions;
#   - the share of submissions slower than 5, 10 and 25 ms as the gateway and job-intake each
#     saw them (their `tollgate_http_request_duration_seconds` for POST /v1/jobs), to tell
#     which hop a slow submission spent its time in;
#   - where PostgreSQL loads pg_stat_statements (`shared_preload_libraries`), its statements'
#     calls and execution time per job over the run, top-level and nested (PL/pgSQL) alike;
#   - with BENCH_STOP_WORKER_ROUNDS=N (fixed rate only): N alternating submit-only runs with the
#     worker running and stopped (SIGSTOP), to separate the submit path's latency from the
#     worker's share of the cores.
# STACK_BIN=<dir of release binaries> runs those instead of building (as scripts/bench-ab.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

rate=${1:-1000}
jobs=${2:-10000}
[[ $rate == max || $rate =~ ^[0-9]+$ ]] || tg_die "RATE must be a number of jobs/s or max, got $rate"
[[ $jobs =~ ^[0-9]+$ ]] || tg_die "JOBS must be a number, got $jobs"
command -v ss >/dev/null || tg_die "ss (iproute2) is needed to attribute PostgreSQL backends"

ensure_services
stack_up profile 20000
export DATABASE_URL=$STACK_DATABASE_URL TOLLGATE_API_KEY=$STACK_API_KEY
loadgen() { # jobs [extra loadgen args…]
    local n=$1
    shift
    if [ "$rate" = max ]; then
        "$STACK_BIN/tollgate-loadgen" --gateway-url "$STACK_GATEWAY" --jobs "$n" --concurrency 64 "$@"
    else
        "$STACK_BIN/tollgate-loadgen" --gateway-url "$STACK_GATEWAY" --jobs "$n" --rate "$rate" \
            --concurrency 256 "$@"
    fi
}
# `histogram_snapshot PORT FILE`: the POST /v1/jobs latency buckets a service has counted.
histogram_snapshot() {
    curl -fsS "http://127.0.0.1:$1/metrics" |
        grep '^tollgate_http_request_duration_seconds_bucket' | grep 'method="POST"' |
        grep 'route="/v1/jobs"' >"$2" || true
}
# `histogram_report NAME BEFORE AFTER`: the share of the requests between the two snapshots
# slower than 5, 10 and 25 ms.
histogram_report() {
    paste -d' ' "$2" "$3" | awk -v name="$1" '
        { match($1, /le="[^"]+"/); le[NR] = substr($1, RSTART + 4, RLENGTH - 5) + 0
          n[NR] = $4 - $2 }
        END { total = n[NR]; if (total <= 0) { printf "     %-12s no requests counted\n", name; exit }
              printf "     %-12s %d requests:", name, total
              for (i = 1; i <= NR; i++) if (le[i] == 0.005 || le[i] == 0.01 || le[i] == 0.025)
                  printf "  over %g ms %.2f %%", le[i] * 1000, 100 * (total - n[i]) / total
              print "" }'
}
# `backend_snapshot FILE`: "<pid> <client port or -1> <CPU ticks> <backend type>" per backend.
backend_snapshot() {
    psql "$DATABASE_URL" -Atc \
        "SELECT pid, coalesce(client_port, -1), replace(backend_type, ' ', '_') FROM pg_stat_activity" |
        while IFS='|' read -r pid port kind; do
            echo "$pid $port $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) $kind"
        done >"$1"
}

echo "== machine: $(nproc) cores; warm-up: 2000 jobs flat out"
"$STACK_BIN/tollgate-loadgen" --gateway-url "$STACK_GATEWAY" --jobs 2000 --concurrency 64 >/dev/null
sleep 2
cpu_before=$(mktemp) cpu_after=$(mktemp) pg_before=$(mktemp) pg_after=$(mktemp) ports=$(mktemp)
gw_before=$(mktemp) gw_after=$(mktemp) in_before=$(mktemp) in_after=$(mktemp)
trap 'rm -f "$cpu_before" "$cpu_after" "$pg_before" "$pg_after" "$ports" "$gw_before" \
    "$gw_after" "$in_before" "$in_after"; stack_down' EXIT
echo "== $jobs jobs at ${rate} jobs/s"
stack_cpu_snapshot "$cpu_before"
backend_snapshot "$pg_before"
histogram_snapshot "$STACK_GATEWAY_PORT" "$gw_before"
histogram_snapshot "$STACK_INTAKE_PORT" "$in_before"
pgss=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'
    AND current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%'")
if [ "$pgss" = 1 ]; then
    psql "$DATABASE_URL" -qAtc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    psql "$DATABASE_URL" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null
fi
run=profile$$
loadgen "$jobs" --no-wait --run-id "$run"
backend_snapshot "$pg_after"
histogram_snapshot "$STACK_GATEWAY_PORT" "$gw_after"
histogram_snapshot "$STACK_INTAKE_PORT" "$in_after"
# Client port → process name of every connection to PostgreSQL, read while they are open.
ss -tnpH state established '( dport = :5432 )' | awk '{
    n = split($3, local, ":"); port = local[n]
    if (match($0, /users:\(\("[^"]+"/)) print port, substr($0, RSTART + 9, RLENGTH - 10) }' >"$ports"
"$STACK_BIN/tollgate-loadgen" --jobs "$jobs" --run-id "$run" --check-only
stack_cpu_snapshot "$cpu_after"
stack_cpu_report "$cpu_before" "$cpu_after" "$jobs"
echo "   PostgreSQL backends by client, CPU per job (ms), over the submissions:"
awk -v jobs="$jobs" -v hz="$(getconf CLK_TCK)" '
    FILENAME == ARGV[1] { name[$1] = $2; next }
    FILENAME == ARGV[2] { before[$1] = $3; next }
    { who = ($2 in name) ? name[$2] : $4; used[who] += $3 - before[$1] }
    END { for (w in used) if (used[w] > 0) printf "     %-18s %6.3f\n", w, used[w] * 1000 / hz / jobs }
' "$ports" "$pg_before" "$pg_after" | sort -k2 -nr
echo "   POST /v1/jobs as each hop timed it, share of the submissions:"
histogram_report gateway "$gw_before" "$gw_after"
histogram_report job-intake "$in_before" "$in_after"
if [ "$pgss" = 1 ]; then
    echo "   PostgreSQL statements of the stack's database until every job finished, per job"
    echo "   (execution time is wall time inside the statement; nested ones are inside their caller's):"
    psql "$DATABASE_URL" -Atc "
        SELECT '     ' || CASE WHEN s.toplevel THEN 'top    ' ELSE 'nested ' END
               || 'calls ' || to_char(s.calls::numeric / $jobs, '90.000')
               || '  ms ' || to_char(s.total_exec_time / $jobs, '90.000')
               || '  rows/call ' || to_char(s.rows::numeric / greatest(s.calls, 1), '99990.0')
               || '  ' || left(regexp_replace(s.query, '\s+', ' ', 'g'), 90)
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = current_database()
        ORDER BY s.total_exec_time DESC LIMIT 15"
fi

rounds=${BENCH_STOP_WORKER_ROUNDS:-0}
if [ "$rounds" -gt 0 ] && [ "$rate" != max ]; then
    echo "== submit-only runs at $rate jobs/s, worker running / stopped, $rounds rounds"
    for round in $(seq 1 "$rounds"); do
        for mode in running stopped; do
            [ "$mode" = stopped ] && kill -STOP "$STACK_WORKER_PID"
            printf '   round %s, worker %-8s ' "$round" "$mode"
            loadgen "$jobs" --no-wait | grep '^submitted'
            [ "$mode" = stopped ] && kill -CONT "$STACK_WORKER_PID"
            # Let the worker drain the queue before the next run.
            sleep $((jobs / 1000 + 5))
        done
    done
fi
