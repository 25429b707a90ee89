#!/usr/bin/env bash
# Scale and churn runs for the sled store (see bench/README.md).
#
#   bench/scale.sh            # grow one store to 10k, 100k, 1M live refresh tokens; at each size
#                             # start the server and measure start-up, rotation, RSS, disk, and
#                             # the authorized-applications page of a user with 3 grants
#   bench/scale.sh --churn    # rotate for CHURN_FOR seconds (120) with CHURN_TTL-second tokens
#                             # (20) and a 1 s purge: issue, expire, purge; prints RSS, disk and
#                             # live refresh tokens every 10 s
#   SIZES="1000 5000" bench/scale.sh     # other sizes (cumulative, ascending)
#   CACHE_MB=256 bench/scale.sh          # the server's and the seeder's --cache-mb (default 16)
#   bench/scale.sh [--churn] --smoke   # tiny sizes and durations: checks that the script works
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${SIZES:-"10000 100000 1000000"}
duration=${DURATION:-10s}
churn_for=${CHURN_FOR:-120}
ttl=${CHURN_TTL:-20}
cache_mb=${CACHE_MB:-16}
chains=32
mode=scale
profile=release
for arg in "$@"; do
  case "$arg" in
    --churn) mode=churn ;;
    --smoke) sizes="200 400" duration=1s chains=2 churn_for=5 ttl=2 profile=debug ;;
    *) echo "usage: bench/scale.sh [--churn] [--smoke]" >&2; exit 2 ;;
  esac
done

source bench/lib.sh
install_wrk
build "$profile" bench_seed

work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-scale.XXXXXX")
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export PORTCULLIS_DATA_DIR="$work/data" PORTCULLIS_KEYS_DIR="$work/keys" PORTCULLIS_CACHE_MB=$cache_mb
export RUST_LOG=warn
server=http://127.0.0.1:18090
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

"$bin/portcullis" user create --username bench >/dev/null
# The reader: a user with 3 grants among the store's, whose authorized-applications page is timed.
reader_password=reader-password
"$bin/portcullis" user create --username reader --password-stdin <<<"$reader_password" >/dev/null
web=$("$bin/portcullis" client create --name bench-web --skip-consent --redirect-uri http://127.0.0.1:9/cb \
  --grant-type authorization_code --grant-type refresh_token --scope "read write")
web_id=$(json '["client_id"]' <<<"$web"); web_secret=$(json '["client_secret"]' <<<"$web")
export AUTH="Basic $(printf '%s:%s' "$web_id" "$web_secret" | base64 -w0)"

# start_server [serve options...]: starts it; $started is how long it took to answer /healthz.
start_server() {
  local began; began=$(date +%s.%N)
  "$bin/portcullis" serve --listen 127.0.0.1:18090 "$@" >/dev/null 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 6000); do
    if curl -sf "$server/healthz" >/dev/null 2>&1 && kill -0 "$server_pid" 2>/dev/null; then
      started=$(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.01
  done
  echo "bench: the server never answered; its log:" >&2; cat "$work/server.log" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }
rss_mib() { awk -v field="$1:" '$1 == field { printf "%.0f", $2 / 1024 }' "/proc/$server_pid/status"; }
disk_mib() { du -sb "$work/data" | awk '{ printf "%.0f", $1 / 1048576 }'; }
# rotate DURATION: the rotation run of bench/run.sh on the tokens in $work/tokens.
rotate() {
  THREADS=2 wrk --latency -t2 -c"$chains" -d"$1" -s bench/refresh.lua "$server/o/token" >"$work/wrk.out"
  awk '/Requests\/sec/ {rps=$2} $1 == "50%" {p50=$2} $1 == "99%" {p99=$2} /Non-2xx/ {bad=$5}
       END { printf "%10s %9s %9s %8s", rps, p50, p99, bad + 0 }' "$work/wrk.out"
  if grep -q Non-2xx "$work/wrk.out"; then echo; echo "bench: non-2xx answers" >&2; exit 1; fi
}
export TOKENS="$work/tokens"

# page_ms: signs the reader in, loads the authorized-applications page 21 times and prints the
# median time in ms; fails unless every load lists the reader's 3 grants.
page_ms() {
  local jar="$work/cookies" csrf times=()
  rm -f "$jar"
  csrf=$(curl -s -c "$jar" -b "$jar" "$server/login" | sed -n 's/.*name="csrf_token" value="\([^"]*\)".*/\1/p')
  curl -s -o /dev/null -c "$jar" -b "$jar" --data-urlencode "csrf_token=$csrf" \
    --data-urlencode "username=reader" --data-urlencode "password=$reader_password" "$server/login"
  for _ in $(seq 21); do
    times+=("$(curl -s -o "$work/page.html" -w '%{time_total}' -b "$jar" "$server/o/authorized_tokens")")
    if [ "$(grep -o '/o/authorized_tokens/[^"]*/delete' "$work/page.html" | wc -l)" != 3 ]; then
      echo; echo "bench: the authorized-applications page does not list the reader's 3 grants" >&2; exit 1
    fi
  done
  printf '%s\n' "${times[@]}" | sort -n | awk 'NR == 11 { printf "%.2f", $1 * 1000 }'
}

if [ "$mode" = scale ]; then
  printf '%12s %8s %8s %10s %9s %9s %8s %9s %9s %9s %8s\n' "live tokens" "seed s" "start s" "rotations/s" \
    p50 p99 non-2xx "RSS MiB" "peak MiB" "disk MiB" "page ms"
  "$bin/examples/bench_seed" "$work/data" "$web_id" reader 3 1 >/dev/null 2>"$work/seed.log"
  have=0
  for size in $sizes; do
    began=$(date +%s.%N)
    "$bin/examples/bench_seed" "$work/data" "$web_id" bench $((size - have)) "$chains" >"$TOKENS" 2>"$work/seed.log"
    seeded=$(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
    have=$size
    start_server
    line=$(rotate "$duration")
    printf '%12s %8s %8s %s %9s %9s %9s %8s\n' "$size" "$seeded" "$started" "$line" "$(rss_mib VmRSS)" \
      "$(rss_mib VmHWM)" "$(disk_mib)" "$(page_ms)"
    stop_server
  done
else
  # Churn: every rotation issues a refresh token and an access token; with short lifetimes and a
  # 1 s purge, the live set levels off at about CHURN_TTL seconds of rotations.
  "$bin/examples/bench_seed" "$work/data" "$web_id" bench "$chains" "$chains" >"$TOKENS" 2>"$work/seed.log"
  start_server --refresh-token-ttl "$ttl" --access-token-ttl "$ttl" --purge-interval 1
  rotate "${churn_for}s" >"$work/churn.line" &
  load=$!
  printf '%6s %9s %9s %14s %14s\n' second "RSS MiB" "disk MiB" "refresh tokens" "tokens issued"
  step=$([ "$churn_for" -ge 10 ] && echo 10 || echo 1)
  for ((second = step; second <= churn_for; second += step)); do
    sleep "$step"
    metrics=$(curl -s "$server/metrics")
    issued=$(awk '/^portcullis_tokens_issued_total\{grant_type="refresh_token"\}/ {print $2}' <<<"$metrics")
    # Live refresh tokens: issued by rotation (plus the seeded ones) minus those purged so far.
    purged=$(awk '/^portcullis_purged_records_total\{kind="refresh_token"\}/ {print $2}' <<<"$metrics")
    printf '%6s %9s %9s %14s %14s\n' "$second" "$(rss_mib VmRSS)" "$(disk_mib)" \
      "$(( ${issued%.*} + chains - ${purged:-0} ))" "${issued%.*}"
  done
  wait "$load"
  echo "rotation during the churn: $(cat "$work/churn.line")"
  if [ "${purged:-0}" = 0 ]; then echo "bench: the purge removed no refresh token" >&2; exit 1; fi
  stop_server
fi
echo "machine: $(nproc) cores, $(uname -m); --cache-mb $cache_mb; build: $profile"
