#!/usr/bin/env bash
# Read-path benchmark against the running stack (not a test: it prints numbers).
# Measures, with wrk over HTTPS and a logged-in session cookie, the latency and
# throughput of GET /config (gateway only), GET /storagepools and GET /tasks (gateway
# + D-Bus + polkit + kimchid's model), and Basic-auth GET /storagepools (adds a PAM
# login per request); then kimchid's and the gateway's memory (VmRSS / VmHWM).
#
#   sudo tests/bench.sh [seconds per run, default 10] [connections, default 8]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/stack-lib.sh
source "$ROOT/tests/stack-lib.sh"
require_root

DURATION=${1:-10}
CONNECTIONS=${2:-8}
URL=${KIMCHI_URL:-https://127.0.0.1:8001}
USER_NAME=kimchi-bench
PASSWORD=kimchi-bench-$$-pw

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null
getent group kimchi-admin >/dev/null || die "run tests/stack-up.sh first"
id "$USER_NAME" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin -G kimchi-admin "$USER_NAME"
echo "$USER_NAME:$PASSWORD" | chpasswd

login=$(curl -sk -D - -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USER_NAME\",\"password\":\"$PASSWORD\"}" "$URL/login")
cookie=$(sed -n 's/^[Ss]et-[Cc]ookie: \(kimchi_session=[^;]*\).*/\1/p' <<<"$login")
[[ -n $cookie ]] || die "login failed: $login"

bench() { # name, path, header
  step "$1 ($DURATION s, $CONNECTIONS connections)"
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Accept: application/json" -H "$3" "$URL$2" |
    grep -E 'Latency|50%|99%|Requests/sec|Non-2xx|Socket errors'
}

bench "GET /config" /config "X-Bench: none"
bench "GET /storagepools (cookie)" /storagepools "Cookie: $cookie"
bench "GET /tasks (cookie)" /tasks "Cookie: $cookie"
basic=$(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 -w0)
bench "GET /storagepools (Basic: PAM login per request)" /storagepools "Authorization: Basic $basic"

step "memory"
for name in kimchid kimchi-gateway; do
  pid=$(pgrep -xn "$name") || die "$name is not running"
  awk -v n="$name" '/^VmRSS|^VmHWM/ {printf "    %-15s %s %s %s\n", n, $1, $2, $3}' "/proc/$pid/status"
done
curl -sk -o /dev/null -H "Cookie: $cookie" -X POST -H "X-CSRF-Token: $(printf 'kimchi-csrf:%s' "${cookie#kimchi_session=}" | sha256sum | cut -d' ' -f1)" "$URL/logout" || true
