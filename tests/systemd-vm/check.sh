#!/bin/bash
# The systemd check, run inside the guest of tests/systemd-vm.sh by
# kimchi-vm-check.service at boot. Every check prints one line
# "KIMCHI-CHECK PASS|FAIL <name>: <detail>" on the console and in the results that
# go back to the host on the second disk (/dev/vdb), followed by "KIMCHI-CHECK END".
# shellcheck disable=SC2016 # the bash -c scripts expand in the child
set -uo pipefail

RESULTS=/run/kimchi-vm-check.results
RESULTS_DISK=/dev/vdb
: >"$RESULTS"
ADMIN=vmadmin
NOBODY=vmnobody
PASSWORD='Kimchi-vm-1!'
WORK=/var/lib/kimchi-vmtest
KIMCHI_UNITS=(kimchid.service kimchi-gateway.service kimchi-gateway.socket kimchi-gateway-certificate.service
  kimchi-url-check.socket 'kimchi-url-check@*.service')
# busybox httpd serves the ISO image for the template URL checks on this port.
HTTP_PORT=8080

result() {
  local line="KIMCHI-CHECK $1 $2${3:+: $3}"
  printf '%s\n' "$line" >>"$RESULTS"
  printf '%s\n' "$line"
}
pass() { result PASS "$1" "${2:-}"; }
fail() { result FAIL "$1" "$(printf '%s' "${2:-}" | tr '\n' ' ' | cut -c1-600)"; }
# check NAME COMMAND...: PASS when COMMAND succeeds; its output is the detail.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name" "$(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)"; else fail "$name" "$out"; fi
}

finish() {
  { cat "$RESULTS"; echo "KIMCHI-CHECK END"; } >/run/kimchi-vm-check.out
  # The results disk is raw: the text from offset 0, the rest stays zeros.
  dd if=/run/kimchi-vm-check.out of="$RESULTS_DISK" conv=notrunc,fsync status=none
  echo "KIMCHI-CHECK END"
}
trap finish EXIT

# wait_for SECONDS COMMAND...: true once COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# http METHOD PATH [BODY] [CURL ARGS...]: sets CODE and BODY (the response's).
http() {
  local method=$1 path=$2 data=${3:-}
  shift 2
  (($# > 0)) && shift
  local args=(-sk -o /run/kimchi-vm-check.body -w '%{http_code}' -X "$method" --max-time 300)
  [[ -n $data ]] && args+=(-H 'Content-Type: application/json' -d "$data")
  CODE=$(curl "${args[@]}" "$@" "https://localhost:8001$path") || CODE=000
  BODY=$(cat /run/kimchi-vm-check.body 2>/dev/null)
}
# admin METHOD PATH [BODY]: http as the administrator, with HTTP Basic.
admin() { http "$1" "$2" "${3:-}" -u "$ADMIN:$PASSWORD"; }
# expect_code NAME WANT: PASS when the last http call answered WANT.
expect_code() {
  if [[ $CODE == "$2" ]]; then pass "$1" "$CODE"; else fail "$1" "HTTP $CODE (wanted $2): $BODY"; fi
}

active() { [[ $(systemctl is-active "$1") == active ]]; }
inactive() { [[ $(systemctl is-active "$1") != active && $(systemctl is-active "$1") != activating ]]; }
prop() { systemctl show -P "$2" "$1"; }

echo "KIMCHI-CHECK BEGIN systemd $(systemctl --version | head -1), kernel $(uname -r)"

# --- The installation ----------------------------------------------------------

# Warnings about other units verify loads (bookworm's systemd 252 does not know the
# Type=notify-reload of backports' libvirtd.service) are shown, not counted.
check units-verify bash -c '
  out=$(systemd-analyze verify /usr/lib/systemd/system/kimchid.service \
    /usr/lib/systemd/system/kimchi-gateway.service /usr/lib/systemd/system/kimchi-gateway.socket \
    /usr/lib/systemd/system/kimchi-gateway-certificate.service \
    /usr/lib/systemd/system/kimchi-url-check.socket /usr/lib/systemd/system/kimchi-url-check@.service 2>&1) ||
    { echo "$out"; exit 1; }
  ours=$(grep -v -E "^/[^:]*/[^/:k][^/:]*:|^/[^:]*/k[^i][^/:]*:" <<<"$out")
  [[ -z $ours ]] || { echo "warnings: $ours"; exit 1; }
  echo "6 units, no warning about them${out:+ (about other units: $out)}"'

check sysusers bash -c '
  u=$(getent passwd _kimchi-gw) || { echo "no user _kimchi-gw"; exit 1; }
  IFS=: read -r _ _ uid gid _ home shell <<<"$u"
  ((uid > 0 && uid < 1000)) || { echo "_kimchi-gw uid $uid is not a system uid"; exit 1; }
  [[ $shell == */nologin ]] || { echo "_kimchi-gw shell $shell"; exit 1; }
  for g in _kimchi-gw kimchi-admin kimchi-users; do getent group "$g" >/dev/null || { echo "no group $g"; exit 1; }; done
  echo "_kimchi-gw uid $uid gid $gid shell $shell; groups kimchi-admin kimchi-users"'

check tmpfiles bash -c '
  want() { got=$(stat -c "%a %U %G" "$1" 2>&1); [[ $got == "$2" ]] || { echo "$1: $got (wanted $2)"; exit 1; }; }
  want /var/lib/kimchi "700 root root"
  want /var/lib/kimchi-gateway "700 _kimchi-gw _kimchi-gw"
  want /run/kimchi "755 root root"
  want /var/log/kimchi "755 root root"
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/kimchi.conf || { echo "systemd-tmpfiles --create failed"; exit 1; }
  echo "4 directories as declared"'

# --- Users for the logins: an administrator and a user in no kimchi group ----------
for u in "$ADMIN" "$NOBODY"; do
  id "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"
  echo "$u:$PASSWORD" | chpasswd
done
usermod -a -G kimchi-admin "$ADMIN"

# --- kimchid under systemd -------------------------------------------------------

wait_for 120 virsh -c qemu:///system version
check kimchid-enabled-at-boot bash -c 'systemctl is-enabled kimchid.service kimchi-gateway.socket | tr "\n" " "; systemctl is-active kimchid.service'
# Enabled with kimchid.service (its Also=), listening as the unit says.
check url-check-socket bash -c '
  [[ $(systemctl is-enabled kimchi-url-check.socket) == enabled && $(systemctl is-active kimchi-url-check.socket) == active ]] ||
    { echo "kimchi-url-check.socket $(systemctl is-enabled kimchi-url-check.socket) $(systemctl is-active kimchi-url-check.socket)"; exit 1; }
  got=$(stat -c "%U:%G %a" /run/kimchi-url-check.sock) && [[ $got == "root:root 600" ]] || { echo "socket: $got"; exit 1; }
  echo "enabled, active, /run/kimchi-url-check.sock $got"'

systemctl stop kimchid.service
if inactive kimchid.service; then
  # D-Bus activation: a call to the name starts kimchid.service.
  if out=$(timeout 60 busctl --system call org.kimchi.Kimchi1 /org/kimchi/Kimchi1 org.freedesktop.DBus.Peer Ping 2>&1) &&
    active kimchid.service; then
    pass dbus-activation "Ping answered; kimchid.service $(systemctl is-active kimchid.service) (PID $(prop kimchid MainPID))"
  else
    fail dbus-activation "busctl: $out; kimchid.service $(systemctl is-active kimchid.service)"
  fi
else
  fail dbus-activation "kimchid.service did not stop"
fi

systemctl stop kimchid.service
started=$SECONDS
if timeout 120 systemctl start kimchid.service && active kimchid.service; then
  status=$(prop kimchid StatusText)
  if [[ -n $status ]]; then
    pass systemctl-start "active after $((SECONDS - started)) s, STATUS=$status"
  else
    fail systemctl-start "active but no STATUS="
  fi
else
  fail systemctl-start "kimchid.service $(systemctl is-active kimchid.service): $(journalctl -u kimchid -n 20 --no-pager)"
fi

# --- The gateway by socket activation ----------------------------------------------
if active kimchi-gateway.socket && inactive kimchi-gateway.service; then
  http GET /config
  if [[ $CODE == 200 ]] && wait_for 30 active kimchi-gateway.service; then
    pass socket-activation "GET /config 200; kimchi-gateway.service active (PID $(prop kimchi-gateway MainPID), user $(ps -o user= -p "$(prop kimchi-gateway MainPID)"))"
  else
    fail socket-activation "GET /config $CODE; gateway $(systemctl is-active kimchi-gateway.service): $(journalctl -u kimchi-gateway -n 20 --no-pager)"
  fi
else
  fail socket-activation "before the first connection: socket $(systemctl is-active kimchi-gateway.socket), service $(systemctl is-active kimchi-gateway.service)"
fi

# --- Logins ------------------------------------------------------------------------
admin GET /vms
expect_code login-basic-admin 200
http GET /vms "" -u "$NOBODY:$PASSWORD"
expect_code login-basic-refused-user 403
http GET /vms "" -u "$ADMIN:wrong-password"
expect_code login-basic-wrong-password 401

rm -f /run/kimchi-vm-check.jar
http POST /login "{\"username\": \"$ADMIN\", \"password\": \"$PASSWORD\"}" -c /run/kimchi-vm-check.jar
if [[ $CODE == 200 ]] && csrf=$(jq -er .csrf_token <<<"$BODY"); then
  http GET /vms "" -b /run/kimchi-vm-check.jar
  session_get=$CODE
  http POST /logout "" -b /run/kimchi-vm-check.jar -H "X-CSRF-Token: $csrf"
  logout=$CODE
  http GET /vms "" -b /run/kimchi-vm-check.jar
  if [[ $session_get == 200 && $logout =~ ^20 && $CODE == 401 ]]; then
    pass login-session-admin "login 200, GET /vms 200, logout $logout, then 401"
  else
    fail login-session-admin "GET /vms $session_get, logout $logout, after logout $CODE"
  fi
else
  fail login-session-admin "POST /login $CODE: $BODY"
fi
rm -f /run/kimchi-vm-check.jar
http POST /login "{\"username\": \"$NOBODY\", \"password\": \"$PASSWORD\"}" -c /run/kimchi-vm-check.jar
login=$CODE
if [[ $login == 200 ]]; then
  http GET /vms "" -b /run/kimchi-vm-check.jar
  if [[ $CODE == 403 ]]; then pass login-session-refused-user "login 200, GET /vms 403"; else fail login-session-refused-user "login 200, GET /vms $CODE"; fi
elif [[ $login == 401 || $login == 403 ]]; then
  pass login-session-refused-user "login $login"
else
  fail login-session-refused-user "POST /login $login: $BODY"
fi

# --- Pool, volume, template, VM --------------------------------------------------------
# A small bootable ISO image, $WORK/iso/x.iso (its directory is what busybox httpd serves).
make_iso() {
  [[ -s $WORK/iso/x.iso ]] && return
  mkdir -p "$WORK/iso/src"
  head -c 4096 /dev/zero >"$WORK/iso/src/boot.img"
  xorriso -as mkisofs -V 'Ubuntu-Server 22.04.1 LTS amd64' -b boot.img -no-emul-boot \
    -boot-load-size 4 -o "$WORK/iso/x.iso" "$WORK/iso/src" >/dev/null 2>&1
}

# The whole flow as one function so that the seccomp phase can run it again.
vm_flow() {
  local tag=$1 pool=vmt-pool-$1 tpl=vmt-tpl-$1 vm=vmt-vm-$1
  mkdir -p "$WORK/$pool"
  make_iso
  admin POST /storagepools "{\"name\": \"$pool\", \"type\": \"dir\", \"path\": \"$WORK/$pool\"}"
  expect_code "$tag-pool-create" 201
  admin POST "/storagepools/$pool/activate" "{}"
  expect_code "$tag-pool-activate" 200
  admin POST "/storagepools/$pool/storagevolumes" '{"name": "data.qcow2", "capacity": 64, "format": "qcow2"}'
  if [[ $CODE == 201 || $CODE == 200 ]]; then
    local created=$CODE
    admin GET "/storagepools/$pool/storagevolumes/data.qcow2"
    if [[ $CODE == 200 ]]; then
      pass "$tag-volume-create" "POST $created, GET 200, capacity $(jq -r .capacity <<<"$BODY")"
    else
      fail "$tag-volume-create" "POST $created, then GET $CODE: $BODY"
    fi
  else
    fail "$tag-volume-create" "HTTP $CODE: $BODY"
  fi
  admin POST /templates "{\"name\": \"$tpl\", \"cdrom\": \"$WORK/iso/x.iso\", \"memory\": 128, \"disks\": [{\"size\": 1}]}"
  expect_code "$tag-template-create" 201
  admin POST /vms "{\"name\": \"$vm\", \"template\": \"/templates/$tpl\", \"storagepool\": \"/storagepools/$pool\"}"
  if [[ $CODE == 201 || $CODE == 202 ]]; then
    local created=$CODE
    wait_for 120 bash -c "curl -sk -u '$ADMIN:$PASSWORD' https://localhost:8001/vms/$vm | jq -e '.state' >/dev/null"
    admin GET "/vms/$vm"
    pass "$tag-vm-create" "POST /vms $created, state $(jq -r .state <<<"$BODY")"
  else
    fail "$tag-vm-create" "HTTP $CODE: $BODY"
  fi
  admin POST "/vms/$vm/start" "{}"
  if [[ $CODE == 200 ]]; then
    admin GET "/vms/$vm"
    pass "$tag-vm-start" "state $(jq -r .state <<<"$BODY"), libvirt domain type $(virsh -c qemu:///system dumpxml "$vm" | sed -n "s/^<domain type='\([a-z]*\)'.*/\1/p") ($VIRT_NOTE)"
    admin POST "/vms/$vm/poweroff" "{}"
    [[ $CODE == 200 ]] || { admin POST "/vms/$vm/stop" "{}"; }
  else
    fail "$tag-vm-start" "HTTP $CODE: $BODY ($VIRT_NOTE)"
  fi
  admin DELETE "/vms/$vm"
  expect_code "$tag-vm-delete" 204
  admin DELETE "/templates/$tpl"
  expect_code "$tag-template-delete" 204
  admin DELETE "/storagepools/$pool/storagevolumes/data.qcow2"
  expect_code "$tag-volume-delete" 204
  admin POST "/storagepools/$pool/deactivate" "{}"
  admin DELETE "/storagepools/$pool"
  expect_code "$tag-pool-delete" 204
}

# --- Template ISO URLs: kimchid has no IP; kimchi-url-check@.service asks the server -----
# One connection to kimchi-url-check.socket per check (its NAccepted counts them).
url_flow() {
  local tag=$1 tpl=vmt-url-$1 accepted closed_port=8081
  accepted=$(prop kimchi-url-check.socket NAccepted)
  admin POST /templates "{\"name\": \"$tpl\", \"cdrom\": \"http://127.0.0.1:$HTTP_PORT/x.iso\", \"memory\": 128, \"disks\": [{\"size\": 1}]}"
  if [[ $CODE == 201 && $(prop kimchi-url-check.socket NAccepted) -gt $accepted ]]; then
    pass "$tag-url-template" "cdrom http://127.0.0.1:$HTTP_PORT/x.iso: 201, checked by kimchi-url-check@.service (connections $accepted -> $(prop kimchi-url-check.socket NAccepted))"
  else
    fail "$tag-url-template" "HTTP $CODE: $BODY; connections $accepted -> $(prop kimchi-url-check.socket NAccepted); $(journalctl -b -q --no-pager -u 'kimchi-url-check@*' | tail -5)"
  fi
  admin DELETE "/templates/$tpl"
  admin POST /templates "{\"name\": \"$tpl-closed\", \"cdrom\": \"http://127.0.0.1:$closed_port/x.iso\"}"
  if [[ $CODE == 400 && $BODY == *"does not answer"* ]]; then
    pass "$tag-url-template-closed-port" "400: $(jq -r .reason <<<"$BODY")"
  else
    fail "$tag-url-template-closed-port" "HTTP $CODE (wanted 400, does not answer): $BODY"
  fi
}

make_iso
busybox httpd -p "127.0.0.1:$HTTP_PORT" -h "$WORK/iso"
url_flow flow
families=$(prop kimchid RestrictAddressFamilies)
denied=$(prop kimchid IPAddressDeny)
if [[ -n $families && $families != *AF_INET* && -n $denied ]] && admin GET /config && [[ $CODE == 200 ]]; then
  pass kimchid-no-ip "RestrictAddressFamilies=$families, IPAddressDeny=$denied; the gateway answers and URLs are checked (above)"
else
  fail kimchid-no-ip "RestrictAddressFamilies=$families, IPAddressDeny=$denied, GET /config $CODE"
fi

# --- Files kimchid may not read: root without CAP_DAC_READ_SEARCH -----------------------
# An image only its owner (not root) may read: refused as a template's cdrom with a
# 400 saying so, and listed in kimchi_isos as an image that cannot be identified.
mkdir -p "$WORK/isos-pool"
cp "$WORK/iso/x.iso" "$WORK/isos-pool/public.iso"
cp "$WORK/iso/x.iso" "$WORK/isos-pool/private.iso"
chown "$NOBODY:" "$WORK/isos-pool/private.iso"
chmod 0600 "$WORK/isos-pool/private.iso"
admin POST /templates "{\"name\": \"vmt-private\", \"cdrom\": \"$WORK/isos-pool/private.iso\"}"
if [[ $CODE == 400 && $BODY == *"permission denied"* ]]; then
  pass unreadable-iso-template "400: $(jq -r .reason <<<"$BODY")"
else
  fail unreadable-iso-template "HTTP $CODE (wanted 400 saying permission denied): $BODY"
fi
admin POST /storagepools "{\"name\": \"vmt-isos\", \"type\": \"dir\", \"path\": \"$WORK/isos-pool\"}"
admin POST /storagepools/vmt-isos/activate "{}"
admin GET /storagepools/kimchi_isos/storagevolumes
listed=$(jq -c '[.[] | select(.name | startswith("vmt-isos:")) | {name, bootable}] | sort_by(.name)' <<<"$BODY" 2>/dev/null)
if [[ $CODE == 200 && $listed == '[{"name":"vmt-isos:private.iso","bootable":false},{"name":"vmt-isos:public.iso","bootable":true}]' ]]; then
  pass unreadable-iso-listed "GET kimchi_isos 200: $listed"
else
  fail unreadable-iso-listed "HTTP $CODE: $listed $BODY"
fi
admin POST /storagepools/vmt-isos/deactivate "{}"
admin DELETE /storagepools/vmt-isos

if [[ -w /dev/kvm ]]; then VIRT_NOTE="the guest has /dev/kvm"; else VIRT_NOTE="no /dev/kvm in the guest: QEMU under TCG"; fi
virsh -q net-start default >/dev/null 2>&1
vm_flow flow

# --- Reload ----------------------------------------------------------------------
pid=$(prop kimchid MainPID)
if timeout 60 systemctl reload kimchid.service && active kimchid.service && [[ $(prop kimchid MainPID) == "$pid" ]]; then
  admin GET /vms
  status=$(prop kimchid StatusText)
  if [[ $CODE == 200 && $status == "libvirt: connected"* ]]; then
    pass reload "systemctl reload: same PID $pid, active, STATUS=$status, GET /vms 200"
  else
    fail reload "after reload GET /vms $CODE, STATUS=$status (libvirt is connected: STATUS should say so)"
  fi
else
  fail reload "kimchid.service $(systemctl is-active kimchid.service), PID $pid -> $(prop kimchid MainPID)"
fi

# --- Online exposure (systemd-analyze security on the running units) ------------------
exposure() {
  systemd-analyze security --no-pager "$1" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
score_check() {
  local unit=$1 max=$2 score
  score=$(exposure "$unit")
  if [[ -z $score ]]; then
    fail "exposure-$unit" "no score"
  elif awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
    pass "exposure-$unit" "$score (at most $max)"
  else
    fail "exposure-$unit" "$score (wanted at most $max)"
  fi
}
score_check kimchid.service 1.5
score_check kimchi-gateway.service 0.5
# An instance loaded for the analysis (each connection gets one).
score_check kimchi-url-check@vm-check.service 1.5

# --- Watchdog: pings reach systemd (a short WatchdogSec= so they are seen) -------------
mkdir -p /run/systemd/system/kimchid.service.d
printf '[Service]\nWatchdogSec=4s\n' >/run/systemd/system/kimchid.service.d/50-vm-check-watchdog.conf
systemctl daemon-reload
systemctl restart kimchid.service
first=$(prop kimchid WatchdogTimestampMonotonic)
restarts=$(prop kimchid NRestarts)
sleep 12
last=$(prop kimchid WatchdogTimestampMonotonic)
if active kimchid.service && [[ $(prop kimchid NRestarts) == "$restarts" && $last -gt 0 && $last -gt ${first:-0} ]]; then
  pass watchdog "WatchdogSec=4s: pings seen (last ping moved ${first} -> ${last} us), no restart"
else
  fail watchdog "kimchid $(systemctl is-active kimchid), NRestarts $restarts -> $(prop kimchid NRestarts), WatchdogTimestampMonotonic $first -> $last"
fi
rm -f /run/systemd/system/kimchid.service.d/50-vm-check-watchdog.conf
systemctl daemon-reload

# --- Journal: nothing at warning or worse from the kimchi units ----------------------
journal_units=()
for u in "${KIMCHI_UNITS[@]}"; do journal_units+=(-u "$u"); done
warnings=$(journalctl -b -q --no-pager -p warning "${journal_units[@]}" 2>&1)
if [[ -z $warnings ]]; then
  pass journal-no-warnings "no line at warning or worse from ${KIMCHI_UNITS[*]}"
else
  fail journal-no-warnings "$(printf '%s' "$warnings" | head -20)"
fi

# --- Seccomp: the filter swapped for SystemCallLog= of what it would refuse -------------
# The drop-in removes the shipped filter and logs exactly the calls it would have
# refused (the kernel's audit lines type=1326), while kimchid and the gateway do their
# work. It is made from the unit's own lines: its allow list is what is not logged
# (`~…`), a call the unit denies is logged (an entry without `~` takes it out of the
# not-logged set), and a call the unit allows back after that is not logged again.
syscall_log_dropin() {
  local unit=$1 line value first=true
  printf '[Service]\nSystemCallFilter=\n'
  while IFS= read -r line; do
    value=${line#SystemCallFilter=}
    if $first; then
      printf 'SystemCallLog=~%s\n' "$value"
      first=false
    elif [[ $value == "~"* ]]; then
      printf 'SystemCallLog=%s\n' "${value#\~}"
    else
      printf 'SystemCallLog=~%s\n' "$value"
    fi
  done < <(grep '^SystemCallFilter=' "/usr/lib/systemd/system/$unit.service")
}
for u in kimchid kimchi-gateway kimchi-url-check@; do
  mkdir -p "/run/systemd/system/$u.service.d"
  syscall_log_dropin "$u" >"/run/systemd/system/$u.service.d/50-vm-check-syscall-log.conf"
done
systemctl daemon-reload
seccomp_cursor=$(journalctl -n0 --show-cursor -q | sed -n 's/^-- cursor: //p')
systemctl stop kimchi-gateway.service kimchid.service
systemctl start kimchid.service
http GET /config
vm_flow seccomp
url_flow seccomp
timeout 60 systemctl reload kimchid.service
sleep 2
# Kernel audit records, through journald's audit or kernel transport.
refusals=$(journalctl -q --no-pager --after-cursor="$seccomp_cursor" | grep -E 'type=1326|SECCOMP')
if [[ -z $refusals ]]; then
  pass seccomp-log "no call outside the filter (kimchid start, gateway, flow, URL checks, reload)"
else
  # "syscall=N comm=..." per distinct call.
  summary=$(grep -o 'comm="[^"]*".*syscall=[0-9]*' <<<"$refusals" | sed -E 's/comm="([^"]*)".*syscall=([0-9]+)/\1:\2/' | sort | uniq -c | tr -s ' ' | tr '\n' ',')
  fail seccomp-log "calls the shipped filter refuses (comm:syscall-number): $summary"
fi
for u in kimchid kimchi-gateway kimchi-url-check@; do rm -f "/run/systemd/system/$u.service.d/50-vm-check-syscall-log.conf"; done
systemctl daemon-reload

# --- Killed mid-operation: systemd's Restart= brings kimchid back, which undoes it -------
# Last: the kill and the undoing are logged at warning on purpose. A raw volume with
# every byte allocated takes a while to wipe; kimchid is killed as soon as the wipe
# shows on disk (the image's first bytes zeroed), with the task still running.
crash_pool=vmt-crash
mkdir -p "$WORK/$crash_pool"
admin POST /storagepools "{\"name\": \"$crash_pool\", \"type\": \"dir\", \"path\": \"$WORK/$crash_pool\"}"
admin POST "/storagepools/$crash_pool/activate" "{}"
admin POST "/storagepools/$crash_pool/storagevolumes" '{"name": "big.img", "capacity": 256, "allocation": 256, "format": "raw"}'
printf 'not zero' | dd of="$WORK/$crash_pool/big.img" conv=notrunc status=none
restarts=$(prop kimchid NRestarts)
pid=$(prop kimchid MainPID)
http POST "/storagepools/$crash_pool/storagevolumes/big.img/wipe" "" -u "$ADMIN:$PASSWORD" -H 'Prefer: respond-async'
task=$(jq -r .id <<<"$BODY" 2>/dev/null)
if [[ $CODE == 202 ]] && wait_for 60 bash -c "[[ \$(head -c 8 '$WORK/$crash_pool/big.img') != 'not zero' ]]"; then
  admin GET "/tasks/$task"
  before=$(jq -r .status <<<"$BODY")
  systemctl kill --signal=KILL kimchid.service
  wait_for 60 bash -c "[[ \$(systemctl show -P NRestarts kimchid) -gt $restarts ]] && systemctl is-active -q kimchid"
  # The first wipe goes on in libvirtd and the second waits for it: minutes under TCG.
  wait_for 300 bash -c "curl -sk -u '$ADMIN:$PASSWORD' https://localhost:8001/tasks/$task | jq -e '.status != \"running\"'"
  admin GET "/tasks/$task"
  status=$(jq -r .status <<<"$BODY")
  message=$(jq -r .message <<<"$BODY")
  size=$(stat -c %s "$WORK/$crash_pool/big.img")
  nonzero=$(tr -d '\0' <"$WORK/$crash_pool/big.img" | head -c 1 | wc -c)
  if [[ $before == running && $status == failed && $message == "kimchid stopped before this task ended; wiped the volume 'big.img' again from the start" && $size == 268435456 && $nonzero == 0 ]]; then
    pass kill-mid-wipe "task $task running at SIGKILL; PID $pid -> $(prop kimchid MainPID) (NRestarts $restarts -> $(prop kimchid NRestarts)); task failed: $message; volume 256 MiB of zeros"
  else
    fail kill-mid-wipe "task $task: $before at the kill, then $status: $message; NRestarts $restarts -> $(prop kimchid NRestarts); size $size, non-zero bytes left: $nonzero"
  fi
else
  fail kill-mid-wipe "wipe HTTP $CODE: $BODY (or it never showed on disk)"
fi
admin DELETE "/storagepools/$crash_pool/storagevolumes/big.img"
admin POST "/storagepools/$crash_pool/deactivate" "{}"
admin DELETE "/storagepools/$crash_pool"
