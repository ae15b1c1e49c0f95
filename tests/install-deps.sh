#!/usr/bin/env bash
# Installs every Debian package the Kimchi stack and its tests need (Debian 12).
# The virtualization packages come from bookworm-backports (libvirt 11, QEMU 10),
# which this script adds as an apt source when it is missing. Idempotent: nothing is
# downloaded when everything is already installed. Run as root.
set -euo pipefail

say() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run me as root"

# From bookworm-backports (they must come from the same suite: the image's qemu-utils
# is a backport and conflicts with bookworm's qemu-system-x86).
# (Comments inside the arrays are fine: bash ignores them.)
BACKPORTS_PKGS=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-storage
  libvirt-daemon-driver-network libvirt-clients libvirt-dev qemu-system-x86 qemu-utils
  ovmf seabios ipxe-qemu dnsmasq-base
  # Not in ENVIRONMENT.md's list: ships /usr/share/libvirt/networks/default.xml,
  # the definition of libvirt's network 'default' that stack-up.sh defines.
  libvirt-daemon-config-network
  # libvirt's LVM backend, for 'logical' storage pools (tested on a loop device).
  libvirt-daemon-driver-storage-logical
)
# From bookworm: the system bus, polkit, build dependencies, and the tools the
# scripts and the tests call (curl, openssl, capsh/getpcaps, ip, setpriv, useradd,
# chpasswd, busctl, systemd-analyze, systemd-socket-activate, strace, make, a C
# toolchain for cargo's linker; mmdebstrap and mkfs.ext4 build the guest image of the
# systemd check, tests/systemd-vm.sh, which boots it with qemu-system-x86 from above).
MAIN_PKGS=(
  dbus dbus-daemon polkitd pkexec pkg-config libpam0g-dev libsqlite3-dev osinfo-db xorriso
  curl openssl libcap2-bin iproute2 util-linux passwd systemd make gcc libc6-dev lvm2 strace
  mmdebstrap e2fsprogs
)

is_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

missing() {
  local p
  for p in "$@"; do
    is_installed "$p" || printf '%s\n' "$p"
  done
}

mapfile -t missing_backports < <(missing "${BACKPORTS_PKGS[@]}")
mapfile -t missing_main < <(missing "${MAIN_PKGS[@]}")

if ((${#missing_backports[@]} == 0 && ${#missing_main[@]} == 0)); then
  say "all $((${#BACKPORTS_PKGS[@]} + ${#MAIN_PKGS[@]})) packages are installed; nothing to do"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
need_update=0

has_backports_source() {
  grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/
}

if ((${#missing_backports[@]} > 0)) && ! has_backports_source; then
  # The backports suite of the same Debian mirror the machine already uses.
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    say "adding bookworm-backports as /etc/apt/sources.list.d/backports.sources"
    stanza=$(awk 'BEGIN{RS=""} /Suites: bookworm( |$)/{print; exit}' \
      /etc/apt/sources.list.d/debian.sources)
    [[ -n $stanza ]] || die "no 'Suites: bookworm' stanza in /etc/apt/sources.list.d/debian.sources"
    # shellcheck disable=SC2001 # a multi-line stanza: sed's ^ anchors each line
    sed -e 's/^Suites:.*/Suites: bookworm-backports/' <<<"$stanza" \
      >/etc/apt/sources.list.d/backports.sources
  elif [[ -f /etc/apt/sources.list ]]; then
    say "adding bookworm-backports as /etc/apt/sources.list.d/backports.list"
    line=$(grep -m1 -E '^deb +(\[[^]]*\] +)?[^ ]+ +bookworm +' /etc/apt/sources.list) ||
      die "no 'deb … bookworm …' line in /etc/apt/sources.list"
    sed -E 's/ bookworm / bookworm-backports /' <<<"$line" \
      >/etc/apt/sources.list.d/backports.list
  else
    die "cannot find the machine's Debian apt sources to derive bookworm-backports from"
  fi
  need_update=1
fi

# Update once per run, and also when the lists are empty (a fresh image).
if ((need_update)) || ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
  say "apt-get update"
  apt-get update
  updated=1
else
  updated=0
fi

apt_install() {
  # Retries once after an update: a stale package list gives 404s.
  if ! apt-get install -y --no-install-recommends "$@"; then
    if ((updated == 0)); then
      say "apt-get install failed; updating the package lists and trying again"
      apt-get update
      updated=1
      apt-get install -y --no-install-recommends "$@"
    else
      return 1
    fi
  fi
}

if ((${#missing_backports[@]} > 0)); then
  # The whole set is named so that apt takes every package from backports together.
  say "installing from bookworm-backports: ${missing_backports[*]}"
  apt_install -t bookworm-backports "${BACKPORTS_PKGS[@]}"
fi
if ((${#missing_main[@]} > 0)); then
  say "installing: ${missing_main[*]}"
  apt_install "${missing_main[@]}"
fi

mapfile -t still_missing < <(missing "${BACKPORTS_PKGS[@]}" "${MAIN_PKGS[@]}")
((${#still_missing[@]} == 0)) || die "still not installed: ${still_missing[*]}"
say "done"
