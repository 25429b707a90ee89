#!/usr/bin/env bash
# The test command: installs what a fresh Debian machine lacks, then runs every test.
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: please install ${missing[*]} first" >&2
    exit 1
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "test.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A step that runs a server and a client of it gets a time limit: one that hangs (a server blocked,
# a client waiting on it) fails the run with its name instead of holding CI until it is stopped.
bounded() {
  local seconds=$1
  shift
  if ! command -v timeout >/dev/null 2>&1; then "$@"; return; fi
  local status=0
  timeout -k 10 "$seconds" "$@" || status=$?
  if [ "$status" -eq 124 ]; then echo "test.sh: '$*' was still running after ${seconds}s: stopped" >&2; fi
  return "$status"
}

# Build: OpenSSL headers. Benchmark smoke: curl and wrk. Browser test: Debian's Chromium (playwright-core drives it; it never
# downloads a browser of its own).
apt_install pkg-config libssl-dev chromium curl wrk

# Formatting and lints first (fail fast), where the toolchain has them (rustup's default profile does).
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
if cargo clippy --version >/dev/null 2>&1; then cargo clippy --quiet --all-targets -- -D warnings; fi

# The verifier must build without the server: no poem server, no sled, no pages.
cargo build --quiet --no-default-features --features verify
verify_tree=$(cargo tree --quiet --no-default-features --features verify -e normal,features)
for forbidden in 'sled v' 'askama v' 'poem-openapi v' 'poem feature "server"'; do
  if grep -q "$forbidden" <<<"$verify_tree"; then
    echo "test.sh: the verify feature pulls in $forbidden" >&2
    exit 1
  fi
done
cargo build --quiet --no-default-features
# The benchmarks still run (debug build, a few iterations; figures come from `cargo bench`).
cargo test --quiet --bench verify -- --smoke
cargo test --quiet --bench sign -- --smoke
cargo test --lib --tests

# Python checks: the committed OpenAPI document validates as OpenAPI 3, and a third-party client
# library (Authlib, joserfc) runs the flows against the real binary.
if ! python3 -c "import authlib, joserfc, requests, openapi_spec_validator" >/dev/null 2>&1; then
  echo "test.sh: installing the Python packages of the checks"
  python3 -m pip install --quiet --disable-pip-version-check authlib joserfc requests openapi-spec-validator
fi
python3 -m openapi_spec_validator openapi/openapi.json
bounded 600 python3 -W ignore tests/interop/authlib_client.py target/debug/portcullis
# Again with EdDSA access tokens (signed by aws-lc, not josekit): joserfc checks them too.
PORTCULLIS_SIGNING_ALG=EdDSA bounded 600 python3 -W ignore tests/interop/authlib_client.py target/debug/portcullis

# Schema-driven fuzzing of the served OpenAPI document (short run): no 5xx, no answer that
# breaks the document.
bounded 900 tests/fuzz/schemathesis.sh target/debug/portcullis 30

# Crash safety: SIGKILL during rotations and revocations, restart, every acknowledged write holds
# (3 kills here; `python3 tests/crash/crash_safety.py target/release/portcullis 20` for the full run).
bounded 600 python3 tests/crash/crash_safety.py target/debug/portcullis 3

# The load, scale and churn benchmarks still work (smoke runs on the debug build; figures come
# from bench/run.sh and bench/scale.sh without --smoke).
bounded 600 bench/run.sh --smoke
bounded 600 bench/scale.sh --smoke
bounded 600 bench/scale.sh --churn --smoke

# In a real browser: Swagger UI's Authorize -> sign in -> consent -> /api/hello, the
# applications and authorized-tokens pages, and cross-site POSTed authorization and logout
# requests.
(cd tests/browser && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --silent; } && bounded 600 node --test)
