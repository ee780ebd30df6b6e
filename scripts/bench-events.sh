#!/usr/bin/env bash
# The usage-event ingestion benchmark (issue 3): a release stack on this machine (everything
# co-located), the project-tool metrics catalog, then
#   1. throughput: EVENTS_TOTAL (default 200000) events through POST /v1/events/batch in
#      batches of 1000, 8 requests in flight, every 10th batch sent twice (dedupe), and the
#      ledger check (one entry per distinct event);
#   2. visibility: EVENTS_RATE_TOTAL (default 100000) events paced at EVENTS_RATE (default
#      5000) events/s in batches of 100, with a probe measuring event → visible in the usage API;
#   3. traffic-metering overhead: GET /healthz alternately through the metered gateway and a
#      second gateway with metering off, same services, same run;
#   4. throughput again with every event billed to an account whose subscription has a quota
#      on the metric (each write also updates the ledger's quota counter).
# Figures go to stdout; docs/BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

ensure_services
stack_up events 19100
export DATABASE_URL=$STACK_DATABASE_URL TOLLGATE_API_KEY=$STACK_API_KEY
"$STACK_BIN/tollgatectl" --database-url "$STACK_DATABASE_URL" \
    metrics apply --tenant events examples/metrics/project-tool.toml
UNMETERED_PORT=19183
stack_start_gateway "$UNMETERED_PORT" GATEWAY__METERING__ENABLED=false

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -sr)"
echo "== 1. throughput: ${EVENTS_TOTAL:-200000} events, batches of 1000, 8 in flight"
"$STACK_BIN/tollgate-loadgen-events" --gateway-url "$STACK_GATEWAY" \
    --events "${EVENTS_TOTAL:-200000}" --batch-size 1000 --concurrency 8
echo "== 2. visibility: ${EVENTS_RATE_TOTAL:-100000} events at ${EVENTS_RATE:-5000} events/s"
"$STACK_BIN/tollgate-loadgen-events" --gateway-url "$STACK_GATEWAY" \
    --events "${EVENTS_RATE_TOTAL:-100000}" --rate "${EVENTS_RATE:-5000}" --batch-size 100 \
    --concurrency 16 --probe
echo "== 3. traffic-metering overhead on gateway latency"
"$STACK_BIN/tollgate-loadgen-events" --gateway-url "$STACK_GATEWAY" --events 0 \
    --compare-gateway-url "http://127.0.0.1:$UNMETERED_PORT" --compare-requests 5000
echo "== 4. throughput, events billed to a subscribed account with a quota on the metric"
catalog=$(mktemp --suffix=.toml)
cat >"$catalog" <<'TOML'
[[plans]]
code = "bench"
name = "Bench"
interval = "month"
currency = "USD"
base_fee = "0"
[[plans.quotas]]
metric = "bench_units"
quantity = 1000000000000
TOML
"$STACK_BIN/tollgatectl" --database-url "$STACK_DATABASE_URL" catalog apply --tenant events "$catalog" >/dev/null
rm -f "$catalog"
curl -fsS -o /dev/null -H "Authorization: Bearer $STACK_API_KEY" -H 'Content-Type: application/json' \
    -d '{"external_id":"bench-acct","name":"Bench","kind":"organization"}' "$STACK_GATEWAY/v1/accounts"
"$STACK_BIN/tollgatectl" --database-url "$STACK_DATABASE_URL" subscription start --tenant events \
    --account bench-acct --plan bench --skip-trial >/dev/null
"$STACK_BIN/tollgate-loadgen-events" --gateway-url "$STACK_GATEWAY" \
    --events "${EVENTS_TOTAL:-200000}" --batch-size 1000 --concurrency 8 --account bench-acct
