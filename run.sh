#!/usr/bin/env bash
# Builds the workspace, starts the six daemons (five tool servers and the orchestrator), waits until each
# one is listening, runs the demo, and stops everything it started on exit, error or Ctrl-C.
#
#   ./run.sh           build, start, demo, stop
#   ./run.sh --keep    ... and keep the daemons running until Ctrl-C (use conductorctl in another terminal)
#   ./run.sh --no-demo start and keep them running, without the demo
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

keep=0
demo=1
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        --no-demo) demo=0; keep=1 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then bold=$'\e[1m'; green=$'\e[32m'; red=$'\e[31m'; off=$'\e[0m'; else bold=""; green=""; red=""; off=""; fi
say() { printf '%s==>%s %s\n' "$bold" "$off" "$*"; }

say "building (release)"
cargo build --release --workspace --bins --quiet
bin="$PWD/target/release"

run_dir="$PWD/run/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run_dir/logs" "$run_dir/data" audit_logs
pids=()
names=()

stop_all() {
    local status=$?
    trap - EXIT INT TERM
    if ((${#pids[@]})); then
        say "stopping ${#pids[@]} daemons"
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for i in "${!pids[@]}"; do
            if ! wait "${pids[$i]}" 2>/dev/null; then
                echo "  ${names[$i]} exited with an error; see $run_dir/logs/${names[$i]}.log" >&2
            fi
        done
    fi
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME ADDR COMMAND...: starts a daemon with its log in the run directory.
start() {
    local name=$1 addr=$2; shift 2
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
        echo "${red}$addr is already in use${off}: stop what listens there (another ./run.sh --keep?) and try again" >&2
        exit 1
    fi
    "$@" >"$run_dir/logs/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
}

# wait_listening NAME: waits (up to 30 s) until the daemon logs that it listens, or fails with its log.
wait_listening() {
    local name=$1 log="$run_dir/logs/$1.log" pid=${pids[-1]}
    for _ in $(seq 1 300); do
        if grep -q "listening on" "$log" 2>/dev/null; then
            printf '  %s%-20s%s %s\n' "$green" "$name" "$off" "$(grep -o 'listening on .*' "$log" | head -1)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "${red}$name failed to start${off}:" >&2; tail -n 20 "$log" >&2; exit 1
        fi
        sleep 0.1
    done
    echo "${red}$name did not start within 30 s${off}:" >&2; tail -n 20 "$log" >&2; exit 1
}

say "starting the tool servers (logs in $run_dir/logs)"
port=50061
for server in validation processing backup notification approval; do
    start "$server-server" "127.0.0.1:$port" "$bin/$server-server" --listen "127.0.0.1:$port" --data-dir "$run_dir/data/$server"
    wait_listening "$server-server"
    port=$((port + 1))
done

say "starting the orchestrator"
start orchestrator 127.0.0.1:50051 "$bin/orchestrator" --config config/config.json --listen 127.0.0.1:50051 --http 127.0.0.1:8080
wait_listening orchestrator
"$bin/conductorctl" tools >/dev/null

if ((demo)); then
    say "running the demo"
    "$bin/conductorctl" demo
fi

if ((keep)); then
    say "the daemons keep running; press Ctrl-C to stop them. In another terminal:"
    cat <<HELP
    $bin/conductorctl watch                       # live dashboard
    $bin/conductorctl run customer_onboarding --input config/examples/onboarding.json
    $bin/conductorctl pending                     # then: conductorctl approve <id>
    curl -s http://127.0.0.1:8080/metrics         # Prometheus metrics
HELP
    wait "${pids[-1]}"
fi
