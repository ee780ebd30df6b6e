#!/usr/bin/env bash
# The inbound PSP webhook benchmark (issue 5): a release stack on this machine (everything
# co-located, billing applying the events as they arrive), then
#   1. throughput: WEBHOOK_EVENTS (default 20000) signed Stripe events to POST /webhooks/stripe
#      as fast as 32 senders can, every 10th delivered twice; verified events acknowledged per
#      second, acknowledgement latency p50/p99, and the stored-once check;
#   2. latency: WEBHOOK_RATE_EVENTS (default 10000) events paced at WEBHOOK_RATE (default 500)
#      events/s: acknowledgement latency p50/p99 at a steady rate.
# Figures go to stdout; docs/BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/stack.sh
source scripts/stack.sh

ensure_services
stack_up webhooks 19200
export DATABASE_URL=$STACK_DATABASE_URL STRIPE_WEBHOOK_SECRET=$STACK_STRIPE_WEBHOOK_SECRET

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -sr)"
echo "== 1. throughput: ${WEBHOOK_EVENTS:-20000} events, 32 senders"
"$STACK_BIN/tollgate-loadgen-webhooks" --webhook-url "$STACK_WEBHOOK_URL" \
    --events "${WEBHOOK_EVENTS:-20000}" --concurrency 32
echo "== 2. latency: ${WEBHOOK_RATE_EVENTS:-10000} events at ${WEBHOOK_RATE:-500} events/s"
"$STACK_BIN/tollgate-loadgen-webhooks" --webhook-url "$STACK_WEBHOOK_URL" \
    --events "${WEBHOOK_RATE_EVENTS:-10000}" --rate "${WEBHOOK_RATE:-500}" --concurrency 64
