#!/usr/bin/env bash
# Stops kimchi-gateway, kimchid and the URL check listener started by tests/stack-up.sh
# (by their pid files in /run/kimchi). The system bus, polkitd, virtlogd and libvirtd
# keep running.
#
#   sudo tests/stack-down.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/stack-lib.sh
source "$ROOT/tests/stack-lib.sh"
require_root

# stop NAME COMM PIDFILE
stop() {
  local name=$1 comm=$2 pidfile=$3 pid
  step "$name"
  if pid=$(pid_from_file "$pidfile" "$comm"); then
    stop_pid "$pid" "$name"
    alive "$pid" && die "$name (PID $pid) is still running"
    say "$name stopped"
  else
    say "not running according to $pidfile"
  fi
  rm -f "$pidfile"
}

# The gateway first: it is kimchid's client.
stop kimchi-gateway kimchi-gateway "$KIMCHI_RUN_DIR/gateway.pid"
stop kimchid kimchid "$KIMCHI_RUN_DIR/kimchid.pid"
stop "URL check listener" systemd-socket- "$KIMCHI_RUN_DIR/url-check.pid"
if [[ -S $KIMCHI_URL_CHECK_SOCKET ]] && ! ss -Hxl "src $KIMCHI_URL_CHECK_SOCKET" 2>/dev/null | grep -q .; then
  rm -f "$KIMCHI_URL_CHECK_SOCKET"
fi

# Verify: nothing of ours is left serving (another copy may have been started by hand,
# or kimchid by D-Bus activation; those are reported, not killed).
step "check"
left=0
if bus_answers && pid=$(owner_pid "$KIMCHI_BUS_NAME"); then
  warn "$KIMCHI_BUS_NAME is still owned by PID $pid ($(readlink "/proc/$pid/exe" || echo '?'))"
  left=1
fi
if ss -Hltn "sport = :$KIMCHI_PORT" 2>/dev/null | grep -q .; then
  warn "something still listens on port $KIMCHI_PORT: $(ss -Hltnp "sport = :$KIMCHI_PORT" | head -1)"
  left=1
fi
if ss -Hxl "src $KIMCHI_URL_CHECK_SOCKET" 2>/dev/null | grep -q .; then
  warn "something still listens on $KIMCHI_URL_CHECK_SOCKET: $(ss -Hxlp "src $KIMCHI_URL_CHECK_SOCKET" | head -1)"
  left=1
fi
if ((left)); then
  die "processes not started by stack-up.sh still serve kimchi (see above)"
fi
say "kimchid, kimchi-gateway and the URL check listener are down; bus, polkitd and libvirtd left running"
