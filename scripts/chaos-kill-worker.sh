#!/usr/bin/env bash
# Crash test: submits CHAOS_JOBS (default 5000) jobs, kill -9s the worker while it is in the
# middle of them, restarts it, and checks that every job ends succeeded and the ledger holds
# exactly one entry per job. Exit 0 only when both hold.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

JOBS=${CHAOS_JOBS:-5000}
ensure_services
stack_up chaos 19100
export DATABASE_URL=$STACK_DATABASE_URL TOLLGATE_API_KEY=$STACK_API_KEY
RUN=chaos$$

count() { psql "$STACK_DATABASE_URL" -Atqc "$1"; }

"$STACK_BIN/tollgate-loadgen" --gateway-url "$STACK_GATEWAY" --jobs "$JOBS" --concurrency 32 \
    --run-id "$RUN" --no-wait &
LOADGEN=$!

# Kill once the worker has finished some jobs but far from all.
for _ in $(seq 1 600); do
    done_jobs=$(count "select count(*) from jobs where input->>'run' = '$RUN' and status = 'succeeded'")
    [ "$done_jobs" -ge $((JOBS / 5)) ] && break
    sleep 0.05
done
in_flight=$(count "select count(*) from jobs where input->>'run' = '$RUN' and status = 'processing'")
echo "== kill -9 worker (pid $STACK_WORKER_PID) with $done_jobs succeeded and $in_flight processing"
kill -9 "$STACK_WORKER_PID"
sleep 1
echo "== restarting the worker"
stack_start_worker
wait "$LOADGEN"

"$STACK_BIN/tollgate-loadgen" --run-id "$RUN" --check-only --wait-secs 300
not_succeeded=$(count "select count(*) from jobs where input->>'run' = '$RUN' and status <> 'succeeded'")
total=$(count "select count(*) from jobs where input->>'run' = '$RUN'")
echo "== $total jobs submitted, $not_succeeded not succeeded"
[ "$total" -eq "$JOBS" ] && [ "$not_succeeded" -eq 0 ] || { echo "CHAOS CHECK FAILED"; exit 1; }
echo "CHAOS CHECK OK: every job succeeded, exactly one ledger entry each"
