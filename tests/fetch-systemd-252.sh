#!/bin/sh
# Unpacks Debian bookworm's own systemd-analyze (systemd 252, with its
# libsystemd-shared) under target/systemd-252 (or $KIMCHI_SYSTEMD_252), without
# installing it, for tests/tests/systemd_units.rs to score the units with it too.
set -eu
version=${1:-$(apt-cache madison systemd | awk '$3 ~ /^252\./ {print $3; exit}')}
[ -n "$version" ] || { echo "no systemd 252 in the apt sources" >&2; exit 1; }
dest=${KIMCHI_SYSTEMD_252:-$(cd "$(dirname "$0")/.." && pwd)/target/systemd-252}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "systemd=$version" "libsystemd-shared=$version")
rm -rf "$dest"
mkdir -p "$dest"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest"; done
LD_LIBRARY_PATH="$dest/usr/lib/x86_64-linux-gnu/systemd" "$dest/usr/bin/systemd-analyze" --version | head -1
