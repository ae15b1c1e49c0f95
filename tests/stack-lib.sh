# Shared by stack-up.sh and stack-down.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034

KIMCHI_RUN_DIR=/run/kimchi
KIMCHI_LOG_DIR=/var/log/kimchi
KIMCHI_BUS_NAME=org.kimchi.Kimchi1
KIMCHI_PORT=8001
# kimchi-url-check.socket's path, kimchid's default url_check_socket.
KIMCHI_URL_CHECK_SOCKET=/run/kimchi-url-check.sock

step() { printf '\n==> %s\n' "$*"; }
say() { printf '    %s\n' "$*"; }
warn() { printf '    WARNING: %s\n' "$*" >&2; }
die() { printf '\n%s: ERROR: %s\n' "${0##*/}" "$*" >&2; exit 1; }

require_root() {
  [[ $(id -u) -eq 0 ]] || die "run me as root (sudo $0)"
}

# wait_until SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  while ! "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# alive PID [COMM]: the process exists, is not a zombie (and its comm is COMM).
alive() {
  local stat
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z && ${stat:0:1} != X ]] || return 1
  [[ $# -lt 2 ]] && return 0
  local comm
  comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  [[ $comm == "$2" ]]
}

# pid_from_file FILE COMM: prints the pid in FILE if that process is alive and is COMM.
pid_from_file() {
  local pid
  [[ -r $1 ]] || return 1
  pid=$(tr -dc '0-9' <"$1")
  alive "$pid" "$2" || return 1
  printf '%s\n' "$pid"
}

# bus_call ARGS...: busctl call on the bus driver, with a time limit.
bus_call() {
  timeout 10 busctl --system call org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus "$@"
}

bus_answers() { bus_call GetId >/dev/null 2>&1; }

name_has_owner() { [[ $(bus_call NameHasOwner s "$1" 2>/dev/null) == "b true" ]]; }

# owner_pid NAME: the pid of the process that owns NAME on the system bus.
owner_pid() {
  local out
  out=$(bus_call GetConnectionUnixProcessID s "$1" 2>/dev/null) || return 1
  printf '%s\n' "${out#u }"
}

# stop_pid PID NAME: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2
  alive "$pid" || return 0
  say "stopping $name (PID $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until 15 eval "! alive $pid"; then
    warn "$name (PID $pid) ignored SIGTERM for 15 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 5 eval "! alive $pid" || die "$name (PID $pid) does not die"
  fi
}

# find_cargo: puts cargo in PATH (sudo resets PATH; rustup installs to ~/.cargo/bin).
find_cargo() {
  local dir
  command -v cargo >/dev/null && return 0
  for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin \
    "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)/.cargo/bin"; do
    if [[ -x $dir/cargo ]]; then
      export PATH="$PATH:$dir"
      return 0
    fi
  done
  die "cargo not found (install Rust, or put cargo in PATH)"
}
