#!/usr/bin/env bash
# Installs, builds and starts the whole Kimchi stack on this machine, without systemd:
# system bus, polkitd, virtlogd + libvirtd, the URL check listener (what
# kimchi-url-check.socket does), then kimchid (root) and kimchi-gateway (user
# _kimchi-gw, no capabilities) serving https://<host>:8001/.
#
#   sudo tests/stack-up.sh
#
# Idempotent: what already runs and answers is kept; kimchid and the gateway are
# restarted only when they are not running or their installed binary changed (the
# URL check runs the installed kimchid afresh for every connection).
# Environment:
#   KIMCHI_PROFILE=release|debug  cargo profile to build and install (default release)
#   KIMCHI_REPLACE=1              stop a kimchid/gateway this script did not start
#                                 (e.g. one run by hand from target/) instead of failing
#   KIMCHI_* (e.g. KIMCHI_LIBVIRT_URI), RUST_LOG  passed on to the daemons
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/stack-lib.sh
source "$ROOT/tests/stack-lib.sh"

PROFILE=${KIMCHI_PROFILE:-release}
REPLACE=${KIMCHI_REPLACE:-0}
PREFIX=/usr
SBIN=$PREFIX/sbin
GW_USER=_kimchi-gw

case $PROFILE in
  release | debug) ;;
  *) die "KIMCHI_PROFILE must be release or debug, not '$PROFILE'" ;;
esac
require_root

# Nothing from a supervisor of ours may leak into the daemons.
unset NOTIFY_SOCKET LISTEN_FDS LISTEN_PID LISTEN_FDNAMES WATCHDOG_PID WATCHDOG_USEC
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

# ---------------------------------------------------------------------------------
step "Packages"
"$ROOT/tests/install-deps.sh"

# ---------------------------------------------------------------------------------
step "Build (cargo, profile $PROFILE)"
find_cargo
if [[ $PROFILE == release ]]; then cargo_profile=(--release); else cargo_profile=(--profile dev); fi
(cd "$ROOT" && cargo build "${cargo_profile[@]}" -p kimchid -p kimchi-gateway) ||
  die "cargo build failed"

# ---------------------------------------------------------------------------------
step "Install (make install PREFIX=$PREFIX PROFILE=$PROFILE)"
make -C "$ROOT" --no-print-directory install PREFIX="$PREFIX" PROFILE="$PROFILE"

# ---------------------------------------------------------------------------------
step "Users and groups ($PREFIX/lib/sysusers.d/kimchi.conf)"
# systemd-sysusers needs no running systemd, but its simple u/g lines are parsed here
# so that the result is the same everywhere: system groups, and system users with a
# group of their own, no home and no login shell.
nologin=$(command -v nologin || echo /usr/sbin/nologin)
while read -r type name _ rest; do
  case $type in
    g)
      if getent group "$name" >/dev/null; then
        say "group $name exists"
      else
        groupadd --system "$name"
        say "created group $name"
      fi
      ;;
    u)
      gecos=""
      [[ $rest =~ ^\"([^\"]*)\" ]] && gecos=${BASH_REMATCH[1]}
      if getent passwd "$name" >/dev/null; then
        say "user $name exists"
      else
        getent group "$name" >/dev/null || groupadd --system "$name"
        useradd --system --gid "$name" --no-create-home --home-dir / \
          --shell "$nologin" --comment "$gecos" "$name"
        say "created user $name"
      fi
      ;;
    '' | '#'*) ;;
    *) warn "sysusers line of type '$type' not handled: $type $name $rest" ;;
  esac
done <"$PREFIX/lib/sysusers.d/kimchi.conf"

# ---------------------------------------------------------------------------------
step "Directories ($PREFIX/lib/tmpfiles.d/kimchi.conf)"
if systemd-tmpfiles --create "$PREFIX/lib/tmpfiles.d/kimchi.conf"; then
  say "systemd-tmpfiles --create: done"
else
  warn "systemd-tmpfiles failed; creating the directories by hand"
  while read -r type path mode user group _; do
    [[ $type == d ]] || continue
    install -d -m "$mode" -o "$user" -g "$group" "$path"
  done <"$PREFIX/lib/tmpfiles.d/kimchi.conf"
fi
while read -r type path mode user group _; do
  [[ $type == d ]] || continue
  say "$(stat -c '%a %U:%G %n' "$path")"
done <"$PREFIX/lib/tmpfiles.d/kimchi.conf"

# ---------------------------------------------------------------------------------
step "System bus"
if bus_answers; then
  say "the system bus answers; reloading its configuration (new policy, new users)"
  bus_call ReloadConfig >/dev/null || die "the system bus refused ReloadConfig"
else
  say "the system bus does not answer; starting dbus-daemon --system"
  rm -f /run/dbus/pid /run/dbus/system_bus_socket
  mkdir -p /run/dbus
  dbus-daemon --system --fork
  wait_until 10 bus_answers || die "dbus-daemon started but the system bus does not answer"
  say "system bus up (/run/dbus/system_bus_socket)"
fi

# ---------------------------------------------------------------------------------
step "polkit"
if name_has_owner org.freedesktop.PolicyKit1; then
  say "polkitd is running (PID $(owner_pid org.freedesktop.PolicyKit1 || echo '?'))"
else
  say "starting polkitd (log $KIMCHI_LOG_DIR/polkitd.log)"
  (cd / && exec setsid /usr/lib/polkit-1/polkitd --no-debug \
    >>"$KIMCHI_LOG_DIR/polkitd.log" 2>&1 </dev/null) &
  wait_until 15 name_has_owner org.freedesktop.PolicyKit1 ||
    die "polkitd did not take org.freedesktop.PolicyKit1: $(tail -5 "$KIMCHI_LOG_DIR/polkitd.log")"
fi
# polkitd notices new .policy and rules files by itself; wait until it knows ours.
wait_until 15 pkaction --action-id org.kimchi.read ||
  die "polkitd does not know the action org.kimchi.read (is org.kimchi.policy installed?)"
say "polkit knows the org.kimchi.* actions"

# ---------------------------------------------------------------------------------
step "KVM"
if [[ -c /dev/kvm ]]; then
  if getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    say "$(stat -c '%a %U:%G %n' /dev/kvm)"
  else
    warn "no group kvm: /dev/kvm left as it is"
  fi
else
  warn "no /dev/kvm: guests will run with TCG (type='qemu') only"
fi

# ---------------------------------------------------------------------------------
step "libvirt (qemu:///system)"
virsh_ok() { timeout 15 virsh -c qemu:///system version >/dev/null 2>&1; }
if virsh_ok; then
  say "libvirtd answers"
else
  if pid=$(pid_from_file /run/virtlogd.pid virtlogd); then
    say "virtlogd is running (PID $pid)"
  else
    say "starting virtlogd"
    rm -f /run/virtlogd.pid
    virtlogd -d
  fi
  if pid=$(pid_from_file /run/libvirtd.pid libvirtd); then
    say "libvirtd (PID $pid) runs but does not answer yet; waiting"
  else
    say "starting libvirtd"
    rm -f /run/libvirtd.pid
    libvirtd -d
  fi
  wait_until 30 virsh_ok || die "libvirtd does not answer on qemu:///system"
  say "libvirtd answers"
fi
say "$(virsh -c qemu:///system version 2>/dev/null | grep -m1 -i 'running hypervisor' || true)"

step "libvirt network 'default'"
network_default() {
  local v="virsh -c qemu:///system"
  local xml=/usr/share/libvirt/networks/default.xml
  if ! $v net-info default >/dev/null 2>&1; then
    if [[ ! -r $xml ]]; then
      # libvirt-daemon-config-network's file, should the package be missing.
      xml=$(mktemp)
      cat >"$xml" <<'XML'
<network>
  <name>default</name>
  <bridge name='virbr0'/>
  <forward/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
XML
    fi
    $v net-define "$xml" >/dev/null || return 1
    [[ $xml == /usr/share/* ]] || rm -f "$xml"
    say "defined network default"
  fi
  if [[ $($v net-info default 2>/dev/null | awk '/^Active:/{print $2}') != yes ]]; then
    $v net-start default >/dev/null || return 1
    say "started network default"
  fi
  $v net-autostart default >/dev/null || return 1
  say "network default is active (autostart)"
}
if ! network_default; then
  warn "the libvirt network 'default' could not be set up (see above); guests can still use"
  warn "user-mode networking. If libvirtd predates the network driver package, restart it."
fi

# ---------------------------------------------------------------------------------
# A daemon of ours: start_daemon NAME PIDFILE LOG COMMAND... starts COMMAND detached
# (own session, cwd /, stdin from /dev/null, output appended to LOG) and writes its
# pid to PIDFILE. The pid is written by the very process that then execs COMMAND
# (setpriv and env exec too), whether or not setsid had to fork.
start_daemon() {
  local name=$1 pidfile=$2 log=$3 pid
  shift 3
  printf '\n=== %s: %s started by stack-up.sh\n' "$(date -Is)" "$name" >>"$log"
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # expanded by the inner bash
  (
    cd /
    exec setsid bash -c 'echo "$$" >"$0.new" && mv "$0.new" "$0" && exec "$@"' \
      "$pidfile" "$@" >>"$log" 2>&1 </dev/null
  ) &
  wait_until 10 test -s "$pidfile" || die "$name: no pid file $pidfile after 10 s"
  pid=$(<"$pidfile")
  say "started $name (PID $pid, log $log)"
}

# current_daemon NAME COMM PIDFILE BINARY FOUND_PID: decides what to do with a
# running instance. Prints the pid to keep, or nothing when a (re)start is needed.
# FOUND_PID is a process found otherwise (bus name owner, port owner), may be empty.
current_daemon() {
  local name=$1 comm=$2 pidfile=$3 binary=$4 found=$5 pid exe
  if ! pid=$(pid_from_file "$pidfile" "$comm"); then
    pid=""
    if [[ -n $found ]] && alive "$found"; then
      exe=$(readlink "/proc/$found/exe" || true)
      if [[ ${exe% (deleted)} == "$binary" ]]; then
        say "adopting $name PID $found ($exe), not started by this script" >&2
        pid=$found
        echo "$pid" >"$pidfile"
      elif [[ $REPLACE == 1 ]]; then
        say "KIMCHI_REPLACE=1: stopping PID $found ($exe)" >&2
        stop_pid "$found" "$exe" >&2
      else
        die "PID $found ($exe) already serves what $name must serve and was not started by
this script. Stop it, or run again with KIMCHI_REPLACE=1 to have it stopped."
      fi
    fi
  fi
  [[ -n $pid ]] || return 0
  if [[ $(sha256sum <"/proc/$pid/exe" | cut -d' ' -f1) == $(sha256sum <"$binary" | cut -d' ' -f1) ]]; then
    say "$name is running (PID $pid) with the installed binary; kept" >&2
    echo "$pid"
  else
    say "$name (PID $pid) runs an older binary than $binary; restarting" >&2
    stop_pid "$pid" "$name" >&2
  fi
}

tail_log() {
  printf '\n--- last lines of %s ---\n' "$1" >&2
  tail -n 30 "$1" >&2 || true
  printf -- '---\n' >&2
}

# ---------------------------------------------------------------------------------
step "URL check listener (kimchi-url-check.socket's stand-in)"
# kimchid asks whether a template's ISO URL answers over $KIMCHI_URL_CHECK_SOCKET
# (under systemd it has no IP). As under systemd, the listener is root's (PID 1 there)
# and so is the socket, mode 0600: only root may connect. Each connection runs
# `kimchid check-url` as nobody, without capabilities or a way to gain any, the
# connection as its stdin and stdout (kimchi-url-check@.service).
URL_CHECK_PIDFILE=$KIMCHI_RUN_DIR/url-check.pid
URL_CHECK_LOG=$KIMCHI_LOG_DIR/url-check.log
SOCKET_ACTIVATE=$(command -v systemd-socket-activate) ||
  die "systemd-socket-activate is missing (package systemd)"
url_check_ready() {
  [[ -S $KIMCHI_URL_CHECK_SOCKET &&
    $(stat -c '%U:%G %a' "$KIMCHI_URL_CHECK_SOCKET") == "root:root 600" ]] &&
    ss -Hxl "src $KIMCHI_URL_CHECK_SOCKET" 2>/dev/null | grep -q .
}
listener=$(ss -Hxlp "src $KIMCHI_URL_CHECK_SOCKET" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
url_check_pid=$(current_daemon "URL check listener" systemd-socket- "$URL_CHECK_PIDFILE" \
  "$SOCKET_ACTIVATE" "$listener")
if [[ -n $url_check_pid ]] && ! url_check_ready; then
  say "the URL check listener (PID $url_check_pid) has no root-only socket at $KIMCHI_URL_CHECK_SOCKET; restarting"
  stop_pid "$url_check_pid" "URL check listener"
  url_check_pid=""
fi
if [[ -z $url_check_pid ]]; then
  # Nothing listens there (checked above): a file left behind would fail the bind.
  rm -f "$KIMCHI_URL_CHECK_SOCKET"
  start_daemon "URL check listener" "$URL_CHECK_PIDFILE" "$URL_CHECK_LOG" \
    "$SOCKET_ACTIVATE" --accept --inetd --listen="$KIMCHI_URL_CHECK_SOCKET" -- \
    "$(command -v setpriv)" --reuid=nobody --regid=nogroup --clear-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs \
    "$SBIN/kimchid" check-url
  url_check_pid=$(<"$URL_CHECK_PIDFILE")
  if ! wait_until 10 test -S "$KIMCHI_URL_CHECK_SOCKET"; then
    tail_log "$URL_CHECK_LOG"
    die "the URL check listener (PID $url_check_pid) made no socket at $KIMCHI_URL_CHECK_SOCKET"
  fi
  # systemd-socket-activate makes it root's, 0644 (only root may write, so connect);
  # stated here as the socket unit states it.
  chown root:root "$KIMCHI_URL_CHECK_SOCKET"
  chmod 0600 "$KIMCHI_URL_CHECK_SOCKET"
  if ! wait_until 10 url_check_ready; then
    tail_log "$URL_CHECK_LOG"
    die "the URL check listener (PID $url_check_pid) does not listen on $KIMCHI_URL_CHECK_SOCKET"
  fi
fi
say "URL check listener (PID $url_check_pid) on $KIMCHI_URL_CHECK_SOCKET: $(stat -c '%U:%G %a' "$KIMCHI_URL_CHECK_SOCKET"); checks run as nobody"

# ---------------------------------------------------------------------------------
step "kimchid"
KIMCHID_PIDFILE=$KIMCHI_RUN_DIR/kimchid.pid
KIMCHID_LOG=$KIMCHI_LOG_DIR/kimchid.log
kimchid_ready() {
  [[ $(owner_pid "$KIMCHI_BUS_NAME" 2>/dev/null) == "$1" ]] &&
    timeout 10 busctl --system status "$KIMCHI_BUS_NAME" >/dev/null 2>&1
}
bus_owner=$(owner_pid "$KIMCHI_BUS_NAME" 2>/dev/null || true)
kimchid_pid=$(current_daemon kimchid kimchid "$KIMCHID_PIDFILE" "$SBIN/kimchid" "$bus_owner")
if [[ -z $kimchid_pid ]]; then
  start_daemon kimchid "$KIMCHID_PIDFILE" "$KIMCHID_LOG" "$SBIN/kimchid"
  kimchid_pid=$(<"$KIMCHID_PIDFILE")
  deadline=$((SECONDS + 30))
  until kimchid_ready "$kimchid_pid"; do
    if ! alive "$kimchid_pid"; then
      tail_log "$KIMCHID_LOG"
      die "kimchid (PID $kimchid_pid) exited before taking $KIMCHI_BUS_NAME"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$KIMCHID_LOG"
      die "kimchid (PID $kimchid_pid) did not answer as $KIMCHI_BUS_NAME within 30 s"
    fi
    sleep 0.2
  done
elif ! wait_until 10 kimchid_ready "$kimchid_pid"; then
  die "kimchid (PID $kimchid_pid) runs but $KIMCHI_BUS_NAME is owned by PID $(owner_pid "$KIMCHI_BUS_NAME" || echo none)"
fi
say "kimchid (PID $kimchid_pid) owns $KIMCHI_BUS_NAME on the system bus"

# ---------------------------------------------------------------------------------
step "kimchi-gateway"
GW_PIDFILE=$KIMCHI_RUN_DIR/gateway.pid
GW_LOG=$KIMCHI_LOG_DIR/gateway.log
GW_URL=https://127.0.0.1:$KIMCHI_PORT
gateway_ready() {
  [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "$GW_URL/config") == 200 ]]
}
port_owner=$(ss -Hltnp "sport = :$KIMCHI_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
gw_pid=$(current_daemon kimchi-gateway kimchi-gateway "$GW_PIDFILE" "$SBIN/kimchi-gateway" "$port_owner")
if [[ -z $gw_pid ]]; then
  gw_home=$(getent passwd "$GW_USER" | cut -d: -f6)
  start_daemon kimchi-gateway "$GW_PIDFILE" "$GW_LOG" \
    setpriv --reuid="$GW_USER" --regid="$GW_USER" --init-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs \
    env HOME="${gw_home:-/}" USER="$GW_USER" LOGNAME="$GW_USER" \
    "$SBIN/kimchi-gateway"
  gw_pid=$(<"$GW_PIDFILE")
  deadline=$((SECONDS + 30))
  until gateway_ready; do
    if ! alive "$gw_pid"; then
      tail_log "$GW_LOG"
      die "kimchi-gateway (PID $gw_pid) exited before serving $GW_URL"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$GW_LOG"
      die "kimchi-gateway (PID $gw_pid) did not answer on $GW_URL/config within 30 s"
    fi
    sleep 0.2
  done
elif ! wait_until 10 gateway_ready; then
  tail_log "$GW_LOG"
  die "kimchi-gateway (PID $gw_pid) runs but $GW_URL/config does not answer"
fi
say "kimchi-gateway (PID $gw_pid, user $GW_USER) answers: GET /config -> $(curl -sk --max-time 5 "$GW_URL/config")"

# ---------------------------------------------------------------------------------
host=$(hostname -f 2>/dev/null || hostname)
cat <<MSG

The Kimchi stack is up.
  REST API   https://$host:$KIMCHI_PORT/   (also $GW_URL/; self-signed certificate: curl -k)
  kimchid    PID $kimchid_pid, $KIMCHI_BUS_NAME on the system bus, log $KIMCHID_LOG
  gateway    PID $gw_pid, user $GW_USER, log $GW_LOG
  URL check  PID $url_check_pid on $KIMCHI_URL_CHECK_SOCKET, log $URL_CHECK_LOG
  stop them  sudo tests/stack-down.sh   (bus, polkitd and libvirtd keep running)

Log in as a member of kimchi-admin (everything) or kimchi-users (read only):
  useradd -m -G kimchi-admin NAME && passwd NAME
  curl -k -u NAME:PASS https://$host:$KIMCHI_PORT/vms
MSG
