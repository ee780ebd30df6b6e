#!/usr/bin/env bash
# Compares release builds of the pipeline in one session: runs scripts/bench.sh on each build
# in turn, alternating, for BENCH_ROUNDS rounds (default 2), so that the machine's drift from
# hour to hour (seen here: 60-70 %) falls on every build alike. Each run has its own fresh
# database, migrated by that build's own tollgatectl.
#
#   scripts/bench-ab.sh base=/path/to/release new=/path/to/other/release
#
# A build is a directory holding the release binaries (`cargo build --release` leaves them in
# $CARGO_TARGET_DIR/release; copy them aside before building the other version). BENCH_JOBS,
# BENCH_RATE_JOBS and BENCH_RATE pass through to bench.sh. Full output of each run goes to
# .tollgate/bench-ab/<name>-<round>.log; the summary is one line per run: the throughput run's
# jobs/s, submit p50/p99 and CPU ms per job, then the fixed-rate run's p99 and CPU ms per job
# (CPU of processes, kernel threads left out: see stack_cpu_report in scripts/stack.sh) and
# its PostgreSQL transactions per job (less noisy than time: it counts round trips saved).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

[ $# -ge 2 ] || tg_die "usage: scripts/bench-ab.sh NAME=BINDIR NAME=BINDIR [...]"
for build in "$@"; do
    dir=${build#*=}
    [ "$build" != "$dir" ] || tg_die "expected NAME=BINDIR, got $build"
    [ -x "$dir/tollgate-gateway" ] || tg_die "$dir holds no release build (tollgate-gateway)"
done
logs=.tollgate/bench-ab
mkdir -p "$logs"
printf '%-8s %5s %8s %8s %8s %8s %10s %10s %10s\n' build round 'jobs/s' 'p50 ms' 'p99 ms' \
    'CPU/job' "p99@${BENCH_RATE:-1000}/s" "CPU@${BENCH_RATE:-1000}/s" "xact@${BENCH_RATE:-1000}/s"
for round in $(seq 1 "${BENCH_ROUNDS:-2}"); do
    for build in "$@"; do
        name=${build%%=*} dir=${build#*=}
        log=$logs/$name-$round.log
        STACK_BIN=$dir bash scripts/bench.sh >"$log" 2>&1 || {
            tail -n 20 "$log" >&2
            tg_die "$name round $round failed (log: $log)"
        }
        # bench.sh prints the throughput run first, then the fixed-rate run.
        awk -v name="$name" -v round="$round" '
            /^end to end:/ && !eps { eps = $(NF-1) }
            /^submitted/ { n++; for (i = 1; i <= NF; i++) {
                if ($i == "p50") p50[n] = $(i+1); if ($i == "p99") p99[n] = $(i+1) } }
            /^ +processes / { m++; cpu[m] = $2 }
            /^ +per job: / { k++; xact[k] = $(NF-2) }
            END { printf "%-8s %5s %8s %8s %8s %8s %10s %10s %10s\n", name, round, eps, p50[1],
                         p99[1], cpu[1], p99[2], cpu[2], xact[2] }' "$log"
    done
done
