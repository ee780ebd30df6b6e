#!/usr/bin/env bash
# Tollgate quickstart: builds the services, runs them against a local PostgreSQL and RabbitMQ
# (installing and starting those on Debian/Ubuntu when needed), sets up a demo tenant with the
# operator CLI, registers a webhook endpoint on the demo tenant, submits real documents as
# jobs through the gateway, waits for every job to finish, prints what was billed, has a
# simulated Stripe event pay the invoice, and checks the webhooks the tenant received. Stops
# everything it started when it exits.
#
#   bash scripts/quickstart.sh                 # the demo; exit 0 when every job ended as expected
#   bash scripts/quickstart.sh --keep-running  # same, then leave the services up until Ctrl-C
#
# Environment (all optional):
#   QS_GATEWAY_PORT=18080 QS_INTAKE_PORT=18081 QS_WORKER_PORT=18082 QS_BILLING_PORT=18083
#   QS_WEBHOOK_PORT=18084 QS_DEMO_TENANT_PORT=18090
#   QS_DATABASE=tollgate_quickstart   dropped and recreated on every run
#   QS_DOCS_DIR=/usr/share/common-licenses   the documents to count (default: that folder, or
#                                     the repository's own *.md files when it is absent)
#   QS_TIMEOUT=120                    seconds to wait for the jobs
#   DATABASE_URL / AMQP_URL           another PostgreSQL / RabbitMQ (see scripts/lib.sh)
#   CARGO_TARGET_DIR                  default ~/.cache/tollgate/target
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

KEEP_RUNNING=0
for arg in "$@"; do
    case "$arg" in
        --keep-running) KEEP_RUNNING=1 ;;
        -h | --help)
            sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) tg_die "unknown argument: $arg (try --help)" ;;
    esac
done

GATEWAY_PORT=${QS_GATEWAY_PORT:-18080}
INTAKE_PORT=${QS_INTAKE_PORT:-18081}
WORKER_PORT=${QS_WORKER_PORT:-18082}
BILLING_PORT=${QS_BILLING_PORT:-18083}
WEBHOOK_PORT=${QS_WEBHOOK_PORT:-18084}
DEMO_PORT=${QS_DEMO_TENANT_PORT:-18090}
QS_DATABASE=${QS_DATABASE:-tollgate_quickstart}
QS_TIMEOUT=${QS_TIMEOUT:-120}
AMQP_PREFIX=tollgate_qs
GATEWAY=http://127.0.0.1:$GATEWAY_PORT
DEMO=http://127.0.0.1:$DEMO_PORT
# Inbound PSP webhooks go straight to the webhook service (the ingress routes /webhooks there).
WEBHOOK=http://127.0.0.1:$WEBHOOK_PORT
MAX_DOC_BYTES=$((200 * 1024))

STATE_DIR=$ROOT/.tollgate
LOG_DIR=$STATE_DIR/logs
PID_FILE=$STATE_DIR/pids
WORK=$STATE_DIR/quickstart
mkdir -p "$LOG_DIR" "$WORK"
rm -f "$WORK"/*.json "$WORK"/*.body 2>/dev/null || true

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# ---------------------------------------------------------------------------------------------
# 1. Prerequisites

step "Checking prerequisites"
ensure_services
# JSON encoding/decoding: python3 (resolved once: version-manager shims cost ~0.5 s a call),
# else jq 1.6+.
PYTHON=''
if [ "${QS_JSON_TOOL:-}" != jq ] && command -v python3 >/dev/null 2>&1; then
    PYTHON=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)
fi
if [ -n "$PYTHON" ]; then
    JSON_TOOL=python3
elif command -v jq >/dev/null 2>&1 && jq -n --rawfile x /dev/null 1 >/dev/null 2>&1; then
    JSON_TOOL=jq
elif tg_can_apt; then
    tg_apt_install python3
    PYTHON=$(command -v python3)
    JSON_TOOL=python3
else
    tg_die "python3 or jq is needed to encode JSON: $(tg_install_hint python3 | head -n 1)"
fi

# Services a previous, interrupted run may have left behind (only pids this script recorded).
if [ -f "$PID_FILE" ]; then
    while read -r name pid; do
        if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q tollgate; then
            tg_warn "stopping $name (pid $pid) left over from an earlier run"
            kill "$pid" 2>/dev/null || true
        fi
    done <"$PID_FILE"
    sleep 1
    rm -f "$PID_FILE"
fi
for port in "$GATEWAY_PORT" "$INTAKE_PORT" "$WORKER_PORT" "$BILLING_PORT" "$WEBHOOK_PORT" "$DEMO_PORT"; do
    if tg_tcp_open 127.0.0.1 "$port"; then
        tg_die "port $port is already in use; free it or choose other ports (QS_GATEWAY_PORT, QS_INTAKE_PORT, QS_WORKER_PORT, QS_BILLING_PORT, QS_WEBHOOK_PORT, QS_DEMO_TENANT_PORT)"
    fi
done

# ---------------------------------------------------------------------------------------------
# 2. Build

step "Building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release \
    -p tollgate-gateway -p tollgate-job-intake -p tollgate-worker -p tollgate-billing -p tollgate-webhook \
    -p tollgate-cli -p tollgate-demo-tenant
BIN=$CARGO_TARGET_DIR/release
CTL_BIN=$BIN/tollgatectl
[ -x "$CTL_BIN" ] || tg_die "$CTL_BIN was not built (crates/cli must define the tollgatectl binary)"
for b in tollgate-gateway tollgate-job-intake tollgate-worker tollgate-billing tollgate-webhook tollgate-demo-tenant; do
    [ -x "$BIN/$b" ] || tg_die "$BIN/$b was not built"
done

# ---------------------------------------------------------------------------------------------
# 3. Database

step "Database $QS_DATABASE (fresh)"
drop_database "$QS_DATABASE"
ensure_database "$QS_DATABASE"
DB_URL=$(pg_url "$QS_DATABASE")
AMQP=$AMQP_URL_DETECTED
# tollgatectl's billing commands write invoice PDFs where the billing service would.
ctl() {
    DATABASE_URL=$DB_URL TOLLGATE_AMQP_PREFIX=$AMQP_PREFIX BILLING__DOCUMENTS__ROOT=${ARTIFACTS_DIR:-} \
        BILLING__DOCUMENTS__SIGNING_KEY=${SIGNING_KEY:-} BILLING__DOCUMENTS__PUBLIC_BASE_URL=$GATEWAY \
        "$CTL_BIN" "$@"
}
ctl migrate

# ---------------------------------------------------------------------------------------------
# 4. Services

PIDS=()
# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        printf '\n' >&2
        tg_log "stopping services (logs stay in ${LOG_DIR#"$ROOT"/})"
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "${PIDS[@]}" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "${PIDS[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD... (environment assignments go through `env`)
start() {
    local name=$1
    shift
    : >"$LOG_DIR/$name.log"
    env "$@" >>"$LOG_DIR/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    printf '%s %s\n' "$name" "$pid" >>"$PID_FILE"
    printf '  %-13s pid %-7s log %s\n' "$name" "$pid" "${LOG_DIR#"$ROOT"/}/$name.log"
}

INTERNAL_TOKEN=qs_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# Invoice PDFs (billing) and artifacts (job-intake) share one store and link-signing key.
ARTIFACTS_DIR=$ROOT/.tollgate/quickstart/artifacts
SIGNING_KEY=qs_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# The Stripe endpoint secret the webhook service verifies `Stripe-Signature` with (at Stripe it
# is the endpoint's signing secret; here the quickstart plays Stripe, so it makes one up).
STRIPE_WEBHOOK_SECRET=whsec_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

step "Starting services"
start demo-tenant "$BIN/tollgate-demo-tenant" --addr "127.0.0.1:$DEMO_PORT"
start job-intake \
    INTAKE__HTTP__PORT="$INTAKE_PORT" \
    INTAKE__DATABASE__URL="$DB_URL" \
    INTAKE__AMQP__URL="$AMQP" \
    INTAKE__AMQP__PREFIX="$AMQP_PREFIX" \
    INTAKE__AMQP__QUEUE_TYPE=classic \
    INTAKE__AMQP__QUEUE_EXPIRES_MS=600000 \
    INTAKE__INTERNAL_TOKEN="$INTERNAL_TOKEN" \
    INTAKE__ARTIFACTS__ROOT="$ARTIFACTS_DIR" \
    INTAKE__ARTIFACTS__SIGNING_KEY="$SIGNING_KEY" \
    INTAKE__ARTIFACTS__PUBLIC_BASE_URL="$GATEWAY" \
    "$BIN/tollgate-job-intake"
start worker \
    WORKER__HTTP__PORT="$WORKER_PORT" \
    WORKER__DATABASE__URL="$DB_URL" \
    WORKER__AMQP__URL="$AMQP" \
    WORKER__AMQP__PREFIX="$AMQP_PREFIX" \
    WORKER__AMQP__QUEUE_TYPE=classic \
    WORKER__AMQP__QUEUE_EXPIRES_MS=600000 \
    WORKER__RETRY__BASE_DELAY_MS=500 \
    WORKER__JOB_EVENTS_REFRESH_MS=500 \
    "$BIN/tollgate-worker"
start billing \
    BILLING__HTTP__PORT="$BILLING_PORT" \
    BILLING__DATABASE__URL="$DB_URL" \
    BILLING__AMQP__URL="$AMQP" \
    BILLING__AMQP__PREFIX="$AMQP_PREFIX" \
    BILLING__AMQP__QUEUE_TYPE=classic \
    BILLING__AMQP__QUEUE_EXPIRES_MS=600000 \
    BILLING__INTERNAL_TOKEN="$INTERNAL_TOKEN" \
    BILLING__DOCUMENTS__ROOT="$ARTIFACTS_DIR" \
    BILLING__DOCUMENTS__SIGNING_KEY="$SIGNING_KEY" \
    BILLING__DOCUMENTS__PUBLIC_BASE_URL="$GATEWAY" \
    "$BIN/tollgate-billing"
# allow-private-networks: the demo tenant's receiver is on 127.0.0.1, which the webhook
# service refuses by default (endpoint URLs are tenants' input).
start webhook \
    WEBHOOK__HTTP__PORT="$WEBHOOK_PORT" \
    WEBHOOK__DATABASE__URL="$DB_URL" \
    WEBHOOK__AMQP__URL="$AMQP" \
    WEBHOOK__AMQP__PREFIX="$AMQP_PREFIX" \
    WEBHOOK__AMQP__QUEUE_TYPE=classic \
    WEBHOOK__AMQP__QUEUE_EXPIRES_MS=600000 \
    WEBHOOK__INTERNAL_TOKEN="$INTERNAL_TOKEN" \
    WEBHOOK__STRIPE__ENDPOINT_SECRETS="$STRIPE_WEBHOOK_SECRET" \
    WEBHOOK__DELIVERY__ALLOW_PRIVATE_NETWORKS=true \
    "$BIN/tollgate-webhook"
start gateway \
    GATEWAY__HTTP__PORT="$GATEWAY_PORT" \
    GATEWAY__DATABASE__URL="$DB_URL" \
    GATEWAY__INTAKE_URL="http://127.0.0.1:$INTAKE_PORT" \
    GATEWAY__BILLING_URL="http://127.0.0.1:$BILLING_PORT" \
    GATEWAY__WEBHOOK_URL="$WEBHOOK" \
    GATEWAY__INTERNAL_TOKEN="$INTERNAL_TOKEN" \
    "$BIN/tollgate-gateway"

# Waits until every service answers 200 on its probe, or dies showing the logs.
wait_ready() {
    local -a names=(demo-tenant job-intake worker billing webhook gateway)
    local -a urls=("$DEMO/healthz" "http://127.0.0.1:$INTAKE_PORT/readyz" "http://127.0.0.1:$WORKER_PORT/readyz"
        "http://127.0.0.1:$BILLING_PORT/readyz" "$WEBHOOK/readyz" "$GATEWAY/readyz")
    local -a ready=(0 0 0 0 0 0)
    local start_s=$SECONDS i all
    while :; do
        all=1
        for i in "${!names[@]}"; do
            [ "${ready[$i]}" = 1 ] && continue
            if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
                printf '\n%s exited during start-up; last log lines:\n' "${names[$i]}" >&2
                tail -n 30 "$LOG_DIR/${names[$i]}.log" >&2
                exit 1
            fi
            if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${urls[$i]}" || true)" = 200 ]; then
                ready[i]=1
                printf '  %-13s ready after %ss (%s)\n' "${names[$i]}" "$((SECONDS - start_s))" "${urls[$i]}"
            else
                all=0
            fi
        done
        [ "$all" = 1 ] && return 0
        if ((SECONDS - start_s >= 60)); then
            for i in "${!names[@]}"; do
                if [ "${ready[$i]}" != 1 ]; then
                    printf '\n%s is not ready after 60 s (%s); last log lines:\n' "${names[$i]}" "${urls[$i]}" >&2
                    tail -n 30 "$LOG_DIR/${names[$i]}.log" >&2
                fi
            done
            exit 1
        fi
        sleep 0.5
    done
}
wait_ready

# ---------------------------------------------------------------------------------------------
# 5. Tenant, key, job types

CHECK_FAILURES=()

step "Setting up tenant demo with tollgatectl"
TENANT_ID=$(ctl tenant create --name demo --rate-limit-per-minute 100000)
echo "  tenant demo: $TENANT_ID"
API_KEY=$(ctl key create --tenant demo --name quickstart 2>/dev/null)
case "$API_KEY" in
    tg_*) echo "  API key: ${API_KEY:0:12}… (shown once; only its SHA-256 is stored)" ;;
    *) tg_die "tollgatectl key create printed no key" ;;
esac
ctl job-type set --tenant demo --name wordcount --endpoint "$DEMO/wordcount" --weight 1 | sed 's/^/  /'
ctl job-type set --tenant demo --name summarize-flaky --endpoint "$DEMO/flaky" --weight 3 --max-attempts 3 | sed 's/^/  /'
ctl job-type set --tenant demo --name strict --endpoint "$DEMO/reject" | sed 's/^/  /'
ctl job-type set --tenant demo --name unavailable --endpoint "$DEMO/unavailable" --max-attempts 3 | sed 's/^/  /'

# ---------------------------------------------------------------------------------------------
# 6. Submissions

# body_for TYPE NAME FILE [FAIL_TIMES] > JSON: {"type", "input": {"name", "text"[, "fail_times"]}}
body_for() {
    if [ "$JSON_TOOL" = python3 ]; then
        "$PYTHON" - "$@" <<'PY'
import json, sys
job_type, name, path = sys.argv[1:4]
with open(path, encoding="utf-8", errors="replace") as f:
    doc = {"name": name, "text": f.read()}
if len(sys.argv) > 4:
    doc["fail_times"] = int(sys.argv[4])
json.dump({"type": job_type, "input": doc}, sys.stdout)
PY
    else
        jq -n --arg type "$1" --arg name "$2" --rawfile text "$3" --argjson fail "${4:-null}" \
            '{type: $type, input: ({name: $name, text: $text} + (if $fail == null then {} else {fail_times: $fail} end))}'
    fi
}

# json_fields FILE PATH... prints the values at dotted PATHs, tab-separated ("-" when absent).
json_fields() {
    local file=$1
    shift
    if [ "$JSON_TOOL" = python3 ]; then
        "$PYTHON" - "$file" "$@" <<'PY'
import json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
except Exception:
    doc = {}
out = []
for path in sys.argv[2:]:
    v = doc
    for part in path.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    out.append("-" if v is None else str(v))
print("\t".join(out))
PY
    else
        local filter='' p
        for p in "$@"; do filter+="${filter:+, }(.${p} // \"-\" | tostring)"; done
        jq -r "[$filter] | join(\"\\t\")" "$file" 2>/dev/null || printf -- '-\n'
    fi
}

JOB_IDS=()
JOB_TYPES=()
JOB_NAMES=()
JOB_EXPECT=()
N=0

# post BODY_FILE OUT_FILE [EXTRA CURL ARGS...] prints the HTTP status.
post() {
    local body=$1 out=$2
    shift 2
    curl -sS -o "$out" -w '%{http_code}' --max-time 30 \
        -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
        "$@" --data-binary "@$body" "$GATEWAY/v1/jobs" || echo 000
}

# submit TYPE NAME FILE EXPECTED_STATE [FAIL_TIMES]
submit() {
    local type=$1 name=$2 file=$3 expect=$4 fail=${5:-}
    N=$((N + 1))
    local body=$WORK/submit-$N.body out=$WORK/submit-$N.json code id err
    body_for "$type" "$name" "$file" ${fail:+"$fail"} >"$body"
    code=$(post "$body" "$out")
    IFS=$'\t' read -r id err < <(json_fields "$out" id error.code)
    if [ "$code" = 202 ] && [ "$id" != - ]; then
        JOB_IDS+=("$id")
        JOB_TYPES+=("$type")
        JOB_NAMES+=("$name${fail:+ (fail_times=$fail)}")
        JOB_EXPECT+=("$expect")
        printf '  %s %-16s %-30s %s\n' "$code" "$type" "$name${fail:+ fail_times=$fail}" "$id"
    else
        printf '  %s %-16s %-30s %s\n' "$code" "$type" "$name" "REJECTED ${err}: $(head -c 300 "$out")"
        CHECK_FAILURES+=("submission of $type $name answered $code")
    fi
}

# The demo tenant's receiver (examples/demo-tenant, POST /webhooks) verifies each delivery's
# Standard Webhooks signature with the endpoint's secret and counts the event types.
WEBHOOK_TYPES=(job.succeeded job.dead invoice.finalized invoice.paid)
step "Webhook endpoint for tenant demo (POST $GATEWAY/v1/webhook-endpoints)"
ENDPOINT_ID=''
types_json=$(printf '"%s",' "${WEBHOOK_TYPES[@]}")
printf '{"url":"%s/webhooks","description":"quickstart: the demo tenant receiver","event_types":[%s]}' \
    "$DEMO" "${types_json%,}" >"$WORK/endpoint.body"
code=$(curl -sS -o "$WORK/endpoint.json" -w '%{http_code}' --max-time 10 \
    -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
    --data-binary "@$WORK/endpoint.body" "$GATEWAY/v1/webhook-endpoints" || echo 000)
IFS=$'\t' read -r endpoint_id endpoint_secret err < <(json_fields "$WORK/endpoint.json" id secret error.code)
if [ "$code" = 201 ] && [ "$endpoint_id" != - ] && [ "$endpoint_secret" != - ]; then
    printf '  %s %s -> %s/webhooks for %s\n' "$code" "$endpoint_id" "$DEMO" "${WEBHOOK_TYPES[*]}"
    # Tollgate makes the secret and shows it once; the receiver, already running, is given it.
    code=$(curl -sS -o "$WORK/receiver-secret.json" -w '%{http_code}' --max-time 10 -X PUT \
        -H 'Content-Type: application/json' -d "{\"secret\":\"$endpoint_secret\"}" \
        "$DEMO/webhooks/secret" || echo 000)
    printf '  secret %s… (returned once) given to the receiver: PUT %s/webhooks/secret -> %s\n' \
        "${endpoint_secret:0:10}" "$DEMO" "$code"
    if [ "$code" = 204 ]; then
        ENDPOINT_ID=$endpoint_id
    else
        CHECK_FAILURES+=("the demo tenant refused the webhook secret ($code: $(head -c 200 "$WORK/receiver-secret.json"))")
    fi
    # The worker announces job events only for tenants with an endpoint; it re-reads them every
    # WORKER__JOB_EVENTS_REFRESH_MS (500 here): wait a few rounds before submitting.
    sleep 1.5
else
    printf '  %s %s %s\n' "$code" "$err" "$(head -c 300 "$WORK/endpoint.json")"
    CHECK_FAILURES+=("webhook endpoint registration answered $code $err")
fi

DOCS_DIR=${QS_DOCS_DIR:-/usr/share/common-licenses}
DOCS=()
DOCS_LABEL=$DOCS_DIR
if [ -d "$DOCS_DIR" ]; then
    for f in "$DOCS_DIR"/*; do
        [ -f "$f" ] || continue
        if [ "$(wc -c <"$f")" -gt "$MAX_DOC_BYTES" ]; then
            echo "  (skipping $f: larger than 200 KB)"
            continue
        fi
        DOCS+=("$f")
    done
fi
if [ "${#DOCS[@]}" -eq 0 ]; then
    echo "  ($DOCS_DIR not found or empty; counting this repository's Markdown files instead)"
    DOCS_LABEL="this repository's *.md files"
    while IFS= read -r f; do
        [ "$(wc -c <"$f")" -le "$MAX_DOC_BYTES" ] && DOCS+=("$f")
    done < <(find "$ROOT" -name '*.md' -not -path '*/target/*' -not -path '*/.git/*' -not -path '*/.tollgate/*' | sort)
fi
[ "${#DOCS[@]}" -gt 0 ] || tg_die "no documents to submit"
# A document's display name: its path in the repository, or its file name.
docname() {
    case "$1" in
        "$ROOT"/*) printf '%s' "${1#"$ROOT"/}" ;;
        *) basename "$1" ;;
    esac
}

step "Submitting ${#DOCS[@]} documents from ${DOCS_LABEL} as wordcount jobs (POST $GATEWAY/v1/jobs)"
SUBMIT_START=$SECONDS
for f in "${DOCS[@]}"; do
    submit wordcount "$(docname "$f")" "$f" succeeded
done

step "Submitting jobs that fail on purpose"
FLAKY_DOCS=("${DOCS[0]}" "${DOCS[$((${#DOCS[@]} / 2))]}" "${DOCS[$((${#DOCS[@]} - 1))]}")
submit summarize-flaky "$(docname "${FLAKY_DOCS[0]}")" "${FLAKY_DOCS[0]}" succeeded 1
submit summarize-flaky "$(docname "${FLAKY_DOCS[1]}")" "${FLAKY_DOCS[1]}" succeeded 2
submit summarize-flaky "$(docname "${FLAKY_DOCS[2]}")" "${FLAKY_DOCS[2]}" succeeded 1
submit strict "$(docname "${DOCS[0]}")" "${DOCS[0]}" failed
submit unavailable "$(docname "${DOCS[0]}")" "${DOCS[0]}" dead

step "Idempotency: the same request twice with one Idempotency-Key"
IDEM_KEY=quickstart-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
IDEM_NAME="$(docname "${DOCS[0]}") (idempotent resubmit)"
body_for wordcount "$IDEM_NAME" "${DOCS[0]}" >"$WORK/idem.body"
code1=$(post "$WORK/idem.body" "$WORK/idem-1.json" -H "Idempotency-Key: $IDEM_KEY")
code2=$(post "$WORK/idem.body" "$WORK/idem-2.json" -H "Idempotency-Key: $IDEM_KEY")
id1=$(json_fields "$WORK/idem-1.json" id)
id2=$(json_fields "$WORK/idem-2.json" id)
printf '  first  -> %s %s\n  second -> %s %s\n' "$code1" "$id1" "$code2" "$id2"
if [ "$code1" = 202 ] && [ "$code2" = 200 ] && [ "$id1" = "$id2" ] && [ "$id1" != - ]; then
    echo "  same job id, 200 the second time: one job, billed once"
    JOB_IDS+=("$id1")
    JOB_TYPES+=(wordcount)
    JOB_NAMES+=("$IDEM_NAME")
    JOB_EXPECT+=(succeeded)
else
    CHECK_FAILURES+=("idempotent resubmission: $code1 $id1 then $code2 $id2")
fi
# The same key with a different request is a conflict, not a silent second job.
body_for wordcount "$IDEM_NAME (changed)" "${DOCS[0]}" >"$WORK/idem-other.body"
code3=$(post "$WORK/idem-other.body" "$WORK/idem-3.json" -H "Idempotency-Key: $IDEM_KEY")
err3=$(json_fields "$WORK/idem-3.json" error.code)
printf '  same key, different input -> %s %s\n' "$code3" "$err3"
[ "$code3" = 409 ] && [ "$err3" = IDEMPOTENCY_KEY_REUSED ] || CHECK_FAILURES+=("idempotency conflict answered $code3 $err3")

step "Errors are JSON with a stable code"
printf '{"type":"no-such-type","input":{}}' >"$WORK/unknown.body"
code=$(post "$WORK/unknown.body" "$WORK/unknown.json")
err=$(json_fields "$WORK/unknown.json" error.code)
printf '  unknown job type -> %s %s\n' "$code" "$err"
[ "$code" = 422 ] && [ "$err" = UNKNOWN_JOB_TYPE ] || CHECK_FAILURES+=("unknown job type answered $code $err")
code=$(curl -sS -o "$WORK/badkey.json" -w '%{http_code}' -H 'Authorization: Bearer tg_nope0000_wrong' \
    -H 'Content-Type: application/json' --data-binary "@$WORK/unknown.body" "$GATEWAY/v1/jobs" || echo 000)
err=$(json_fields "$WORK/badkey.json" error.code)
printf '  wrong API key    -> %s %s\n' "$code" "$err"
[ "$code" = 401 ] && [ "$err" = INVALID_API_KEY ] || CHECK_FAILURES+=("wrong API key answered $code $err")
echo "  submitted ${#JOB_IDS[@]} jobs in $((SECONDS - SUBMIT_START))s"

# ---------------------------------------------------------------------------------------------
# 7. Wait for the jobs

# Fetches every job into $WORK/job-<i>.json and fills STATUS[i]; prints a progress line.
declare -a STATUS
refresh() {
    local i s
    local -a fetched=()
    for i in "${!JOB_IDS[@]}"; do
        case "${STATUS[$i]:-}" in succeeded | failed | dead) continue ;; esac
        curl -sS -o "$WORK/job-$i.json" --max-time 10 -H "Authorization: Bearer $API_KEY" \
            "$GATEWAY/v1/jobs/${JOB_IDS[$i]}" 2>/dev/null || true
        fetched+=("$i")
    done
    ((${#fetched[@]})) || return 0
    # One decoder run for the whole round.
    i=0
    while IFS= read -r s; do
        STATUS[fetched[i]]=$s
        i=$((i + 1))
    done < <(json_status_of "${fetched[@]}")
}
# json_status_of INDEX... prints the status in $WORK/job-<INDEX>.json for each, one a line.
json_status_of() {
    local i
    if [ "$JSON_TOOL" = python3 ]; then
        "$PYTHON" - "$WORK" "$@" <<'PY'
import json, sys
for i in sys.argv[2:]:
    try:
        with open(f"{sys.argv[1]}/job-{i}.json", encoding="utf-8") as f:
            print(json.load(f).get("status") or "-")
    except Exception:
        print("-")
PY
    else
        for i in "$@"; do
            jq -r '.status // "-"' "$WORK/job-$i.json" 2>/dev/null || echo -
        done
    fi
}
count_status() {
    local want=$1 s n=0
    for s in "${STATUS[@]}"; do [ "$s" = "$want" ] && n=$((n + 1)); done
    echo "$n"
}

step "Waiting for ${#JOB_IDS[@]} jobs (GET /v1/jobs/{id}, timeout ${QS_TIMEOUT}s)"
WAIT_START=$SECONDS
last_line=''
while :; do
    refresh
    done_n=$(($(count_status succeeded) + $(count_status failed) + $(count_status dead)))
    line=$(printf 'queued %s, processing %s, retrying %s | succeeded %s, failed %s, dead %s' \
        "$(count_status queued)" "$(count_status processing)" "$(count_status retrying)" \
        "$(count_status succeeded)" "$(count_status failed)" "$(count_status dead)")
    if [ "$line" != "$last_line" ]; then
        printf '  [%3ss] %s\n' "$((SECONDS - WAIT_START))" "$line"
        last_line=$line
    fi
    [ "$done_n" -eq "${#JOB_IDS[@]}" ] && break
    if ((SECONDS - WAIT_START >= QS_TIMEOUT)); then
        tg_warn "not every job finished within ${QS_TIMEOUT}s"
        CHECK_FAILURES+=("jobs still unfinished after ${QS_TIMEOUT}s")
        break
    fi
    sleep 1
done

# ---------------------------------------------------------------------------------------------
# 8. Results

step "tollgatectl summary --tenant demo"
ctl summary --tenant demo || CHECK_FAILURES+=("tollgatectl summary failed")

step "Jobs"
printf '  %-16s %-42s %-10s %8s %8s %8s  %s\n' type document status attempts units cost ""
for i in "${!JOB_IDS[@]}"; do
    IFS=$'\t' read -r status attempts units cost last_error < <(json_fields "$WORK/job-$i.json" status attempts units cost last_error)
    mark=ok
    if [ "$status" != "${JOB_EXPECT[$i]}" ]; then
        mark="EXPECTED ${JOB_EXPECT[$i]}"
        CHECK_FAILURES+=("${JOB_TYPES[$i]} ${JOB_NAMES[$i]} (${JOB_IDS[$i]}) is $status, expected ${JOB_EXPECT[$i]}")
    fi
    note=''
    if [ "$status" = failed ] || [ "$status" = dead ]; then
        note=" — ${last_error:0:70}"
    fi
    printf '  %-16s %-42s %-10s %8s %8s %8s  %s%s\n' "${JOB_TYPES[$i]}" "${JOB_NAMES[$i]:0:42}" \
        "$status" "$attempts" "$units" "$cost" "$mark" "$note"
done

step "Usage metering: the project-tool metrics catalog, an account, a workspace, usage events"
ctl metrics apply --tenant demo examples/metrics/project-tool.toml | sed 's/^/  /' ||
    CHECK_FAILURES+=("tollgatectl metrics apply failed")
api_post() { # path json → body on stdout
    curl -sS --max-time 10 -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
        -d "$2" "$GATEWAY$1"
}
api_post /v1/accounts '{"external_id":"ada","name":"Ada Lovelace","kind":"personal"}' >/dev/null || true
api_post /v1/workspaces '{"external_id":"ada-notes","name":"Ada notes","account":"ada"}' >/dev/null || true
# One document read = one `doc_create` operation and its word count as AI tokens, per
# succeeded wordcount job (event ids are stable, so a re-run of this step counts nothing twice).
events=''
for i in "${!JOB_IDS[@]}"; do
    [ "${JOB_TYPES[$i]}" = wordcount ] && [ "${STATUS[$i]}" = succeeded ] || continue
    units=$(json_fields "$WORK/job-$i.json" units)
    events+="{\"id\":\"doc-$i\",\"metric\":\"api_operations\",\"workspace\":\"ada-notes\",\"properties\":{\"operation\":\"doc_create\"}},"
    events+="{\"id\":\"summary-$i\",\"metric\":\"api_operations\",\"workspace\":\"ada-notes\",\"properties\":{\"operation\":\"ai_summary\"}},"
    events+="{\"id\":\"tokens-$i\",\"metric\":\"ai_tokens\",\"workspace\":\"ada-notes\",\"properties\":{\"tokens\":${units:-0}}},"
done
events+='{"id":"bad-1","metric":"api_operations","workspace":"ada-notes","properties":{"operation":"drop_database"}}'
for attempt in first again; do
    api_post /v1/events/batch "{\"events\":[$events]}" >"$WORK/events-$attempt.json" || true
    IFS=$'\t' read -r accepted duplicates rejected < <(json_fields "$WORK/events-$attempt.json" accepted duplicates rejected)
    printf '  POST /v1/events/batch (%s): accepted %s, duplicates %s, rejected %s\n' \
        "$attempt" "$accepted" "$duplicates" "$rejected"
done
if [ "${accepted:-}" != 0 ] || [ "${rejected:-}" != 1 ]; then
    CHECK_FAILURES+=("resending the event batch was not all duplicates (accepted $accepted, rejected $rejected)")
fi
step "GET /v1/usage?period=day&format=csv (events, gateway traffic, jobs)"
as_table() { if command -v column >/dev/null 2>&1; then column -s, -t; else cat; fi; }
if curl -fsS --max-time 10 -H "Authorization: Bearer $API_KEY" \
    "$GATEWAY/v1/usage?period=day&format=csv" >"$WORK/usage.csv"; then
    cut -d, -f1,2,3,6,8,9,11 "$WORK/usage.csv" | as_table | sed 's/^/  /'
else
    CHECK_FAILURES+=("GET /v1/usage failed")
fi

step "Billing check: one ledger entry per succeeded job, cost = units × weight"
ledger_n="?" ledger_cost="?" succeeded_n="?" job_cost="?"
read -r ledger_n ledger_cost succeeded_n job_cost < <(psql "$DB_URL" -AtF ' ' -c \
    "SELECT (SELECT count(*) FROM ledger_entries WHERE source_kind = 'job'),
            (SELECT coalesce(sum(cost), 0) FROM ledger_entries WHERE source_kind = 'job'),
            (SELECT count(*) FROM jobs WHERE status = 'succeeded'),
            (SELECT coalesce(sum(cost), 0) FROM jobs WHERE status = 'succeeded')") || true
printf '  ledger entries %s (cost %s) for %s succeeded jobs (cost %s)\n' "$ledger_n" "$ledger_cost" "$succeeded_n" "$job_cost"
if [ "$ledger_n" != "$succeeded_n" ] || [ "$ledger_cost" != "$job_cost" ]; then
    CHECK_FAILURES+=("ledger ($ledger_n entries, cost $ledger_cost) does not match succeeded jobs ($succeeded_n, cost $job_cost)")
fi

step "Billing: a plan, a subscription, a billing run, a finalized invoice with its PDF"
# The subscription started 28 days ago, so its month ends within the next 3 days; the runs use
# --as-of as a clock: the period closes into a draft, then the grace window (3 days) ends.
ctl catalog apply --tenant demo examples/catalog/project-tool.toml | sed 's/^/  /' ||
    CHECK_FAILURES+=("tollgatectl catalog apply failed")
SUB_START=$(date -u -d '-28 days' +%Y-%m-%dT%H:%M:%SZ)
ctl subscription start --tenant demo --account ada --plan team --start-at "$SUB_START" --skip-trial |
    sed 's/^/  /' || CHECK_FAILURES+=("tollgatectl subscription start failed")
ctl billing run --tenant demo --as-of "$(date -u -d '+4 days' +%Y-%m-%dT%H:%M:%SZ)" | sed 's/^/  draft run: /' ||
    CHECK_FAILURES+=("billing run (close) failed")
ctl billing run --tenant demo --as-of "$(date -u -d '+8 days' +%Y-%m-%dT%H:%M:%SZ)" | sed 's/^/  final run: /' ||
    CHECK_FAILURES+=("billing run (finalize) failed")
ctl invoice list --tenant demo | sed 's/^/  /' || CHECK_FAILURES+=("tollgatectl invoice list failed")
curl -sS --max-time 10 -H "Authorization: Bearer $API_KEY" "$GATEWAY/v1/invoices?limit=1" >"$WORK/invoices.json" || true
INVOICE_ID=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"]; print(d[0]["id"] if d else "")' "$WORK/invoices.json" 2>/dev/null || true)
if [ -n "$INVOICE_ID" ]; then
    curl -sS --max-time 10 -H "Authorization: Bearer $API_KEY" "$GATEWAY/v1/invoices/$INVOICE_ID" >"$WORK/invoice.json" || true
    python3 - "$WORK/invoice.json" <<'PY' || CHECK_FAILURES+=("invoice JSON unreadable")
import json, sys
inv = json.load(open(sys.argv[1]))
print(f"  {inv['number']} ({inv['status']}) for {inv['account_name']}, {inv['period_start'][:10]} to {inv['period_end'][:10]}")
for line in inv["lines"]:
    qty = line.get("quantity") or ""
    print(f"    {line['kind']:<9} {line['description'][:48]:<48} {qty:>10} {inv['currency']} {line['amount']:>10}")
print(f"    {'total':<9} {'':<48} {'':>10} {inv['currency']} {inv['total']:>10}")
PY
    PDF_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("pdf_url") or "")' "$WORK/invoice.json" 2>/dev/null || true)
    if [ -n "$PDF_URL" ] && curl -fsS --max-time 10 -o "$WORK/invoice.pdf" "$PDF_URL"; then
        printf '  PDF (signed link, %s bytes): %s\n' "$(wc -c <"$WORK/invoice.pdf")" "${WORK#"$ROOT"/}/invoice.pdf"
    else
        CHECK_FAILURES+=("the invoice PDF could not be downloaded through its signed link")
    fi
else
    CHECK_FAILURES+=("no invoice was produced by the billing run")
fi

# Stripe-Signature for a body (https://docs.stripe.com/webhooks#verify-manually):
# t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" under the endpoint secret>. With
# tests/js installed (npm ci --prefix tests/js) the official Stripe SDK's test helper makes it,
# else openssl, else python3.
STRIPE_SIGNER=''
if command -v node >/dev/null 2>&1 && [ -d "$ROOT/tests/js/node_modules/stripe" ]; then
    STRIPE_SIGNER="the Stripe SDK (node tests/js/stripe-header.js)"
elif command -v openssl >/dev/null 2>&1; then
    STRIPE_SIGNER="openssl dgst -sha256 -hmac"
elif [ -n "$PYTHON" ]; then
    STRIPE_SIGNER="python3 hmac"
fi
# stripe_signature SECRET TIMESTAMP BODY prints the header value (BODY: JSON without backslashes).
stripe_signature() {
    local secret=$1 t=$2 body=$3
    case "$STRIPE_SIGNER" in
        "the Stripe SDK"*)
            printf '{"payload":"%s","secret":"%s","timestamp":%s}' "${body//\"/\\\"}" "$secret" "$t" |
                node "$ROOT/tests/js/stripe-header.js" | sed -n 's/.*"header":"\([^"]*\)".*/\1/p'
            ;;
        openssl*)
            printf 't=%s,v1=%s' "$t" "$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.*= *//')"
            ;;
        python3*)
            "$PYTHON" -c 'import hashlib, hmac, sys
s, t, b = sys.argv[1:4]
print(f"t={t},v1=" + hmac.new(s.encode(), f"{t}.{b}".encode(), hashlib.sha256).hexdigest(), end="")' "$secret" "$t" "$body"
            ;;
    esac
}
# stripe_post SIGNATURE BODY OUT prints the HTTP status of POST /webhooks/stripe.
stripe_post() {
    curl -sS -o "$3" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
        -H "Stripe-Signature: $1" --data-binary "$2" "$WEBHOOK/webhooks/stripe" || echo 000
}
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

PAID=0
if [ -n "$INVOICE_ID" ] && [ -z "$STRIPE_SIGNER" ]; then
    CHECK_FAILURES+=("nothing to sign a Stripe event with (node with tests/js, openssl or python3)")
elif [ -n "$INVOICE_ID" ]; then
    step "Stripe reports the payment: a signed invoice.payment_succeeded to POST $WEBHOOK/webhooks/stripe"
    # What Stripe sends when the customer pays (https://docs.stripe.com/api/events/object): the
    # Stripe invoice names Tollgate's invoice in its metadata, as Tollgate sets it on what it
    # creates at Stripe.
    IFS=$'\t' read -r total_minor total currency < <(json_fields "$WORK/invoice.json" total_minor total currency)
    stripe_currency=$(printf '%s' "$currency" | tr '[:upper:]' '[:lower:]')
    stripe_event() { # event id → the event JSON
        printf '{"id":"%s","object":"event","api_version":"2024-06-20","created":%s,"data":{"object":{"id":"in_qs_%s","object":"invoice","status":"paid","payment_intent":"pi_qs_%s","amount_due":%s,"amount_paid":%s,"currency":"%s","metadata":{"tollgate_invoice":"%s"}}},"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"type":"invoice.payment_succeeded"}' \
            "$1" "$(date +%s)" "$(rand_hex 8)" "$(rand_hex 8)" "$total_minor" "$total_minor" "$stripe_currency" "$INVOICE_ID"
    }
    event_id=evt_qs_$(rand_hex 12)
    event_body=$(stripe_event "$event_id")
    event_sig=$(stripe_signature "$STRIPE_WEBHOOK_SECRET" "$(date +%s)" "$event_body")
    printf '  %s: invoice %s paid (%s %s, amount_paid %s), signed with %s\n' \
        "$event_id" "$INVOICE_ID" "$currency" "$total" "$total_minor" "$STRIPE_SIGNER"
    printf '  Stripe-Signature: %s…\n' "${event_sig:0:40}"
    code=$(stripe_post "$event_sig" "$event_body" "$WORK/stripe-event.json")
    printf '  signed with the endpoint secret -> %s %s\n' "$code" "$(head -c 200 "$WORK/stripe-event.json")"
    [ "$code" = 200 ] || CHECK_FAILURES+=("the signed Stripe event answered $code: $(head -c 200 "$WORK/stripe-event.json")")
    # A forgery: another event signed with a secret that is not the endpoint's.
    forged_id=evt_qs_forged_$(rand_hex 6)
    forged_body=$(stripe_event "$forged_id")
    forged_sig=$(stripe_signature "whsec_$(rand_hex 24)" "$(date +%s)" "$forged_body")
    code=$(stripe_post "$forged_sig" "$forged_body" "$WORK/stripe-forged.json")
    err=$(json_fields "$WORK/stripe-forged.json" error.code)
    stored=$(psql "$DB_URL" -Atc "SELECT count(*) FROM psp_events WHERE event_id = '$forged_id'" 2>/dev/null || echo '?')
    printf '  forged (signed with another)    -> %s %s, %s events stored for %s\n' "$code" "$err" "$stored" "$forged_id"
    [ "$code" = 401 ] && [ "$stored" = 0 ] ||
        CHECK_FAILURES+=("a forged Stripe event answered $code $err ($stored stored), expected 401 and nothing stored")
    # The webhook service stores it and publishes it; billing applies it from its queue.
    PAY_START=$SECONDS inv_status='' paid_at=''
    while ((SECONDS - PAY_START < 30)); do
        curl -sS -o "$WORK/invoice-paid.json" --max-time 10 -H "Authorization: Bearer $API_KEY" \
            "$GATEWAY/v1/invoices/$INVOICE_ID" 2>/dev/null || true
        IFS=$'\t' read -r inv_number inv_status paid_at < <(json_fields "$WORK/invoice-paid.json" number status paid_at)
        [ "$inv_status" = paid ] && break
        sleep 0.5
    done
    printf '  GET /v1/invoices/%s -> %s %s, paid_at %s (after %ss)\n' "$INVOICE_ID" "$inv_number" "$inv_status" "$paid_at" "$((SECONDS - PAY_START))"
    if [ "$inv_status" = paid ]; then
        PAID=1
    else
        CHECK_FAILURES+=("invoice $INVOICE_ID is $inv_status 30 s after the signed invoice.payment_succeeded, expected paid")
    fi
fi

if [ -n "$ENDPOINT_ID" ]; then
    step "Webhooks the demo tenant received and verified (GET $DEMO/webhooks/received)"
    # Deliveries it must refuse: unsigned, and signed with a made-up signature.
    fake_body='{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    code_unsigned=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
        --data-binary "$fake_body" "$DEMO/webhooks" || echo 000)
    code_forged=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
        -H "webhook-id: msg_qs_forged" -H "webhook-timestamp: $(date +%s)" \
        -H "webhook-signature: v1,$(head -c 32 /dev/urandom | base64)" \
        --data-binary "$fake_body" "$DEMO/webhooks" || echo 000)
    printf '  unsigned delivery -> %s, forged signature -> %s (neither counted)\n' "$code_unsigned" "$code_forged"
    [ "$code_unsigned" = 401 ] && [ "$code_forged" = 401 ] ||
        CHECK_FAILURES+=("the demo tenant's receiver answered $code_unsigned (unsigned) and $code_forged (forged), expected 401")
    want=("$(count_status succeeded)" "$(count_status dead)" "$([ -n "$INVOICE_ID" ] && echo 1 || echo 0)" "$PAID")
    # received_counts FILE prints the count of each WEBHOOK_TYPES entry, then rejected and
    # duplicates, tab-separated.
    received_counts() {
        if [ "$JSON_TOOL" = python3 ]; then
            "$PYTHON" - "$1" "${WEBHOOK_TYPES[@]}" <<'PY'
import json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
except Exception:
    doc = {}
events = doc.get("events") or {}
out = [str(events.get(t, 0)) for t in sys.argv[2:]]
print("\t".join(out + [str(doc.get("rejected", "-")), str(doc.get("duplicates", "-"))]))
PY
        else
            jq -r --args '(.events // {}) as $e | [($ARGS.positional[] | ($e[.] // 0 | tostring)),
                (.rejected // "-" | tostring), (.duplicates // "-" | tostring)] | join("\t")' \
                "${WEBHOOK_TYPES[@]}" <"$1" 2>/dev/null || printf -- '-\n'
        fi
    }
    RECV_START=$SECONDS
    while :; do
        curl -sS -o "$WORK/received.json" --max-time 10 "$DEMO/webhooks/received" 2>/dev/null || true
        IFS=$'\t' read -r -a got < <(received_counts "$WORK/received.json")
        [ "${got[*]:0:4}" = "${want[*]}" ] && break
        ((SECONDS - RECV_START >= 30)) && break
        sleep 0.5
    done
    printf '  %-18s %8s %8s\n' event received expected
    for i in "${!WEBHOOK_TYPES[@]}"; do
        mark=ok
        if [ "${got[$i]:-}" != "${want[$i]}" ]; then
            mark=MISMATCH
            CHECK_FAILURES+=("the demo tenant received ${got[$i]:--} ${WEBHOOK_TYPES[$i]} webhooks, expected ${want[$i]}")
        fi
        printf '  %-18s %8s %8s  %s\n' "${WEBHOOK_TYPES[$i]}" "${got[$i]:--}" "${want[$i]}" "$mark"
    done
    printf '  rejected %s (the two above), duplicates %s (redeliveries of a message id, counted once)\n' \
        "${got[4]:--}" "${got[5]:--}"
    [ "${got[4]:-}" = 2 ] || CHECK_FAILURES+=("the demo tenant rejected ${got[4]:--} deliveries, expected only the 2 forged ones")
fi

step "tollgatectl jobs dead --tenant demo"
ctl jobs dead --tenant demo | sed 's/^/  /' || CHECK_FAILURES+=("tollgatectl jobs dead failed")
DEAD_ID=''
for i in "${!JOB_IDS[@]}"; do
    if [ "${STATUS[$i]}" = dead ]; then
        DEAD_ID=${JOB_IDS[$i]}
        break
    fi
done
if [ -n "$DEAD_ID" ]; then
    step "Operator replay: tollgatectl jobs replay $DEAD_ID"
    # The job goes back to queued with a fresh attempt budget through the outbox (job-intake's
    # relay publishes it); /unavailable still answers 503, so it ends dead again, its earlier
    # attempts kept in the history.
    ctl jobs replay "$DEAD_ID" | sed 's/^/  /' || CHECK_FAILURES+=("tollgatectl jobs replay failed")
    REPLAY_START=$SECONDS
    replay_status='' replay_attempts='' history=0 seen=''
    attempts_sql="SELECT count(*) FROM job_attempts WHERE job_id = '${DEAD_ID#job_}'::uuid"
    while ((SECONDS - REPLAY_START < 60)); do
        curl -sS -o "$WORK/replay.json" --max-time 10 -H "Authorization: Bearer $API_KEY" \
            "$GATEWAY/v1/jobs/$DEAD_ID" 2>/dev/null || true
        IFS=$'\t' read -r replay_status replay_attempts < <(json_fields "$WORK/replay.json" status attempts)
        [ "$replay_status" = "${seen##* }" ] || seen+=" $replay_status"
        history=$(psql "$DB_URL" -Atc "$attempts_sql" 2>/dev/null || echo 0)
        # Done when it is dead again with a second full round of attempts recorded.
        if [ "$replay_status" = dead ] && [ "$history" -ge 6 ]; then
            break
        fi
        sleep 0.5
    done
    printf '  states seen:%s; %s attempts this round; attempt history: %s rows (both rounds)\n' \
        "$seen" "$replay_attempts" "$history"
    if [ "$replay_status" != dead ] || [ "$history" -lt 6 ]; then
        CHECK_FAILURES+=("replayed job $DEAD_ID did not run again and end dead (states:$seen, $history attempts recorded)")
    fi
fi

# ---------------------------------------------------------------------------------------------
# 9. Verdict

echo
if [ "${#CHECK_FAILURES[@]}" -eq 0 ]; then
    printf '\033[1;32mQuickstart OK:\033[0m %s jobs reached their expected state (wordcount and summarize-flaky succeeded, strict failed, unavailable dead); billed once each; invoice %s finalized with its PDF, then paid by a verified Stripe event; the demo tenant verified and counted every webhook.\n' "${#JOB_IDS[@]}" "${INVOICE_ID:-?}"
    verdict=0
else
    printf '\033[1;31mQuickstart FAILED:\033[0m\n'
    printf '  - %s\n' "${CHECK_FAILURES[@]}"
    printf 'Logs: %s\n' "${LOG_DIR#"$ROOT"/}/"
    verdict=1
fi

if [ "$KEEP_RUNNING" = 1 ]; then
    cat <<EOF

Services keep running until Ctrl-C:
  gateway  $GATEWAY      (API key: $API_KEY)
  curl -s -H "Authorization: Bearer $API_KEY" '$GATEWAY/v1/jobs?limit=5'
  curl -s -H "Authorization: Bearer $API_KEY" '$GATEWAY/v1/webhook-deliveries?limit=5'
  curl -s '$DEMO/webhooks/received'     (the demo tenant's webhook counts)
  DATABASE_URL='$DB_URL' TOLLGATE_AMQP_PREFIX=$AMQP_PREFIX $CTL_BIN summary --tenant demo
EOF
    trap 'exit "$verdict"' INT TERM
    wait || true
fi
exit "$verdict"
