#!/usr/bin/env bash
# The billing benchmarks (issue 4):
#   1. billing run: BILLING_SUBSCRIPTIONS (default 10000) subscriptions with
#      BILLING_ENTRIES (default 1000) ledger entries each, closed into rated drafts in one run,
#      then finalized with PDFs (tollgate-loadgen-billing, its own database);
#   2. gating overhead: job submit latency at GATING_RATE (default 1000) jobs/s for a workspace
#      whose tenant does not enforce billing, then for one whose tenant does (entitlement check
#      on every submission), same stack, same run, GATING_JOBS (default 10000) jobs each.
# Figures go to stdout; docs/BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

ensure_services
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -sr)"

stack_up billing 19200
ctl=("$STACK_BIN/tollgatectl" --database-url "$STACK_DATABASE_URL")

if [ "${BILLING_SUBSCRIPTIONS:-10000}" -gt 0 ]; then # BILLING_SUBSCRIPTIONS=0 skips part 1
    echo "== 1. billing run: ${BILLING_SUBSCRIPTIONS:-10000} subscriptions × ${BILLING_ENTRIES:-1000} ledger entries"
    drop_database tollgate_billing_bench >/dev/null 2>&1 || true
    ensure_database tollgate_billing_bench
    "$STACK_BIN/tollgate-loadgen-billing" --database-url "$(pg_url tollgate_billing_bench)" \
        --subscriptions "${BILLING_SUBSCRIPTIONS:-10000}" --entries-per-subscription "${BILLING_ENTRIES:-1000}"
fi

echo "== 2. gating overhead on submit latency, ${GATING_JOBS:-10000} jobs at ${GATING_RATE:-1000} jobs/s each"
api() { # key path json
    curl -fsS -o /dev/null -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
        -d "$3" "$STACK_GATEWAY$2"
}
"${ctl[@]}" tenant create --name gated --rate-limit-per-minute 100000000 >/dev/null
GATED_KEY=$("${ctl[@]}" key create --tenant gated 2>/dev/null)
"${ctl[@]}" job-type set --tenant gated --name wordcount \
    --endpoint "http://127.0.0.1:$STACK_DEMO_PORT/wordcount" --weight 1 >/dev/null
for pair in "billing:$STACK_API_KEY" "gated:$GATED_KEY"; do
    key=${pair#*:}
    api "$key" /v1/accounts '{"external_id":"acme","name":"Acme","kind":"organization"}'
    api "$key" /v1/workspaces '{"external_id":"acme-ws","name":"Acme","account":"acme"}'
done
"${ctl[@]}" catalog apply --tenant gated examples/catalog/plan-gating.toml >/dev/null
"${ctl[@]}" subscription start --tenant gated --account acme --plan scale --skip-trial >/dev/null
"${ctl[@]}" tenant set-billing --tenant gated --enforce true >/dev/null
sleep 1 # the entitlement projection refreshes every 200 ms
for run in ungated gated ungated gated; do
    key=$STACK_API_KEY
    [ "$run" = gated ] && key=$GATED_KEY
    echo "-- $run"
    "$STACK_BIN/tollgate-loadgen" --gateway-url "$STACK_GATEWAY" --api-key "$key" \
        --database-url "$STACK_DATABASE_URL" --workspace acme-ws \
        --jobs "${GATING_JOBS:-10000}" --rate "${GATING_RATE:-1000}" --no-wait
done
