#!/usr/bin/env bash
# Many-guests benchmark against the running stack (not a test: it prints numbers).
# Defines KIMCHI_BENCH_COUNT (default 1000) minimal shut-off guests kimchi-bench-NNNN
# directly in libvirt, times how long kimchid takes to list them all (it learns about
# them from libvirt's events), measures with wrk over HTTPS and a logged-in session
# cookie GET /vms (every guest) and GET /vms/<one guest>, prints kimchid's and the
# gateway's memory (VmRSS / VmHWM) along the way, then undefines every kimchi-bench-*
# guest again (also on failure or Ctrl-C) unless KIMCHI_BENCH_KEEP=1.
#
#   sudo tests/bench-vms.sh [seconds per run, default 10] [connections, default 8]
#   sudo KIMCHI_BENCH_COUNT=200 KIMCHI_BENCH_KEEP=1 tests/bench-vms.sh 5 8
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/stack-lib.sh
source "$ROOT/tests/stack-lib.sh"
require_root

DURATION=${1:-10}
CONNECTIONS=${2:-8}
URL=${KIMCHI_URL:-https://127.0.0.1:8001}
COUNT=${KIMCHI_BENCH_COUNT:-1000}
KEEP=${KIMCHI_BENCH_KEEP:-0}
WAIT_LIMIT=${KIMCHI_BENCH_WAIT:-600} # seconds to wait for GET /vms to catch up
VIRSH=(virsh -q -c qemu:///system)
PREFIX=kimchi-bench-
USER_NAME=kimchi-bench
PASSWORD=kimchi-bench-$$-pw

[[ $COUNT =~ ^[0-9]+$ && $COUNT -ge 1 ]] || die "KIMCHI_BENCH_COUNT must be a positive integer"
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq >/dev/null
getent group kimchi-admin >/dev/null || die "run tests/stack-up.sh first"
id "$USER_NAME" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin -G kimchi-admin "$USER_NAME"
echo "$USER_NAME:$PASSWORD" | chpasswd

WORK=$(mktemp -d /tmp/kimchi-bench-vms.XXXXXX)
cookie=
baseline=

guest_name() { printf '%s%04d' "$PREFIX" "$1"; }

now() { printf '%s\n' "$EPOCHREALTIME"; }

# since START: seconds elapsed since START (from now), two decimals.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}'; }

login() {
  local out
  out=$(curl -sk -D - -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"username\":\"$USER_NAME\",\"password\":\"$PASSWORD\"}" "$URL/login") || return 1
  cookie=$(sed -n 's/^[Ss]et-[Cc]ookie: \(kimchi_session=[^;]*\).*/\1/p' <<<"$out")
  [[ -n $cookie ]]
}

logout() {
  [[ -n $cookie ]] || return 0
  curl -sk -o /dev/null -H "Cookie: $cookie" -X POST \
    -H "X-CSRF-Token: $(printf 'kimchi-csrf:%s' "${cookie#kimchi_session=}" | sha256sum | cut -d' ' -f1)" \
    "$URL/logout" || true
}

# get_vms: GET /vms into $WORK/vms.json; logs in again if the session is gone (kimchid
# restarted). Fails if the gateway does not answer 200.
get_vms() {
  local code
  code=$(curl -sk -o "$WORK/vms.json" -w '%{http_code}' -H "Cookie: $cookie" "$URL/vms") || return 1
  if [[ $code == 401 ]]; then
    login || return 1
    code=$(curl -sk -o "$WORK/vms.json" -w '%{http_code}' -H "Cookie: $cookie" "$URL/vms") || return 1
  fi
  [[ $code == 200 ]]
}

# count_vms: prints "TOTAL BENCH" (all guests, kimchi-bench-* guests) as GET /vms lists them.
count_vms() {
  get_vms || return 1
  jq -r --arg p "$PREFIX" '"\(length) \(map(select(.name | startswith($p))) | length)"' "$WORK/vms.json"
}

# wait_for_vms WHAT TOTAL BENCH START END: polls GET /vms until it lists TOTAL guests
# of which BENCH are kimchi-bench-*; prints progress and the time since START and END
# (when WHAT started and finished).
wait_for_vms() {
  local what=$1 want_total=$2 want_bench=$3 start=$4 end=$5 deadline=$((SECONDS + WAIT_LIMIT))
  local counts=unknown total bench next_report=$((SECONDS + 5))
  while :; do
    if counts=$(count_vms 2>/dev/null); then
      read -r total bench <<<"$counts"
      if [[ $total == "$want_total" && $bench == "$want_bench" ]]; then
        say "GET /vms lists $total guests ($bench $PREFIX*) $(since "$start") s after $what started, $(since "$end") s after it finished"
        return 0
      fi
    else
      counts="gateway not answering"
    fi
    ((SECONDS < deadline)) || {
      warn "GET /vms still says '$counts' (total, $PREFIX*) after $WAIT_LIMIT s; wanted $want_total $want_bench"
      return 1
    }
    if ((SECONDS >= next_report)); then
      say "... $(since "$start") s: GET /vms: $counts (total, $PREFIX*)"
      next_report=$((SECONDS + 5))
    fi
    sleep 0.25
  done
}

memory() { # label
  local name pid
  step "memory: $1"
  for name in kimchid kimchi-gateway; do
    if ! pid=$(pgrep -xn "$name"); then
      say "$name is not running"
      continue
    fi
    awk -v n="$name" -v p="$pid" '/^VmRSS:/ {rss = $2} /^VmHWM:/ {hwm = $2}
      END {printf "    %-15s (PID %s) VmRSS %7d kB   VmHWM %7d kB\n", n, p, rss, hwm}' "/proc/$pid/status"
  done
}

bench_guests() { "${VIRSH[@]}" list --all --name | grep "^$PREFIX" || true; }

# virsh_batch FILE: runs the virsh commands in FILE (one a line) in a single virsh
# process; its errors are left in FILE.err.
virsh_batch() {
  "${VIRSH[@]}" <"$1" >"$1.out" 2>"$1.err" || true
  if [[ -s $1.err ]]; then
    warn "virsh reported $(grep -c '^error' "$1.err") errors, e.g.:"
    head -n 3 "$1.err" >&2
  fi
}

cleanup() {
  local rc=$? start end left
  trap - EXIT INT TERM
  set +e
  if [[ $KEEP == 1 ]]; then
    step "KIMCHI_BENCH_KEEP=1: leaving the $PREFIX* guests defined"
  else
    step "undefining every $PREFIX* guest"
    bench_guests >"$WORK/undefine.names"
    {
      "${VIRSH[@]}" list --name --state-running | grep "^$PREFIX" | sed 's/^/destroy /'
      sed 's/^/undefine /' "$WORK/undefine.names"
    } >"$WORK/undefine.virsh"
    start=$(now)
    virsh_batch "$WORK/undefine.virsh"
    end=$(now)
    say "undefined $(wc -l <"$WORK/undefine.names") guests in $(since "$start") s (one virsh process)"
    left=$(bench_guests | wc -l)
    ((left == 0)) || warn "$left $PREFIX* guests are still defined"
    if [[ -n $baseline && -n $cookie ]]; then
      wait_for_vms "undefining" "$baseline" 0 "$start" "$end" &&
        say "back to the $baseline guests listed before the benchmark"
    fi
  fi
  logout
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "logging in as $USER_NAME"
wait_until 60 login || die "login to $URL failed"
counts=$(count_vms) || die "GET /vms failed: $(head -c 300 "$WORK/vms.json" 2>/dev/null)"
read -r total existing <<<"$counts"
baseline=$((total - existing))
say "GET /vms lists $total guests now, $existing of them $PREFIX*"

memory "before defining"

step "defining $COUNT guests $(guest_name 1) ... $(guest_name "$COUNT") in libvirt"
declare -A defined=()
while read -r name; do defined[$name]=1; done < <(bench_guests)
mkdir "$WORK/xml"
: >"$WORK/define.virsh"
skipped=0
for ((i = 1; i <= COUNT; i++)); do
  printf -v name '%s%04d' "$PREFIX" "$i"
  if [[ -n ${defined[$name]:-} ]]; then
    skipped=$((skipped + 1))
    continue
  fi
  cat >"$WORK/xml/$name.xml" <<EOF
<domain type='kvm'>
  <name>$name</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type></os>
  <devices><graphics type='vnc'/></devices>
</domain>
EOF
  printf 'define %s\n' "$WORK/xml/$name.xml" >>"$WORK/define.virsh"
done
todo=$(wc -l <"$WORK/define.virsh")
say "$skipped already defined (skipped), $todo to define"
start=$(now)
virsh_batch "$WORK/define.virsh"
end=$(now)
say "defined $todo guests in $(since "$start") s (one virsh process)"
have=$(bench_guests | wc -l)
[[ $have -ge $COUNT ]] || die "only $have $PREFIX* guests are defined in libvirt"

step "waiting for GET /vms to list them"
wait_for_vms "defining" $((baseline + have)) "$have" "$start" "$end" || die "kimchid did not catch up"

memory "after the guests are known"

step "GET /vms response"
curl -sk -o /dev/null -H "Cookie: $cookie" \
  -w '    %{http_code}, %{size_download} bytes, %{time_total} s (one request)\n' "$URL/vms"

bench() { # name, path, header
  step "$1 ($DURATION s, $CONNECTIONS connections)"
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Accept: application/json" -H "$3" "$URL$2" |
    grep -E 'Latency|^ +(50|99)%|Requests/sec|Transfer/sec|Non-2xx|Socket errors'
}

one=$(guest_name $(((COUNT + 1) / 2)))
bench "GET /vms ($((baseline + have)) guests, cookie)" /vms "Cookie: $cookie"
bench "GET /vms/$one (cookie)" "/vms/$one" "Cookie: $cookie"

memory "after the wrk runs"
