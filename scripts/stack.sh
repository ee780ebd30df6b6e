# shellcheck shell=bash
# Runs a whole Tollgate stack from release binaries for the benchmark and chaos scripts:
# a fresh database, the demo tenant, job-intake, the worker, billing, the webhook service and
# the gateway, a tenant with an API key and a `wordcount` job type. Source after
# scripts/lib.sh, then:
#
#   stack_up bench 19000      # database tollgate_bench, ports 19080/19081/19082/19083/19084/19090
#   stack_start_worker        # (again, after a kill)
#   stack_down                # stops what stack_up started (also on EXIT)
#
#   stack_start_gateway 19083 VAR=value…   # another gateway on the same services
#
# Exports STACK_DATABASE_URL, STACK_API_KEY, STACK_GATEWAY, STACK_WORKER_PID, STACK_BIN,
# STACK_WEBHOOK_URL (inbound PSP webhooks: not behind the gateway) and
# STACK_STRIPE_WEBHOOK_SECRET (the Stripe endpoint secret it accepts). With STACK_BIN set
# beforehand, runs the binaries there instead of building (scripts/bench-ab.sh).

stack_build() {
    # STACK_BIN set by the caller: run those binaries (an earlier build, for an A/B run).
    if [ -n "${STACK_BIN:-}" ]; then
        [ -x "$STACK_BIN/tollgate-gateway" ] || tg_die "STACK_BIN=$STACK_BIN holds no release build"
        export STACK_BIN
        return 0
    fi
    tg_log "building release binaries"
    cargo build --release --quiet -p tollgate-gateway -p tollgate-job-intake -p tollgate-worker \
        -p tollgate-billing -p tollgate-webhook -p tollgate-cli -p tollgate-demo-tenant -p tollgate-loadgen
    STACK_BIN=$CARGO_TARGET_DIR/release
    export STACK_BIN
}

stack_wait_http() { # url name logfile
    local i
    for i in $(seq 1 300); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    tail -n 30 "$3" >&2 || true
    tg_die "$2 did not become ready at $1"
}

stack_up() { # name baseport
    local name=$1 base=$2
    STACK_NAME=$name
    STACK_LOGS=$PWD/.tollgate/$name/logs
    mkdir -p "$STACK_LOGS"
    STACK_PIDS=()
    trap stack_down EXIT
    stack_build
    drop_database "tollgate_$name" >/dev/null 2>&1 || true
    ensure_database "tollgate_$name"
    STACK_DATABASE_URL=$(pg_url "tollgate_$name")
    export STACK_DATABASE_URL
    "$STACK_BIN/tollgatectl" --database-url "$STACK_DATABASE_URL" migrate >/dev/null

    STACK_GATEWAY_PORT=$((base + 80)) STACK_INTAKE_PORT=$((base + 81))
    STACK_WORKER_PORT=$((base + 82)) STACK_BILLING_PORT=$((base + 83)) STACK_DEMO_PORT=$((base + 90))
    STACK_WEBHOOK_PORT=$((base + 84))
    STACK_GATEWAY=http://127.0.0.1:$STACK_GATEWAY_PORT
    STACK_WEBHOOK_URL=http://127.0.0.1:$STACK_WEBHOOK_PORT
    STACK_STRIPE_WEBHOOK_SECRET=whsec_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export STACK_GATEWAY STACK_WEBHOOK_URL STACK_STRIPE_WEBHOOK_SECRET
    STACK_PREFIX=tollgate_${name}_$$
    STACK_AMQP_URL=${AMQP_URL_DETECTED:-amqp://guest:guest@127.0.0.1:5672/%2f}
    STACK_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    local token=$STACK_TOKEN
    # job-intake serves the download links billing signs for invoice PDFs: one store, one key.
    STACK_DOCS=$PWD/.tollgate/$name/artifacts
    STACK_SIGNING_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

    "$STACK_BIN/tollgate-demo-tenant" --addr "127.0.0.1:$STACK_DEMO_PORT" >"$STACK_LOGS/demo-tenant.log" 2>&1 &
    STACK_PIDS+=($!)
    INTAKE__HTTP__PORT=$STACK_INTAKE_PORT INTAKE__DATABASE__URL=$STACK_DATABASE_URL \
        INTAKE__DATABASE__POOL_SIZE=${STACK_INTAKE_POOL:-8} \
        INTAKE__AMQP__URL=$STACK_AMQP_URL INTAKE__AMQP__PREFIX=$STACK_PREFIX \
        INTAKE__AMQP__QUEUE_TYPE=${STACK_QUEUE_TYPE:-quorum} \
        INTAKE__INTERNAL_TOKEN=$token RUST_LOG=${RUST_LOG:-warn} \
        INTAKE__ARTIFACTS__ROOT=$STACK_DOCS INTAKE__ARTIFACTS__SIGNING_KEY=$STACK_SIGNING_KEY \
        INTAKE__ARTIFACTS__PUBLIC_BASE_URL=$STACK_GATEWAY \
        "$STACK_BIN/tollgate-job-intake" >"$STACK_LOGS/job-intake.log" 2>&1 &
    STACK_PIDS+=($!)
    BILLING__HTTP__PORT=$STACK_BILLING_PORT BILLING__DATABASE__URL=$STACK_DATABASE_URL \
        BILLING__AMQP__URL=$STACK_AMQP_URL BILLING__AMQP__PREFIX=$STACK_PREFIX \
        BILLING__AMQP__QUEUE_TYPE=${STACK_QUEUE_TYPE:-quorum} BILLING__INTERNAL_TOKEN=$token \
        BILLING__DOCUMENTS__ROOT=$STACK_DOCS BILLING__DOCUMENTS__SIGNING_KEY=$STACK_SIGNING_KEY \
        BILLING__DOCUMENTS__PUBLIC_BASE_URL=$STACK_GATEWAY RUST_LOG=${RUST_LOG:-warn} \
        "$STACK_BIN/tollgate-billing" >"$STACK_LOGS/billing.log" 2>&1 &
    STACK_PIDS+=($!)
    WEBHOOK__HTTP__PORT=$STACK_WEBHOOK_PORT WEBHOOK__DATABASE__URL=$STACK_DATABASE_URL \
        WEBHOOK__AMQP__URL=$STACK_AMQP_URL WEBHOOK__AMQP__PREFIX=$STACK_PREFIX \
        WEBHOOK__AMQP__QUEUE_TYPE=${STACK_QUEUE_TYPE:-quorum} WEBHOOK__INTERNAL_TOKEN=$token \
        WEBHOOK__STRIPE__ENDPOINT_SECRETS=$STACK_STRIPE_WEBHOOK_SECRET RUST_LOG=${RUST_LOG:-warn} \
        "$STACK_BIN/tollgate-webhook" >"$STACK_LOGS/webhook.log" 2>&1 &
    STACK_PIDS+=($!)
    GATEWAY__HTTP__PORT=$STACK_GATEWAY_PORT GATEWAY__DATABASE__URL=$STACK_DATABASE_URL \
        GATEWAY__INTAKE_URL=http://127.0.0.1:$STACK_INTAKE_PORT GATEWAY__INTERNAL_TOKEN=$token \
        GATEWAY__BILLING_URL=http://127.0.0.1:$STACK_BILLING_PORT RUST_LOG=${RUST_LOG:-warn} \
        GATEWAY__WEBHOOK_URL=$STACK_WEBHOOK_URL \
        "$STACK_BIN/tollgate-gateway" >"$STACK_LOGS/gateway.log" 2>&1 &
    STACK_PIDS+=($!)
    stack_start_worker
    stack_wait_http "http://127.0.0.1:$STACK_DEMO_PORT/healthz" demo-tenant "$STACK_LOGS/demo-tenant.log"
    stack_wait_http "http://127.0.0.1:$STACK_INTAKE_PORT/readyz" job-intake "$STACK_LOGS/job-intake.log"
    stack_wait_http "http://127.0.0.1:$STACK_BILLING_PORT/readyz" billing "$STACK_LOGS/billing.log"
    stack_wait_http "$STACK_WEBHOOK_URL/readyz" webhook "$STACK_LOGS/webhook.log"
    stack_wait_http "$STACK_GATEWAY/readyz" gateway "$STACK_LOGS/gateway.log"

    local ctl=("$STACK_BIN/tollgatectl" --database-url "$STACK_DATABASE_URL")
    "${ctl[@]}" tenant create --name "$name" --rate-limit-per-minute 100000000 >/dev/null
    STACK_API_KEY=$("${ctl[@]}" key create --tenant "$name" 2>/dev/null)
    export STACK_API_KEY
    "${ctl[@]}" job-type set --tenant "$name" --name wordcount \
        --endpoint "http://127.0.0.1:$STACK_DEMO_PORT/wordcount" --weight 1 >/dev/null
}

stack_start_gateway() { # port [VAR=value ...]
    local port=$1
    shift
    env "$@" GATEWAY__HTTP__PORT="$port" GATEWAY__DATABASE__URL="$STACK_DATABASE_URL" \
        GATEWAY__INTAKE_URL="http://127.0.0.1:$STACK_INTAKE_PORT" GATEWAY__INTERNAL_TOKEN="$STACK_TOKEN" \
        GATEWAY__BILLING_URL="http://127.0.0.1:$STACK_BILLING_PORT" RUST_LOG="${RUST_LOG:-warn}" \
        GATEWAY__WEBHOOK_URL="$STACK_WEBHOOK_URL" \
        "$STACK_BIN/tollgate-gateway" >"$STACK_LOGS/gateway-$port.log" 2>&1 &
    STACK_PIDS+=($!)
    stack_wait_http "http://127.0.0.1:$port/readyz" "gateway :$port" "$STACK_LOGS/gateway-$port.log"
}

stack_start_worker() {
    WORKER__HTTP__PORT=$STACK_WORKER_PORT WORKER__DATABASE__URL=$STACK_DATABASE_URL \
        WORKER__DATABASE__POOL_SIZE=${STACK_WORKER_POOL:-8} WORKER__PREFETCH=${STACK_PREFETCH:-256} \
        WORKER__AMQP__URL=$STACK_AMQP_URL WORKER__AMQP__PREFIX=$STACK_PREFIX \
        WORKER__AMQP__QUEUE_TYPE=${STACK_QUEUE_TYPE:-quorum} RUST_LOG=${RUST_LOG:-warn} \
        "$STACK_BIN/tollgate-worker" >>"$STACK_LOGS/worker.log" 2>&1 &
    STACK_WORKER_PID=$!
    export STACK_WORKER_PID
    STACK_PIDS+=("$STACK_WORKER_PID")
    stack_wait_http "http://127.0.0.1:$STACK_WORKER_PORT/readyz" worker "$STACK_LOGS/worker.log"
}

stack_down() {
    local pid
    for pid in "${STACK_PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    # The run's queues are not needed after it; delete them when rabbitmqctl is at hand.
    # Bounded: a broker with an unresponsive queue makes list_queues wait for minutes.
    if command -v rabbitmqctl >/dev/null 2>&1 && [ -n "${STACK_PREFIX:-}" ]; then
        local queues
        if ! queues=$(timeout 30 rabbitmqctl -q list_queues name 2>/dev/null); then
            tg_warn "could not list RabbitMQ queues; queues named $STACK_PREFIX.* are left behind"
            return 0
        fi
        # rabbitmqctl reads stdin: without </dev/null the first call swallows the rest of the
        # list, and every queue but one was left behind (342 quorum queues had piled up here
        # and the broker stopped answering).
        printf '%s\n' "$queues" | { grep "^$STACK_PREFIX\." || true; } | while read -r q; do
            timeout 30 rabbitmqctl -q delete_queue "$q" </dev/null >/dev/null 2>&1 || true
        done
    fi
}

# CPU accounting, to see where a run's CPU goes: `stack_cpu_snapshot FILE` writes every
# process's user+system CPU ticks (pid, command name, ticks); `stack_cpu_report BEFORE AFTER
# JOBS` prints the difference per process, summed by command name (postgres backends
# together, RabbitMQ's beam.smp, each Tollgate binary), in CPU milliseconds per job, largest
# first. Differences are taken per pid: a kernel worker renames itself after the work item it
# runs, so a name seen only in the second snapshot is not a new process. Processes that exited
# between the snapshots are not counted (run the load generator under `time` for its share).
stack_cpu_snapshot() { # file
    local stat
    for stat in /proc/[0-9]*/stat; do
        cat "$stat" 2>/dev/null || true
    done | awk '{
        # comm is field 2 in parentheses and may contain spaces: cut around the last ")".
        line = $0; close_at = 0
        for (i = length(line); i > 0; i--) if (substr(line, i, 1) == ")") { close_at = i; break }
        if (close_at == 0) next
        open_at = index(line, "(")
        pid = substr(line, 1, open_at - 2)
        comm = substr(line, open_at + 1, close_at - open_at - 1)
        split(substr(line, close_at + 2), f, " ")
        # after comm: f[1]=state … f[12]=utime f[13]=stime
        printf "%s\t%s\t%d\n", pid, comm, f[12] + f[13]
    }' >"$1"
}

stack_cpu_report() { # before after jobs
    local hz
    hz=$(getconf CLK_TCK)
    # Kernel threads (writeback, RCU callbacks, block I/O…) are summed on one line and also
    # left out of "processes", the figure scripts/bench-ab.sh compares.
    awk -F'\t' -v hz="$hz" -v jobs="$3" '
        NR == FNR { before[$1] = $3; next }
        { d = $3 - before[$1]; if (d <= 0) next
          total += d
          if ($2 ~ /^(kworker|ksoftirqd|kdamond|jbd2|rcu_|migration|kswapd|kcompactd|khugepaged|kthreadd)/) kernel += d
          else used[$2] += d }
        END {
            printf "   CPU per job (ms), %d jobs, %.1f CPU-seconds in all:\n", jobs, total / hz
            for (c in used) printf "     %-18s %6.3f\n", c, used[c] * 1000 / hz / jobs | "sort -k2 -nr"
            close("sort -k2 -nr")
            printf "     %-18s %6.3f\n", "kernel threads", kernel * 1000 / hz / jobs
            printf "     %-18s %6.3f\n", "processes", (total - kernel) * 1000 / hz / jobs
            printf "     %-18s %6.3f\n", "total", total * 1000 / hz / jobs
        }' "$1" "$2"
}
