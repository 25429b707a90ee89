#!/usr/bin/env bash
# Load benchmark: builds release, starts portcullis on a fresh temp store and the reference
# endpoint (bench/reference.rs), provisions clients with the CLI, and drives load with wrk.
# Prints requests/s, p50, p99, non-2xx per scenario, and each figure as a ratio to the
# reference measured in the same run (the ratio is what holds on a noisy machine); then the CPU
# time the serving process spent per request, and the reference's as a ratio to it.
#
#   bench/run.sh            # 10 s per scenario, 32 connections
#   bench/run.sh --smoke    # 1 s per scenario, debug build: checks the script works (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-10s}
# How long to collect authorization codes before the exchange run (it must outlast it).
collect=${COLLECT:-20s}
connections=${CONNECTIONS:-32}
threads=2
profile=release
if [ "${1:-}" = "--smoke" ]; then
  duration=1s connections=4 profile=debug collect=3s
fi

source bench/lib.sh
install_wrk
# oha holds a fixed rate for the latency run; the full run installs it (a few minutes' build, once).
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if [ "$profile" = release ] && ! command -v oha >/dev/null 2>&1; then
  echo "bench: installing oha 1.16.0 with cargo (once)" >&2
  cargo install oha --version 1.16.0 --locked --quiet
fi
build "$profile" bench_reference

work=$(mktemp -d)
pids=()
server_pid=""
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export PORTCULLIS_DATA_DIR="$work/data" PORTCULLIS_KEYS_DIR="$work/keys" PORTCULLIS_ADMIN_PASSWORD=bench-admin-password
export RUST_LOG=warn
server=http://127.0.0.1:18080
reference=http://127.0.0.1:18081

# port_free URL: fails when something already answers there (a server left running would answer
# in place of the one about to start, which would exit with "address in use", and the figures
# would be that process's).
port_free() {
  if curl -s -o /dev/null --max-time 1 "$1"; then echo "bench: $1 is already in use; stop what runs there" >&2; exit 1; fi
}
wait_for() { for _ in $(seq 200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "bench: $1 never answered" >&2; exit 1; }

start_server() {
  port_free "$server"
  "$bin/portcullis" serve --listen 127.0.0.1:18080 --signing-alg "$1" >/dev/null 2>"$work/server.log" &
  server_pid=$!
  pids+=("$server_pid")
  wait_for "$server/healthz"
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# Clients, created before the server holds the store.
m2m=$("$bin/portcullis" client create --name bench-m2m --grant-type client_credentials --scope "read write")
m2m_id=$(json '["client_id"]' <<<"$m2m"); m2m_secret=$(json '["client_secret"]' <<<"$m2m")
web=$("$bin/portcullis" client create --name bench-web --skip-consent --redirect-uri http://127.0.0.1:9/cb \
  --grant-type authorization_code --grant-type refresh_token --scope "read write")
web_id=$(json '["client_id"]' <<<"$web"); web_secret=$(json '["client_secret"]' <<<"$web")
web_basic="Basic $(printf '%s:%s' "$web_id" "$web_secret" | base64 -w0)"
m2m_basic="Basic $(printf '%s:%s' "$m2m_id" "$m2m_secret" | base64 -w0)"

port_free "$reference"
"$bin/examples/bench_reference" 127.0.0.1:18081 &
reference_pid=$!
pids+=("$reference_pid")
wait_for_post() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; exit 1; }
wait_for_post "$reference/token"

printf '%-34s %10s %9s %9s %8s %7s %8s %7s\n' scenario "req/s" p50 p99 non-2xx ratio "cpu µs" "cpu r."
reference_rps="" reference_cpu=""
clock_ticks=$(getconf CLK_TCK)
# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The machine's `cpu` line of /proc/stat: its steal time (ticks the hypervisor gave this VM's
# cores to another guest) and the total of all its columns.
steal_ticks() { awk '$1 == "cpu" { total = 0; for (i = 2; i <= NF; i++) total += $i; print $9, total }' /proc/stat; }
# steal_percent BEFORE AFTER: the share of the cores' time stolen between two `steal_ticks`.
steal_percent() {
  awk -v before="$1" -v after="$2" 'BEGIN { split(before, b, " "); split(after, a, " ")
    printf "%.1f", (a[2] > b[2]) ? 100 * (a[1] - b[1]) / (a[2] - b[2]) : 0 }'
}
# The block device under the store (its name in /proc/diskstats), if it has one there: a durable
# request waits for it, and on a virtual machine its write latency moves from run to run.
disk=$(basename "$(df --output=source "$work" 2>/dev/null | tail -1)")
awk -v d="$disk" '$3 == d { found = 1 } END { exit !found }' /proc/diskstats 2>/dev/null || disk=""
# disk_stats: the device's writes completed and milliseconds spent writing, so far.
disk_stats() { [ -n "$disk" ] && awk -v d="$disk" '$3 == d { print $8, $11 }' /proc/diskstats; true; }
# disk_summary BEFORE AFTER: the writes between two `disk_stats` and their mean time; nothing
# for fewer than 100 (the system's own, in a scenario that writes nothing).
disk_summary() {
  [ -n "$1" ] && awk -v before="$1" -v after="$2" 'BEGIN { split(before, b, " "); split(after, a, " ")
    n = a[1] - b[1]; if (n >= 100) printf "%d writes, %.0f µs each on average", n, 1000 * (a[2] - b[2]) / n }'
  true
}
# measure URL SCRIPT [wrk options...]: drives one scenario and sets rps, p50, p99, non2xx, cpu
# and steal (the percentage of the cores' time the hypervisor took meanwhile). Besides
# requests/s, the CPU time the serving process spent per request: unlike requests/s, it hardly
# moves with what else the two cores are doing, so its ratio is the steadier one.
measure() {
  local url=$1 script=$2; shift 2
  local out pid before threads_before steal_before disk_before
  pid=$server_pid; [[ $url == "$reference"* ]] && pid=$reference_pid
  before=$(cpu_ticks "$pid") threads_before=$(thread_ticks "$pid") steal_before=$(steal_ticks)
  disk_before=$(disk_stats)
  # bash's `time` gives wrk's own CPU time (user and system seconds) in $work/wrk.time.
  out=$({ TIMEFORMAT='%U %S'; time wrk --latency -t"${WRK_THREADS:-$threads}" -c"${WRK_CONNECTIONS:-$connections}" \
    -d"$duration" -s "bench/$script" "$@" "$url" 2>&3; } 3>&2 2>"$work/wrk.time")
  local ticks=$(( $(cpu_ticks "$pid") - before )) requests threads_after
  steal=$(steal_percent "$steal_before" "$(steal_ticks)")
  disk_writes=$(disk_summary "$disk_before" "$(disk_stats)")
  threads_after=$(thread_ticks "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out"); non2xx=${non2xx:-0}
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t="$ticks" -v hz="$clock_ticks" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  by_thread=$(split_by_thread "$threads_before" "$threads_after" "$requests")
  wrk_cpu=$(awk -v n="$requests" '{ printf "%.1f", ($1 + $2) * 1e6 / n }' "$work/wrk.time")
}
# thread_ticks PID: one line per thread of the process: its name (spaces as _), user and system
# CPU time in clock ticks.
thread_ticks() {
  local task
  for task in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$task/comm" 2>/dev/null)" "$(awk '{ print $14, $15 }' "$task/stat" 2>/dev/null)"
  done
}
# split_by_thread BEFORE AFTER REQUESTS: the CPU time per request (user+system µs) of each kind
# of thread, summed by name: where a scenario's time goes (tokio workers, the store's writer and
# flusher, sled's I/O pool).
split_by_thread() {
  awk -v n="$3" -v hz="$clock_ticks" '{ sub(/-[0-9]+$/, "", $1) } # sled-io-0..6 as one
    NF == 3 && FNR == NR { u[$1] -= $2; s[$1] -= $3; next }
    NF == 3 { u[$1] += $2; s[$1] += $3 }
    END { for (name in u) if (u[name] + s[name] > 0) printf "%s %.1f+%.1f  ", name, u[name] * 1e6 / hz / n, s[name] * 1e6 / hz / n }' \
    <(echo "$1") <(echo "$2")
}
# report NAME [REFERENCE_RPS REFERENCE_CPU]: prints the line of what `measure` just measured,
# with its ratios to the given reference figures (by default the latest reference run: see `run`).
report() {
  local name=$1 against_rps=${2:-$reference_rps} against_cpu=${3:-$reference_cpu}
  printf '%-34s %10s %9s %9s %8s %7s %8s %7s\n' "$name" "$rps" "$p50" "$p99" "$non2xx" \
    "$(awk -v a="$rps" -v b="$against_rps" 'BEGIN { printf "%.3f", a / b }')" "$cpu" \
    "$(awk -v a="$against_cpu" -v b="$cpu" 'BEGIN { printf "%.3f", a / b }')"
  if [ "$non2xx" != 0 ]; then echo "bench: $name had $non2xx non-2xx answers" >&2; failed=1; fi
}
# run NAME URL SCRIPT [wrk options...]: one scenario, its ratios to the latest reference run (the
# run's first reference line, or the second reference run of the last bracketed scenario): one
# measured minutes before, on a host whose speed drifts, once made these ratios meaningless (a
# slow first reference put `/api/hello` at 1.025 in a run where the brackets said about 0.75).
run() {
  local name=$1; shift
  measure "$@"
  [ -z "$reference_rps" ] && reference_rps=$rps reference_cpu=$cpu
  last_rps=$rps
  report "$name"
}
reference_body="grant_type=client_credentials&client_id=reference&client_secret=reference-secret&scope=read"
# settle: waits (up to 10 s) until the server has used under 5 % of a core for 200 ms, so that
# what it still does after starting or after a scenario (sled writing back and cleaning its log
# after the code collection, say) does not slow a reference run down and flatter the ratio.
settle() {
  local before
  for _ in $(seq 50); do
    before=$(cpu_ticks "$server_pid")
    sleep 0.2
    [ $(( $(cpu_ticks "$server_pid") - before )) -le $(( clock_ticks / 100 )) ] && return 0
  done
  echo "bench: the server never went idle; the reference run next to it may be slowed" >&2
}
# bracketed NAME URL SCRIPT [wrk options...]: a scenario with a bar (or compared across runs),
# between two fresh runs of the reference; its ratios are to their mean. This machine's speed drifts by up to ±10 % over
# minutes, as much as a bar's margin; measured next to the scenario, the reference drifts with
# it. The two reference runs are printed on the line after.
bracketed() {
  local name=$1; shift
  settle
  # A reference that sat idle for a while (while the server started, or collected codes) ran its
  # first seconds up to 15 % slower than right after load: warm it up for 2 s first.
  BODY=$reference_body wrk -t"$threads" -c"$connections" -d2s -s bench/post.lua "$reference/token" >/dev/null
  BODY=$reference_body measure "$reference/token" post.lua
  local before_rps=$rps before_cpu=$cpu before_steal=$steal before_wrk=$wrk_cpu
  measure "$@"
  local scenario=("$rps" "$p50" "$p99" "$non2xx" "$cpu") scenario_threads=$by_thread scenario_steal=$steal
  local scenario_wrk=$wrk_cpu scenario_disk=$disk_writes
  last_rps=$rps
  settle
  BODY=$reference_body measure "$reference/token" post.lua
  local mean_rps mean_cpu
  mean_rps=$(awk -v a="$before_rps" -v b="$rps" 'BEGIN { printf "%.2f", (a + b) / 2 }')
  mean_cpu=$(awk -v a="$before_cpu" -v b="$cpu" 'BEGIN { printf "%.1f", (a + b) / 2 }')
  local after_rps=$rps after_cpu=$cpu
  # What the scenarios run next without brackets compare with.
  reference_rps=$after_rps reference_cpu=$after_cpu
  rps=${scenario[0]} p50=${scenario[1]} p99=${scenario[2]} non2xx=${scenario[3]} cpu=${scenario[4]}
  report "$name" "$mean_rps" "$mean_cpu"
  printf '  (reference before and after: %s and %s req/s, %s and %s µs)\n' \
    "$before_rps" "$after_rps" "$before_cpu" "$after_cpu"
  # A noisy host shows here: on this VM a run whose ratios fall apart is one where the
  # hypervisor took a share of the cores from the scenario and not from the references.
  printf '  (steal, %% of the cores: reference %s and %s, scenario %s)\n' "$before_steal" "$steal" "$scenario_steal"
  printf '  (server CPU per request by thread, user+system µs: %s)\n' "$scenario_threads"
  # A durable request waits for the disk, which the reference never touches: on a virtual disk
  # the mean write time moves twofold between runs, with stalls of several milliseconds, and
  # 32 connections waiting on one flush cannot hide them.
  [ -z "$scenario_disk" ] || printf '  (disk %s during the scenario: %s)\n' "$disk" "$scenario_disk"
  # wrk shares the two cores: a scenario whose requests cost it more (a Lua request or response
  # function per request) has less of them left, and its ratio says so too. wrk's whole run,
  # its start-up included (the scripts' init: a few lines read, one request head built).
  printf '  (wrk CPU per request, µs: reference %s and %s, scenario %s)\n' "$before_wrk" "$wrk_cpu" "$scenario_wrk"
}
# fixed_rate NAME URL BODY: POSTs BODY to URL at $rate requests/s for $duration with oha
# (latencies corrected for coordinated omission: measured from when each request was due) and
# prints its line; sets fixed_p99 (ms).
fixed_rate() {
  local name=$1 url=$2 body=$3 before out fixed_non2xx line
  before=$(steal_ticks)
  out=$(oha --no-tui --output-format json --latency-correction -z "$duration" -q "$rate" -c "$connections" \
    -m POST -T application/x-www-form-urlencoded -d "$body" "$url")
  steal=$(steal_percent "$before" "$(steal_ticks)")
  read -r fixed_p99 fixed_non2xx line < <(python3 - "$out" "$name" <<'PYTHON'
import json, sys
result = json.loads(sys.argv[1])
percentiles = result["latencyPercentiles"]
codes = result.get("statusCodeDistribution", {})
non2xx = sum(count for code, count in codes.items() if not code.startswith("2"))
line = (f"{sys.argv[2]:<34} {result['summary']['requestsPerSec']:>10.0f} "
        f"{percentiles['p50'] * 1000:>7.2f}ms {percentiles['p99'] * 1000:>7.2f}ms {non2xx:>8}   fixed")
print(f"{percentiles['p99'] * 1000:.2f} {non2xx} {line}")
PYTHON
  )
  printf '%s\n  (steal, %% of the cores: %s)\n' "$line" "$steal"
  if [ "$fixed_non2xx" != 0 ]; then echo "bench: $name had $fixed_non2xx non-2xx answers" >&2; failed=1; fi
}
failed=0

# Warmed up first, as in `bracketed`: a reference that has just started runs its first seconds
# slower.
BODY=$reference_body wrk -t"$threads" -c"$connections" -d2s -s bench/post.lua "$reference/token" >/dev/null
BODY=$reference_body run "reference (poem + josekit ES256)" "$reference/token" post.lua

cc_body="grant_type=client_credentials&client_id=$m2m_id&client_secret=$m2m_secret&scope=read"
for alg in ES256 EdDSA RS256; do
  start_server "$alg"
  # Bracketed for every algorithm, not only ES256 with its bar: compared with the run's first
  # reference, minutes earlier, EdDSA and RS256 swung by up to a third with the host's drift.
  BODY=$cc_body bracketed "client_credentials $alg" "$server/o/token" post.lua
  if [ "$alg" = ES256 ]; then
    # Latency at a fixed rate: half of the peak just measured, with oha (wrk has no fixed rate;
    # the smoke run skips it when oha is missing), then the reference at the same rate.
    if command -v oha >/dev/null 2>&1; then
      rate=$(awk -v peak="$last_rps" 'BEGIN { printf "%d", peak / 2 }')
      fixed_rate "client_credentials ES256 at $rate/s" "$server/o/token" "$cc_body"
      server_p99=$fixed_p99
      fixed_rate "reference at $rate/s" "$reference/token" "$reference_body"
      # The bar (p99 at most 10 ms) is absolute; the reference's p99 at the same rate says how
      # much of a miss is the machine's: in a 10 s run, one host stall of 100 ms or more (which
      # the steal figure does not always show) puts any server's p99 over 10 ms.
      printf '  (p99 ratio to the reference at the same rate: %s)\n' \
        "$(awk -v a="$server_p99" -v b="$fixed_p99" 'BEGIN { printf "%.3f", a / b }')"
    fi
    access=$(curl -s -u "$m2m_id:$m2m_secret" -d grant_type=client_credentials "$server/o/token" | json '["access_token"]')
    run "jwks" "$server/.well-known/jwks.json" get.lua
    AUTH="Bearer $access" run "/api/hello (valid token)" "$server/api/hello" get.lua
    AUTH=$m2m_basic BODY="token=$access" run "introspection" "$server/o/introspect" post.lua

    # Refresh rotation: one signed-in session, one code and refresh token per chain; each chain
    # is a wrk thread with one connection, so that it rotates its own token in order.
    chains=$([ "$profile" = release ] && echo 32 || echo 2)
    jar="$work/cookies"
    csrf=$(curl -s -c "$jar" -b "$jar" "$server/login" | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p')
    curl -s -o /dev/null -c "$jar" -b "$jar" --data-urlencode "csrf_token=$csrf" --data-urlencode "next=/" \
      --data-urlencode username=admin --data-urlencode "password=$PORTCULLIS_ADMIN_PASSWORD" "$server/login"
    : >"$work/refresh_tokens"
    for _ in $(seq "$chains"); do
      location=$(curl -s -o /dev/null -w '%{redirect_url}' -b "$jar" \
        "$server/o/authorize?response_type=code&client_id=$web_id&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&state=x")
      code=$(sed -n 's/.*[?&]code=\([^&]*\).*/\1/p' <<<"$location")
      curl -s -H "Authorization: $web_basic" -d grant_type=authorization_code -d "code=$code" \
        -d redirect_uri=http://127.0.0.1:9/cb "$server/o/token" | json '["refresh_token"]' >>"$work/refresh_tokens"
    done
    AUTH=$web_basic TOKENS="$work/refresh_tokens" THREADS=$threads WRK_CONNECTIONS=$chains \
      bracketed "refresh rotation (durable, $chains chains)" "$server/o/token" refresh.lua

    # Authorization code exchange: collect codes first (GET /o/authorize with the session, no
    # consent page for this client), then exchange each once. The collection runs longer than
    # the exchange so that codes do not run out.
    cookie=$(awk '$6 == "portcullis_session" {print "portcullis_session=" $7}' "$jar")
    authorize_url="$server/o/authorize?response_type=code&client_id=$web_id&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&state=x"
    COOKIE=$cookie CODES="$work/codes" wrk -t"$threads" -c"$connections" -d"$collect" -s bench/codes.lua "$authorize_url" >/dev/null
    cat "$work"/codes.* >"$work/codes"
    AUTH=$web_basic CODES="$work/codes" THREADS=$threads REDIRECT=http%3A%2F%2F127.0.0.1%3A9%2Fcb \
      bracketed "authorization_code exchange ($(wc -l <"$work/codes") codes)" "$server/o/token" exchange.lua
  fi
  stop_server
done

echo "machine: $(nproc) cores, $(uname -m); wrk -t$threads -c$connections -d$duration; build: $profile"
exit "$failed"
