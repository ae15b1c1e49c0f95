#!/usr/bin/env bash
# Builds the Linux guest the end-to-end tests boot with libvirt: Debian bookworm's
# cloud kernel and a busybox initramfs that answers the ACPI power button, runs udhcpc
# on every virtio NIC (hot-plugged ones too) and prints markers on its serial console:
#   kimchi-test-guest: ready          once per boot, when acpid and DHCP are running
#   kimchi-test-guest: powering off   when the power button was pressed
# Only Debian packages are downloaded (apt-get download; nothing is installed on the
# host). Writes vmlinuz and initrd.img to $OUT. Cached: a stamp records what the files
# were built from (package versions and this script's hash), so a second run with the
# same inputs does nothing. Concurrent runs wait for each other. Run as root.
set -euo pipefail

OUT=/var/lib/libvirt/boot/kimchi-test-guest
STAMP=$OUT/stamp
LOCK=/run/lock/kimchi-test-guest-build.lock
# virtio_pci finds the devices; virtio_net/virtio_blk drive NICs and disks (hot-plugged
# too: ACPI PCI hotplug is built in); virtio_balloon answers libvirt's memballoon;
# button and evdev turn the ACPI power button into an input event for acpid.
MODULES=(virtio_pci virtio_net virtio_blk virtio_balloon button evdev)

say() { printf '[guest-build] %s\n' "$*"; }
die() { printf '[guest-build] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run me as root"

mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9

updated=0
apt_update() {
  ((updated == 0)) || return 1
  say "apt-get update"
  apt-get update >/dev/null
  updated=1
}

# The newest version of package $1 that does not come from backports (apt-cache
# madison lists versions newest first).
newest_version() {
  apt-cache madison "$1" 2>/dev/null |
    awk -F'|' '$3 ~ /Packages/ && $3 !~ /backports/ { gsub(/ /, "", $2); print $2; exit }'
}

resolve() {
  meta_version=$(newest_version linux-image-cloud-amd64)
  busybox_version=$(newest_version busybox-static)
  [[ -n $meta_version && -n $busybox_version ]] || return 1
  # The metapackage depends on exactly one versioned image package.
  kernel_pkg=$(apt-cache show "linux-image-cloud-amd64=$meta_version" |
    sed -n 's/^Depends: *\(linux-image-[^ ,]*-cloud-amd64\) *(= *\([^)]*\)).*/\1=\2/p' | head -n1)
  [[ -n $kernel_pkg ]]
}

if ! resolve; then
  apt_update || true
  resolve || die "apt knows no bookworm linux-image-cloud-amd64 or busybox-static"
fi
script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
want="$kernel_pkg busybox-static=$busybox_version build.sh=$script_hash"

if [[ -f $STAMP && $(<"$STAMP") == "$want" && -f $OUT/vmlinuz && -f $OUT/initrd.img ]]; then
  say "up to date ($kernel_pkg): $OUT/vmlinuz $OUT/initrd.img"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/debs"
# apt downloads as _apt: let it reach and write the directory (else it warns).
chmod 0755 "$work"
if id _apt >/dev/null 2>&1; then chown _apt "$work/debs"; fi

download() {
  (cd "$work/debs" && apt-get download -q "$kernel_pkg" "busybox-static=$busybox_version")
}
say "downloading $kernel_pkg busybox-static=$busybox_version"
if ! download; then
  # A stale package list names files the mirror no longer has.
  apt_update || die "apt-get download failed"
  resolve || die "after apt-get update, apt knows no linux-image-cloud-amd64"
  download || die "apt-get download failed"
fi

x=$work/x
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$x"; done
kernel_version=$(basename "$(ls -d "$x"/lib/modules/*)")
bb=$x/bin/busybox
[[ -f $x/boot/vmlinuz-$kernel_version && -x $bb ]] || die "unexpected package contents"

# The modules the guest loads and what they depend on, from a modules.dep made by
# busybox's depmod (the package carries none: the host's depmod makes it on install).
"$bb" depmod -b "$x" "$kernel_version"
moddir=lib/modules/$kernel_version
needed=$(
  for m in "${MODULES[@]}"; do
    line=$(grep -E "(^|/)$m\.ko:" "$x/$moddir/modules.dep") || die "no module $m in $kernel_version"
    tr -d ':' <<<"$line" | tr ' ' '\n'
  done | sort -u
)

r=$work/root
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc/acpi/PWRF,"$moddir"}
cp "$bb" "$r/bin/busybox"
for applet in $("$bb" --list-full); do
  [[ -e $r/$applet || -L $r/$applet ]] || ln -s /bin/busybox "$r/$applet"
done
# The kernel opens /dev/console for init before anything mounts devtmpfs.
mknod -m 600 "$r/dev/console" c 5 1
ln -s /bin/busybox "$r/init"
for f in $needed; do
  install -D -m 0644 "$x/$moddir/$f" "$r/$moddir/$f"
done
"$bb" depmod -b "$r" "$kernel_version"
printf '%s\n' "${MODULES[@]}" >"$r/etc/modules"

# busybox init runs /etc/rc once and then only reaps orphans (udhcpc, acpid's helpers).
cat >"$r/etc/inittab" <<'EOF'
::sysinit:/etc/rc
EOF

cat >"$r/etc/rc" <<'EOF'
#!/bin/sh
# Boot: mounts, drivers, acpid, the DHCP loop, then the ready marker.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# shellcheck disable=SC2046 # one module name a word
modprobe -a $(cat /etc/modules)
# acpid opens /dev/input/event* once, at start: the button's device must exist first.
n=0
until [ -e /dev/input/event0 ] || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
acpid -d -c /etc/acpi &
acpid=$!
# A power button pressed before acpid listens would be lost: "ready" waits for it.
listening() {
  for fd in "/proc/$acpid/fd/"*; do
    case $(readlink "$fd") in /dev/input/event*) return 0 ;; esac
  done
  return 1
}
until listening; do
  if ! kill -0 $acpid 2>/dev/null; then
    echo "kimchi-test-guest: ERROR: acpid is not running, not ready"
    exit 1
  fi
  sleep 0.1
done
/etc/dhcp-loop &
echo "kimchi-test-guest: ready"
EOF

# busybox acpid maps the power button (KEY_POWER) to the action PWRF/00000080.
cat >"$r/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# The ACPI power button (virsh shutdown, virsh reboot): power off now. -f: straight to
# the kernel, which powers the machine off through ACPI (init is not involved).
echo "kimchi-test-guest: powering off" >/dev/console
sync
poweroff -f
EOF

cat >"$r/etc/dhcp-loop" <<'EOF'
#!/bin/sh
# No udev here: look every second for ethN without a udhcpc (a NIC hot-plugged later,
# or one whose udhcpc died) and start one. Keyed by ifindex, so a NIC unplugged and
# another plugged under the same name gets a fresh udhcpc.
while :; do
  for dev in /sys/class/net/eth*; do
    ifindex=$(cat "$dev/ifindex" 2>/dev/null) || continue
    name=${dev##*/}
    pidfile=/run/udhcpc.$name.$ifindex
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then continue; fi
    echo "kimchi-test-guest: DHCP on $name"
    ip link set "$name" up
    udhcpc -f -i "$name" -s /etc/udhcpc.sh -t 3 -T 2 -A 2 >/dev/null 2>&1 &
    echo $! >"$pidfile"
  done
  sleep 1
done
EOF

cat >"$r/etc/udhcpc.sh" <<'EOF'
#!/bin/sh
# udhcpc's hook: configure the leased address (renewals need it) and say so.
case $1 in
deconfig)
  ip -4 addr flush dev "$interface"
  ip link set "$interface" up
  ;;
bound | renew)
  ip -4 addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface"
  for gw in $router; do ip route add default via "$gw" dev "$interface" 2>/dev/null; break; done
  echo "kimchi-test-guest: $interface has $ip" >/dev/console
  ;;
esac
exit 0
EOF
chmod 0755 "$r/etc/rc" "$r/etc/acpi/PWRF/00000080" "$r/etc/dhcp-loop" "$r/etc/udhcpc.sh"

mkdir -p "$OUT"
chmod 0755 "$OUT"
(cd "$r" && find . -mindepth 1 | LC_ALL=C sort | "$bb" cpio -o -H newc -R 0:0 2>/dev/null) |
  gzip -9 >"$OUT/initrd.img.new"
install -m 0644 "$x/boot/vmlinuz-$kernel_version" "$OUT/vmlinuz.new"
chmod 0644 "$OUT/initrd.img.new"
# Renamed into place: a guest starting meanwhile reads either the old or the new files.
mv -f "$OUT/vmlinuz.new" "$OUT/vmlinuz"
mv -f "$OUT/initrd.img.new" "$OUT/initrd.img"
printf '%s\n' "$want" >"$STAMP"
say "built the guest of kernel $kernel_version ($kernel_pkg): $OUT/vmlinuz $OUT/initrd.img"
