#!/usr/bin/env bash
# The test command: installs what a fresh Debian machine lacks, then runs every test.
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for package in pkg-config libssl-dev; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "test.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    $sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "test.sh: please install ${missing[*]} (OpenSSL headers and pkg-config) first" >&2
    exit 1
  fi
fi

# The verifier must build without the server (no poem server, no sled, no pages).
cargo build --quiet --no-default-features
cargo test --lib --tests

# Interoperability with a third-party client library (Authlib), against the real binary.
if ! python3 -c "import authlib, joserfc, requests" >/dev/null 2>&1; then
  echo "test.sh: installing the Python packages of the interop check (authlib, requests)"
  python3 -m pip install --quiet --disable-pip-version-check authlib joserfc requests
fi
python3 -W ignore tests/interop/authlib_client.py target/debug/portcullis
