#!/usr/bin/env bash
# The benchmark (not a test: it prints numbers, and a PASS/FAIL line per target). In
# one run on one libvirtd, at 10, 100 and 1000 defined guests, it measures kimchi
# against its anchors: GET /vms/:name (session cookie, Basic) against GET /config
# (the gateway alone) and libvirt-dbus's per-domain GetAll, GET /vms against libvirt's
# bulk statistics call, D-Bus GetVM against a bare Ping; then how soon a suspend or
# resume made with libvirt shows over REST and D-Bus, kimchid's and the gateway's
# memory, and a soak of 64 clients. Medians come from tests/src/bin/kimchi-bench/
# over one keep-alive connection, rates from wrk.
#
# This script checks that the stack runs, installs wrk and libvirt-dbus, starts
# libvirt-dbus on the system bus if nothing owns org.libvirt (and stops it at the
# end), logs in as a user of kimchi-admin, and defines the guests kimchi-bench-NNNN
# (shut off, no disk, 64 MiB) directly in libvirt, adding to them from one size to
# the next; it undefines them all at the end, also on failure or Ctrl-C.
#
#   sudo tests/bench.sh [seconds per wrk run, default 10] [connections, default 8]
#   sudo KIMCHI_BENCH_SIZES="10 100" KIMCHI_BENCH_SOAK_SECS=20 tests/bench.sh 5
#
# KIMCHI_BENCH_SIZES   guest counts, ascending (default "10 100 1000")
# KIMCHI_BENCH_SOAK_SECS  length of the soak (default 180; 0 skips it)
# KIMCHI_BENCH_TASK_WAIT  how long to wait for finished tasks to go (default 900 s)
# KIMCHI_BENCH_REQUESTS   calls per median (default 2000), KIMCHI_BENCH_BUDGET the
#                         seconds one median may take (default 20; at least 30 calls)
# KIMCHI_BENCH_CHANGES    suspends + resumes timed (default 200)
# KIMCHI_BENCH_SOAK_CLIENTS (default 64), KIMCHI_URL (default https://127.0.0.1:8001)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/stack-lib.sh
source "$ROOT/tests/stack-lib.sh"
require_root

DURATION=${1:-10}
CONNECTIONS=${2:-8}
SIZES=${KIMCHI_BENCH_SIZES:-10 100 1000}
SOAK_SECS=${KIMCHI_BENCH_SOAK_SECS:-180}
URL=${KIMCHI_URL:-https://127.0.0.1:8001}
VIRSH=(virsh -q -c qemu:///system)
PREFIX=kimchi-bench-
USER_NAME=kimchi-bench
PASSWORD=kimchi-bench-$$-pw
LIBVIRT_DBUS=org.libvirt
LIBVIRT_DBUS_SERVICE=/usr/share/dbus-1/system-services/$LIBVIRT_DBUS.service

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "seconds per wrk run must be a positive integer"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "connections must be a positive integer"
[[ $SOAK_SECS =~ ^[0-9]+$ ]] || die "KIMCHI_BENCH_SOAK_SECS must be a whole number of seconds"
read -r -a sizes <<<"$SIZES"
((${#sizes[@]} > 0)) || die "KIMCHI_BENCH_SIZES is empty"
previous=0
for size in "${sizes[@]}"; do
  [[ $size =~ ^[1-9][0-9]*$ && $size -gt $previous ]] ||
    die "KIMCHI_BENCH_SIZES must be positive integers in ascending order, not '$SIZES'"
  previous=$size
done

printf 'kimchi benchmark: %s, %s cores (nproc), guests: %s, soak: %s s\n' \
  "$(date '+%F %T %Z')" "$(nproc)" "$SIZES" "$SOAK_SECS"

stack_answers() {
  [[ $(curl -sk -o /dev/null -w '%{http_code}' "$URL/config") == 200 ]] &&
    name_has_owner "$KIMCHI_BUS_NAME"
}

step "checking that the stack runs"
wait_until 30 stack_answers ||
  die "the stack is not running: GET $URL/config does not answer 200, or nothing owns $KIMCHI_BUS_NAME on the system bus (start it with tests/stack-up.sh)"
getent group kimchi-admin >/dev/null || die "no group kimchi-admin: run tests/stack-up.sh first"
"${VIRSH[@]}" version >/dev/null || die "libvirtd does not answer"

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null
}

# libvirt-dbus depends on libvirt-daemon-system, whose maintainer scripts would
# restart the libvirtd the stack runs on; a policy-rc.d that says no stops them.
install_libvirt_dbus() {
  local release=() guard=/usr/sbin/policy-rc.d made_guard=0 rc=0
  # The stack takes libvirt from bookworm-backports; libvirt-dbus must come from there
  # too, or apt finds its dependencies on libvirt's packages uninstallable.
  if [[ $(dpkg-query -W -f='${Version}' libvirt-daemon 2>/dev/null) == *bpo* ]]; then
    release=(-t bookworm-backports)
  fi
  if [[ ! -e $guard ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod 755 "$guard"
    made_guard=1
  fi
  apt_install "${release[@]}" libvirt-dbus || rc=$?
  if ((made_guard)); then rm -f "$guard"; fi
  ((rc == 0)) || die "cannot install libvirt-dbus (see apt-cache policy libvirt-daemon libvirt-dbus)"
  # Its bus policy names its user, which the package has only just created.
  bus_call ReloadConfig >/dev/null
}

step "installing what the benchmark needs"
command -v wrk >/dev/null || apt_install wrk
command -v xorriso >/dev/null || apt_install xorriso
[[ -x /usr/sbin/libvirt-dbus ]] || install_libvirt_dbus
id "$USER_NAME" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$USER_NAME"
usermod -a -G kimchi-admin "$USER_NAME"
echo "$USER_NAME:$PASSWORD" | chpasswd
say "wrk, xorriso, libvirt-dbus; user $USER_NAME (kimchi-admin)"

WORK=$(mktemp -d /tmp/kimchi-bench.XXXXXX)
mkdir "$WORK/xml"
LIBVIRT_DBUS_PID=
BENCH=
soak_started=0

bench_guests() { "${VIRSH[@]}" list --all --name | grep "^$PREFIX" || true; }

# virsh_batch FILE: runs the virsh commands in FILE (one a line) in one virsh process.
virsh_batch() {
  "${VIRSH[@]}" <"$1" >"$1.out" 2>"$1.err" || true
  if [[ -s $1.err ]]; then
    warn "virsh reported $(grep -c '^error' "$1.err") errors, e.g.:"
    head -n 3 "$1.err" >&2
  fi
}

# since START: seconds elapsed since START ($EPOCHREALTIME), two decimals.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}'; }

# Shut-off guests without disks: TCG (the changes step runs one), no VNC port.
guest_xml() {
  cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><graphics type='vnc'><listen type='none'/></graphics></devices>
</domain>
EOF
}

# define_guests COUNT: defines those of kimchi-bench-0001 … COUNT not defined yet.
define_guests() {
  local count=$1 i name todo start have
  local -A defined=()
  while read -r name; do defined[$name]=1; done < <(bench_guests)
  : >"$WORK/define.virsh"
  for ((i = 1; i <= count; i++)); do
    printf -v name '%s%04d' "$PREFIX" "$i"
    if [[ -z ${defined[$name]:-} ]]; then
      guest_xml "$name" >"$WORK/xml/$name.xml"
      printf 'define %s\n' "$WORK/xml/$name.xml" >>"$WORK/define.virsh"
    fi
  done
  todo=$(wc -l <"$WORK/define.virsh")
  start=$EPOCHREALTIME
  virsh_batch "$WORK/define.virsh"
  say "defined $todo guests in $(since "$start") s (one virsh process)"
  have=$(bench_guests | wc -l)
  ((have >= count)) || die "only $have $PREFIX* guests are defined in libvirt"
}

# teardown: undefines every bench guest, removes what a soak left and stops the
# libvirt-dbus this script started; safe to run twice.
teardown() {
  local names start
  mapfile -t names < <(bench_guests)
  if ((${#names[@]} > 0)); then
    step "undefining every $PREFIX* guest"
    {
      "${VIRSH[@]}" list --name --state-running | grep "^$PREFIX" | sed 's/^/destroy /' || true
      printf 'undefine %s\n' "${names[@]}"
    } >"$WORK/undefine.virsh"
    start=$EPOCHREALTIME
    virsh_batch "$WORK/undefine.virsh"
    say "undefined ${#names[@]} guests in $(since "$start") s"
  fi
  if ((soak_started)) && [[ -n $BENCH ]]; then
    "$BENCH" cleanup || warn "the soak's templates or volumes may be left (names $PREFIX""soak-*)"
    soak_started=0
  fi
  if [[ -n $LIBVIRT_DBUS_PID ]]; then
    stop_pid "$LIBVIRT_DBUS_PID" libvirt-dbus
    LIBVIRT_DBUS_PID=
  fi
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  teardown
  rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! name_has_owner "$LIBVIRT_DBUS"; then
  step "starting libvirt-dbus on the system bus"
  # As the bus would activate it: Exec= as User= of its activation file.
  exec_line=$(sed -n 's/^Exec=//p' "$LIBVIRT_DBUS_SERVICE")
  service_user=$(sed -n 's/^User=//p' "$LIBVIRT_DBUS_SERVICE")
  read -r -a exec_argv <<<"$exec_line"
  [[ ${#exec_argv[@]} -gt 0 && -n $service_user ]] || die "no Exec= or User= in $LIBVIRT_DBUS_SERVICE"
  setpriv --reuid="$service_user" --regid="$(id -g "$service_user")" --init-groups \
    "${exec_argv[@]}" >"$WORK/libvirt-dbus.log" 2>&1 &
  LIBVIRT_DBUS_PID=$!
  wait_until 15 name_has_owner "$LIBVIRT_DBUS" ||
    die "libvirt-dbus (${exec_argv[*]} as $service_user) did not take $LIBVIRT_DBUS: $(cat "$WORK/libvirt-dbus.log")"
  say "PID $LIBVIRT_DBUS_PID: ${exec_argv[*]} as $service_user"
fi

step "building kimchi-bench (release)"
find_cargo
(cd "$ROOT" && cargo build --release -q -p kimchi-tests --bin kimchi-bench) || die "cargo build failed"
BENCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/kimchi-bench

export KIMCHI_URL=$URL KIMCHI_BENCH_USER=$USER_NAME KIMCHI_BENCH_PASSWORD=$PASSWORD \
  KIMCHI_BENCH_RESULTS=$WORK/results KIMCHI_BENCH_DURATION=$DURATION \
  KIMCHI_BENCH_CONNECTIONS=$CONNECTIONS

for size in "${sizes[@]}"; do
  step "$size guests: defining them in libvirt"
  define_guests "$size"
  "$BENCH" size "$size"
done
"$BENCH" changes "${sizes[-1]}"
"$BENCH" memory after-run
if ((SOAK_SECS > 0)); then
  soak_started=1
  "$BENCH" soak "$SOAK_SECS"
  soak_started=0 # it cleaned up after itself
else
  step "soak skipped (KIMCHI_BENCH_SOAK_SECS=0)"
fi
teardown
"$BENCH" report
