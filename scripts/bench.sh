#!/usr/bin/env bash
# The pipeline benchmark: a release stack on this machine (everything co-located), then
#   1. throughput: BENCH_JOBS (default 5000) wordcount jobs as fast as 64 clients can submit,
#      end-to-end jobs/s (first submit → last job finished) and the ledger check;
#   2. latency: BENCH_RATE_JOBS (default 10000) jobs at BENCH_RATE (default 1000) jobs/s,
#      submit latency p50/p99 and the ledger check.
# Each part prints its CPU per job per process (scripts/stack.sh, stack_cpu_report), and its
# context switches (all of the machine's, /proc/stat) and PostgreSQL transactions
# (pg_stat_database.xact_commit of the stack's database) per job.
# Figures go to stdout; docs/BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

ensure_services
stack_up bench 19000
export DATABASE_URL=$STACK_DATABASE_URL TOLLGATE_API_KEY=$STACK_API_KEY

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -sr)"
echo "== 1. throughput: ${BENCH_JOBS:-5000} jobs, 64 concurrent submitters"
cpu_before=$(mktemp) cpu_after=$(mktemp)
# `bench_counters`: "<context switches> <committed transactions>" so far.
bench_counters() {
    echo "$(awk '/^ctxt/{print $2}' /proc/stat) $(psql "$DATABASE_URL" -Atc \
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")"
}
# `bench_counters_report BEFORE JOBS`: the differences per job (PostgreSQL reports its
# statistics with up to a second's delay, hence the pause).
bench_counters_report() {
    sleep 1.5
    local now
    now=$(bench_counters)
    awk -v b="$1" -v a="$now" -v jobs="$2" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        printf "   per job: %.1f context switches, %.2f PostgreSQL transactions\n",
            (y[1] - x[1]) / jobs, (y[2] - x[2]) / jobs }'
}
counters=$(bench_counters)
stack_cpu_snapshot "$cpu_before"
"$STACK_BIN/tollgate-loadgen" --gateway-url "$STACK_GATEWAY" --jobs "${BENCH_JOBS:-5000}" --concurrency 64
stack_cpu_snapshot "$cpu_after"
stack_cpu_report "$cpu_before" "$cpu_after" "${BENCH_JOBS:-5000}"
bench_counters_report "$counters" "${BENCH_JOBS:-5000}"
echo "== 2. latency: ${BENCH_RATE_JOBS:-10000} jobs at ${BENCH_RATE:-1000} jobs/s"
counters=$(bench_counters)
stack_cpu_snapshot "$cpu_before"
"$STACK_BIN/tollgate-loadgen" --gateway-url "$STACK_GATEWAY" --jobs "${BENCH_RATE_JOBS:-10000}" \
    --rate "${BENCH_RATE:-1000}" --concurrency 256
stack_cpu_snapshot "$cpu_after"
stack_cpu_report "$cpu_before" "$cpu_after" "${BENCH_RATE_JOBS:-10000}"
bench_counters_report "$counters" "${BENCH_RATE_JOBS:-10000}"
rm -f "$cpu_before" "$cpu_after"
