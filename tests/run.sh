#!/usr/bin/env bash
# Every check of the project, as CI runs it (.ci/run): brings the stack up with the
# debug profile (so cargo test reuses the binaries it builds), then rustfmt, clippy
# and the whole test suite; the end-to-end tests in tests/ drive the running stack
# as root; then the systemd check (tests/systemd-vm.sh: the same binaries installed
# into a bookworm guest booted with systemd as PID 1; it leaves the stack alone);
# last a short fuzz of the stack (tests/fuzz.sh). Exits non-zero on the first failure.
#
#   sudo tests/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/stack-lib.sh
source "$ROOT/tests/stack-lib.sh"
require_root
cd "$ROOT"

export KIMCHI_PROFILE=debug
"$ROOT/tests/stack-up.sh"

find_cargo

step "cargo fmt --all -- --check"
cargo fmt --all -- --check || die "rustfmt: the code is not formatted (run cargo fmt --all)"

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || die "clippy found problems"

step "bookworm's own systemd-analyze (252), for the units' exposure test (cached)"
[ -x "${KIMCHI_SYSTEMD_252:-$ROOT/target/systemd-252}/usr/bin/systemd-analyze" ] ||
  "$ROOT/tests/fetch-systemd-252.sh" || die "cannot unpack systemd 252 (tests/fetch-systemd-252.sh)"

step "cargo test --workspace -- --test-threads=4"
cargo test --workspace -- --test-threads=4 || die "tests failed (logs: $KIMCHI_LOG_DIR/)"

step "cargo test: tests that restart or kill shared services, one at a time"
cargo test -p kimchi-tests --test libvirt_restart --test crash_safety -- --ignored --test-threads=1 ||
  die "tests failed (logs: $KIMCHI_LOG_DIR/)"

step "tests/systemd-vm.sh: the units under a booted systemd (bookworm guest, image cached)"
PROFILE=debug "$ROOT/tests/systemd-vm.sh" || die "the systemd check failed (console: \
${KIMCHI_VM_CACHE:-/var/cache/kimchi-tests/systemd-vm}/last-console.log)"

step "tests/fuzz.sh: schema-driven fuzzing of the running stack"
"$ROOT/tests/fuzz.sh" || die "fuzzing failed"

step "all checks passed"
