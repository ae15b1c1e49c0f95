#!/usr/bin/env bash
# The systemd check: boots a Debian bookworm guest (systemd 252 as PID 1) with the
# project installed as a package would install it, and runs tests/systemd-vm/check.sh
# there at boot (units verify, sysusers/tmpfiles, start, D-Bus and socket activation,
# HTTPS logins, template ISO URLs checked by kimchi-url-check@.service while kimchid
# has no IP, an image kimchid may not read, a pool + volume + template + VM flow,
# reload, watchdog, online exposure, journal, seccomp). Exits non-zero when any check
# fails.
#
#   sudo tests/systemd-vm.sh
#
# Needs: root, mmdebstrap, qemu-system-x86_64, make, e2fsprogs, and the binaries built
# (`make build`; PROFILE=release|debug picks which, default: release when built, else
# debug). The base image (Debian packages only, ~1 GiB) is built with mmdebstrap
# once and cached in /var/cache/kimchi-tests/systemd-vm/ (KIMCHI_VM_CACHE); it is
# rebuilt when the package list changes. Each run unpacks it, installs the project,
# boots it with KVM when /dev/kvm works (else TCG) for at most KIMCHI_VM_TIMEOUT
# seconds (KIMCHI_VM_ACCEL=tcg skips KVM), and reads the results back from a second raw disk the guest writes.
# shellcheck disable=SC2016 # mmdebstrap runs the hooks with the root as $1
set -euo pipefail

say() { printf '[systemd-vm] %s\n' "$*"; }
die() { printf '[systemd-vm] ERROR: %s\n' "$*" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || die "run me as root (sudo $0)"

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KIMCHI_VM_CACHE:-/var/cache/kimchi-tests/systemd-vm}
MIRROR=${KIMCHI_VM_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${KIMCHI_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

for tool in mmdebstrap qemu-system-x86_64 make mkfs.ext4 systemd-sysusers systemd-tmpfiles; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install mmdebstrap qemu-system-x86 make e2fsprogs systemd)"
done

if [[ -z ${PROFILE:-} ]]; then
  if [[ -x $TARGET/release/kimchid && -x $TARGET/release/kimchi-gateway ]]; then
    PROFILE=release
  else
    PROFILE=debug
  fi
fi
[[ -x $TARGET/$PROFILE/kimchid && -x $TARGET/$PROFILE/kimchi-gateway ]] ||
  die "no $PROFILE binaries in $TARGET/$PROFILE: run 'make build PROFILE=$PROFILE' first"

# The guest's packages. Virtualization comes from bookworm-backports, like the host's
# (tests/install-deps.sh): kimchid is linked against that libvirt. A pin makes apt
# take every libvirt*, qemu* and seabios package from there, dependencies included.
MAIN_PKGS=(
  systemd systemd-sysv udev dbus polkitd libpam-modules libpam-runtime
  linux-image-amd64 initramfs-tools kmod procps iproute2 passwd
  curl ca-certificates jq xorriso osinfo-db libsqlite3-0 nftables ipxe-qemu dnsmasq-base
  # Its httpd serves the ISO image of the template URL checks.
  busybox
)
BACKPORTS_PKGS=(
  libvirt-daemon-system libvirt-daemon libvirt-daemon-driver-qemu
  libvirt-daemon-driver-storage libvirt-daemon-driver-network
  libvirt-daemon-config-network libvirt-clients libvirt0
  qemu-system-x86 qemu-utils seabios
)

build_base() {
  local out=$1 include
  include=$(printf '%s,' "${MAIN_PKGS[@]}" "${BACKPORTS_PKGS[@]}")
  mmdebstrap --variant=minbase --format=tar --components=main \
    --aptopt='APT::Install-Recommends "false"' \
    --include="${include%,}" \
    --setup-hook='mkdir -p "$1/etc/apt/preferences.d"' \
    --setup-hook='printf "Package: /^(libvirt|qemu|seabios)/\nPin: release n=bookworm-backports\nPin-Priority: 990\n" >"$1/etc/apt/preferences.d/kimchi-backports"' \
    --customize-hook='echo kimchi-vm >"$1/etc/hostname"' \
    --customize-hook='printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\n" >"$1/etc/fstab"' \
    --customize-hook='rm -f "$1"/etc/machine-id; touch "$1"/etc/machine-id' \
    bookworm "$out" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $MIRROR bookworm-backports main" \
    "deb $SECURITY_MIRROR bookworm-security main"
}

# The cache key covers everything that decides the image's content.
key=$(declare -f build_base | cat - <(printf '%s\n' "${MAIN_PKGS[@]}" "${BACKPORTS_PKGS[@]}" "$MIRROR") |
  sha256sum | cut -c1-16)
BASE=$CACHE/base-$key.tar
mkdir -p "$CACHE"
if [[ ! -s $BASE ]]; then
  say "building the base image with mmdebstrap (first run on this machine; takes minutes)"
  started=$SECONDS
  rm -rf "$BASE.tmp"
  build_base "$BASE.tmp" || { rm -rf "$BASE.tmp"; die "mmdebstrap failed"; }
  mv "$BASE.tmp" "$BASE"
  find "$CACHE" -maxdepth 1 -name 'base-*.tar' ! -name "base-$key.tar" -delete
  say "base image built in $((SECONDS - started)) s: $BASE"
else
  say "cached base image: $BASE"
fi

# --- This run's disk: the base, the project as a package installs it, the check ---------
WORK=$(mktemp -d /var/tmp/kimchi-systemd-vm.XXXXXX)
QEMU_PID=
cleanup() {
  if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -TERM "$QEMU_PID" 2>/dev/null
    sleep 2
    kill -KILL "$QEMU_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ROOT=$WORK/root
mkdir "$ROOT"
say "unpacking the base image"
tar --numeric-owner -xpf "$BASE" -C "$ROOT"

say "make install DESTDIR=… PROFILE=$PROFILE ($TARGET/$PROFILE)"
make -s -C "$REPO" install DESTDIR="$ROOT" PROFILE="$PROFILE" TARGETDIR="$TARGET/$PROFILE" >/dev/null
# What the package's postinst does: users, directories, enabled units.
systemd-sysusers --root="$ROOT" kimchi.conf
systemd-tmpfiles --root="$ROOT" --create kimchi.conf
systemctl --root="$ROOT" enable kimchid.service kimchi-gateway.socket 2>/dev/null

install -D -m 0755 "$REPO/tests/systemd-vm/check.sh" "$ROOT/usr/local/lib/kimchi-vm-check/check.sh"
install -D -m 0644 "$REPO/tests/systemd-vm/kimchi-vm-check.service" \
  "$ROOT/etc/systemd/system/kimchi-vm-check.service"
systemctl --root="$ROOT" enable kimchi-vm-check.service 2>/dev/null

kernel=$(find "$ROOT/boot" -name 'vmlinuz-*' | sort -V | tail -1)
initrd=$(find "$ROOT/boot" -name 'initrd.img-*' | sort -V | tail -1)
[[ -n $kernel && -n $initrd ]] || die "no kernel or initrd in the image's /boot"
cp "$kernel" "$WORK/vmlinuz"
cp "$initrd" "$WORK/initrd.img"

say "writing the root disk"
truncate -s 8G "$WORK/root.img"
mkfs.ext4 -q -F -L kimchi-root -d "$ROOT" "$WORK/root.img"
rm -rf "$ROOT"
truncate -s 1M "$WORK/results.img"

# --- Boot ----------------------------------------------------------------------------
CONSOLE=$CACHE/last-console.log
timed_out=0
# boot TIMEOUT QEMU-ARGS...: runs the guest until it powers off or TIMEOUT seconds pass.
# A guest whose console stays empty for 60 s is stopped (nested KVM can hang before the
# kernel's first line): false then.
boot() {
  local timeout=$1 deadline silent_deadline=$((SECONDS + 60))
  shift
  : >"$CONSOLE"
  qemu-system-x86_64 "$@" -machine q35 -smp 2 -m 3072 \
    -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1" \
    -drive file="$WORK/root.img",format=raw,if=virtio,cache=unsafe \
    -drive file="$WORK/results.img",format=raw,if=virtio \
    -nic none -display none -monitor none -serial file:"$CONSOLE" -no-reboot &
  QEMU_PID=$!
  deadline=$((SECONDS + timeout))
  while kill -0 "$QEMU_PID" 2>/dev/null && ((SECONDS < deadline)); do
    if [[ ! -s $CONSOLE ]] && ((SECONDS > silent_deadline)); then
      say "no console output for 60 s: stopping the guest"
      kill -KILL "$QEMU_PID" 2>/dev/null || true
      wait "$QEMU_PID" 2>/dev/null || true
      QEMU_PID=
      return 1
    fi
    sleep 2
  done
  if kill -0 "$QEMU_PID" 2>/dev/null; then
    say "the guest is still running after $timeout s: stopping it"
    kill -TERM "$QEMU_PID" 2>/dev/null || true
    timed_out=1
  fi
  wait "$QEMU_PID" 2>/dev/null || true
  QEMU_PID=
}

say "booting the guest (2 vCPUs, 3 GiB); console: $CONSOLE"
started=$SECONDS
booted=0
if [[ ${KIMCHI_VM_ACCEL:-} != tcg && -r /dev/kvm && -w /dev/kvm ]]; then
  say "with KVM, at most ${KIMCHI_VM_TIMEOUT:-600} s"
  # arch-capabilities off: nested KVM hosts often refuse to set that MSR.
  # QEMU that stops at once or a kernel that never prints: TCG instead.
  if boot "${KIMCHI_VM_TIMEOUT:-600}" -accel kvm -cpu host,-arch-capabilities && [[ -s $CONSOLE ]]; then
    booted=1
  fi
fi
if ((!booted)); then
  say "with TCG (no usable KVM), at most ${KIMCHI_VM_TIMEOUT:-1200} s"
  boot "${KIMCHI_VM_TIMEOUT:-1200}" -accel tcg -cpu max
fi
say "guest ran $((SECONDS - started)) s"

results=$(tr -d '\0' <"$WORK/results.img")
# System call numbers the guest reports as "comm:NUMBER", named from the host's headers.
unistd=/usr/include/x86_64-linux-gnu/asm/unistd_64.h
if [[ -r $unistd ]]; then
  while read -r nr; do
    name=$(awk -v n="$nr" '$1 == "#define" && $3 == n { sub("__NR_", "", $2); print $2; exit }' "$unistd")
    [[ -n $name ]] && results=$(sed -E "/seccomp-log/ s/:$nr(,|$)/:$nr($name)\1/g" <<<"$results")
  done < <(grep -o 'seccomp-log.*' <<<"$results" | grep -oE ':[0-9]+(,|$)' | tr -dc '0-9\n' | sort -u)
fi
printf '%s\n' "$results" | grep '^KIMCHI-CHECK' | sed 's/^KIMCHI-CHECK //' || true
passed=$(grep -c '^KIMCHI-CHECK PASS' <<<"$results" || true)
failed=$(grep -c '^KIMCHI-CHECK FAIL' <<<"$results" || true)
if ((timed_out)) || ! grep -q '^KIMCHI-CHECK END' <<<"$results"; then
  say "FAILED: the check did not finish (timeout: $timed_out); last console lines:"
  tail -40 "$CONSOLE" >&2
  exit 1
fi
say "$passed passed, $failed failed"
((failed == 0 && passed > 0))
