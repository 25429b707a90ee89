# Shared by bench/run.sh and bench/scale.sh (sourced, not run).

# wrk from Debian, when missing.
install_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}

# build PROFILE EXAMPLE...: builds the server and the examples with PROFILE (release or debug)
# and sets $bin to the directory that holds them.
build() {
  local profile=$1; shift
  local args=(--quiet --bin portcullis)
  [ "$profile" = release ] && args+=(--release)
  for example in "$@"; do args+=(--example "$example"); done
  cargo build "${args[@]}"
  bin=target/$profile
}
