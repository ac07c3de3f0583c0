#!/usr/bin/env bash
# Builds the workspace, starts the six daemons (five tool servers and the orchestrator), waits until each
# one is listening, runs the demo, and stops everything it started on exit, error or Ctrl-C.
#
#   ./run.sh           build, start, demo, stop
#   ./run.sh --keep    ... and keep the daemons running until Ctrl-C (use conductorctl in another terminal)
#   ./run.sh --no-demo start and keep them running, without the demo
#   ./run.sh --cluster the same as a local cluster: a temporary PostgreSQL (initdb into a temporary
#                      directory, a free port, as the postgres user when run as root) and two orchestrators
#                      on it, the active node on 50051/8080 and its warm standby on 50052/8081; the demo
#                      runs through the standby, which passes its calls on to the active node, then
#                      `conductorctl cluster status` from both nodes. Combines with --keep
#                      and --no-demo; the database and its directory are removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

keep=0
demo=1
cluster=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        --no-demo) demo=0; keep=1 ;;
        --cluster) cluster=1 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
    if ((cluster)); then stop_postgres; fi
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

# --cluster: a PostgreSQL of its own in a temporary directory (its socket there too), on a free port.
pg_dir=""
pg_bin=""
pg_as=()
stop_postgres() {
    if [[ -n "$pg_dir" && -f "$pg_dir/data/postmaster.pid" ]]; then
        say "stopping PostgreSQL"
        "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 \
            || echo "  PostgreSQL did not stop cleanly; see $run_dir/logs/postgres.log" >&2
    fi
    if [[ -n "$pg_dir" ]]; then
        cp "$pg_dir/server.log" "$run_dir/logs/postgres.log" 2>/dev/null || true
        rm -rf "$pg_dir"
    fi
}
start_postgres() {
    pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -1 | xargs -r dirname)
    if [[ -z "$pg_bin" ]] && command -v pg_config >/dev/null; then pg_bin=$(pg_config --bindir); fi
    if [[ -z "$pg_bin" || ! -x "$pg_bin/initdb" ]]; then
        echo "${red}PostgreSQL's server programs (initdb, pg_ctl) are not installed${off}: run scripts/setup-postgres.sh (as root), or install PostgreSQL 13 or later" >&2
        exit 1
    fi
    command -v jq >/dev/null || { echo "${red}jq is not installed${off}: --cluster writes the nodes' configuration with it" >&2; exit 1; }
    pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/conductor-cluster-pg.XXXXXX")
    # PostgreSQL refuses to run as root: then it runs as the postgres user, who owns its directory.
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || { echo "${red}running as root, but there is no postgres user${off} to run PostgreSQL as" >&2; exit 1; }
        chown postgres: "$pg_dir"
        pg_as=(runuser -u postgres --)
    else
        pg_as=(env)
    fi
    pg_port=55432
    while (exec 3<>"/dev/tcp/127.0.0.1/$pg_port") 2>/dev/null; do pg_port=$((pg_port + 1)); done
    "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust --encoding=UTF8 --no-instructions >/dev/null
    "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
        -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null \
        || { echo "${red}PostgreSQL did not start${off}:" >&2; tail -n 20 "$pg_dir/server.log" >&2; exit 1; }
    "${pg_as[@]}" "$pg_bin/createdb" -h "$pg_dir" -p "$pg_port" -U postgres conductor
    printf '  %s%-20s%s %s\n' "$green" "postgres" "$off" "127.0.0.1:$pg_port, database conductor (data in $pg_dir)"
    # Both nodes read the shipped configuration with the store added; each advertises where it listens.
    jq --arg url "postgresql://postgres@127.0.0.1:$pg_port/conductor" \
        '.store = {postgres: {url: $url, lease_ttl: "2s"}}' config/config.json >"$run_dir/cluster.json"
}

say "starting the tool servers (logs in $run_dir/logs)"
port=50061
for server in validation processing backup notification approval; do
    start "$server-server" "127.0.0.1:$port" "$bin/$server-server" --listen "127.0.0.1:$port" --data-dir "$run_dir/data/$server"
    wait_listening "$server-server"
    port=$((port + 1))
done

if ((cluster)); then
    say "starting PostgreSQL (a temporary instance for this run)"
    start_postgres
    say "starting the cluster: the active node, then its warm standby"
    start orchestrator-a 127.0.0.1:50051 "$bin/orchestrator" --config "$run_dir/cluster.json" --listen 127.0.0.1:50051 --http 127.0.0.1:8080 --audit-dir "$run_dir/audit-a"
    wait_listening orchestrator-a
    active_pid=${pids[-1]}
    # It finds the lease held and starts at once as the active node's standby.
    start orchestrator-b 127.0.0.1:50052 "$bin/orchestrator" --config "$run_dir/cluster.json" --listen 127.0.0.1:50052 --http 127.0.0.1:8081 --audit-dir "$run_dir/audit-b"
    wait_listening orchestrator-b
    "$bin/conductorctl" tools >/dev/null
    # The standby passes every call, start and approval on to the active node.
    demo_at=127.0.0.1:50052
    if ((demo)); then
        say "running the demo through $demo_at"
        "$bin/conductorctl" --orchestrator "$demo_at" demo
    fi
    for node in 127.0.0.1:50051 127.0.0.1:50052; do
        say "conductorctl --orchestrator $node cluster status"
        "$bin/conductorctl" --orchestrator "$node" cluster status
    done
else
    say "starting the orchestrator"
    start orchestrator 127.0.0.1:50051 "$bin/orchestrator" --config config/config.json --listen 127.0.0.1:50051 --http 127.0.0.1:8080
    wait_listening orchestrator
    "$bin/conductorctl" tools >/dev/null

    if ((demo)); then
        say "running the demo"
        "$bin/conductorctl" demo
    fi
fi

if ((keep)); then
    say "the daemons keep running; press Ctrl-C to stop them. In another terminal:"
    cat <<HELP
    $bin/conductorctl watch                       # live dashboard
    $bin/conductorctl run customer_onboarding --input config/examples/onboarding.json
    $bin/conductorctl pending                     # then: conductorctl approve <id>
    curl -s http://127.0.0.1:8080/metrics         # Prometheus metrics
HELP
    if ((cluster)); then
        cat <<HELP
    $bin/conductorctl cluster status              # the nodes, the active one, the lease, each lag
    $bin/conductorctl --orchestrator 127.0.0.1:50052 status   # the standby's view
    curl -si http://127.0.0.1:8081/health/active  # 429 on the standby, 200 on the active node (:8080)
    kill -STOP $active_pid                             # pause the active node: the standby takes over once its lease expires
HELP
        psql_hint="psql -h $pg_dir -p $pg_port -U postgres conductor"
        echo "    $psql_hint   # the audit log as rows"
    fi
    wait "${pids[-1]}"
fi
