#!/usr/bin/env bash
# Schema-driven fuzzing of the running stack with schemathesis: the requests are
# generated from the gateway's own GET /openapi.json, valid and invalid, on every
# operation. Checks: no 5xx, every status, Content-Type, header and body as the
# document says; then both daemons still run and nothing the run created is left.
#
#   sudo tests/fuzz.sh              a short run (KIMCHI_FUZZ_CASES, default 3000 cases)
#   sudo tests/fuzz.sh --long       a long run (at least 10,000 cases)
#
# Environment:
#   KIMCHI_FUZZ_CASES    cases to generate in all (spread over the operations)
#   KIMCHI_FUZZ_SCHEMA   a document to use instead of the gateway's (a file)
#   KIMCHI_FUZZ_WORKERS  concurrent requests (default 1; more find races, but
#                        schemathesis 4.32 then sometimes fails in Python itself)
#   KIMCHI_FUZZ_SEED     schemathesis' seed, to replay a run
#
# Needs the stack up (tests/stack-up.sh) and reaches PyPI once: schemathesis is
# installed into a cached venv. The fuzzer logs in as a user of its own
# (kimchi-t-fuzz, group kimchi-admin), one session for the run; tests/fuzz/hooks.py keeps it
# off every object that existed before the run, and off the host's disks and NICs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/stack-lib.sh
source "$ROOT/tests/stack-lib.sh"
require_root

VENV=/var/cache/kimchi-tests/venv
SCHEMATHESIS_VERSION="4.32.*"
URL="https://localhost:$KIMCHI_PORT"
FUZZ_USER=kimchi-t-fuzz
SCRATCH=/var/lib/kimchi-tests/fuzz

case ${1:-} in
  --long) cases=${KIMCHI_FUZZ_CASES:-10000} minimum=10000 ;;
  "") cases=${KIMCHI_FUZZ_CASES:-3000} minimum=1 ;;
  *) die "usage: $0 [--long]" ;;
esac
[[ $cases =~ ^[0-9]+$ ]] || die "KIMCHI_FUZZ_CASES must be a number"
((cases >= minimum)) || die "at least $minimum cases (KIMCHI_FUZZ_CASES=$cases)"

step "fuzz: schemathesis in $VENV"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "version ${SCHEMATHESIS_VERSION%.\*}"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
say "$("$VENV/bin/st" --version)"

work=$(mktemp -d /tmp/kimchi-fuzz.XXXXXX)
before=$work/before.json
cleanup_needed=false
finish() {
  local status=$?
  if $cleanup_needed; then
    step "fuzz: removing what the run created"
    "$VENV/bin/python" "$ROOT/tests/fuzz/inventory.py" cleanup "$before" || status=1
    rm -rf "$SCRATCH"
  fi
  userdel -r "$FUZZ_USER" >/dev/null 2>&1 || true
  ((status == 0)) || say "fuzz: files of this run kept in $work"
  ((status == 0)) && rm -rf "$work"
  exit "$status"
}
trap finish EXIT

step "fuzz: user $FUZZ_USER (kimchi-admin)"
getent group kimchi-admin >/dev/null || groupadd --system kimchi-admin
id "$FUZZ_USER" >/dev/null 2>&1 || useradd -M -G kimchi-admin "$FUZZ_USER"
usermod -a -G kimchi-admin "$FUZZ_USER"
password="Fuzz-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
printf '%s:%s\n' "$FUZZ_USER" "$password" | chpasswd
export KIMCHI_USER=$FUZZ_USER KIMCHI_PASSWORD=$password KIMCHI_URL=$URL
# One session for the whole run: with HTTP Basic every request would be a login
# attempt, which the gateway throttles per client address.
export KIMCHI_SESSION=$work/session.json
"$VENV/bin/python" "$ROOT/tests/fuzz/inventory.py" login "$KIMCHI_SESSION"
read -r cookie csrf < <("$VENV/bin/python" -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(s["cookie"], s["csrf_token"])
' "$KIMCHI_SESSION")

# The bus name's owner: the crash tests leave a kimchid started by D-Bus activation.
kimchid_pid=$(owner_pid "$KIMCHI_BUS_NAME") || die "kimchid is not running"
gateway_pid=$(pid_from_file "$KIMCHI_RUN_DIR/gateway.pid" kimchi-gateway) ||
  die "kimchi-gateway is not running"

step "fuzz: the document"
schema=$work/openapi.json
# POST /login is left out: each wrong password costs PAM's failure delay (2 s), and
# failed logins are throttled per client, which would turn the rest into 429s; and
# POST /logout, which would end the run's session.
excluded=(--exclude-path /login --exclude-path /logout)
if [[ -n ${KIMCHI_FUZZ_SCHEMA:-} ]]; then
  cp "$KIMCHI_FUZZ_SCHEMA" "$schema"
  # A gateway older than the document need not serve it.
  excluded+=(--exclude-path /openapi.json)
else
  curl -sSfk "$URL/openapi.json" -o "$schema" || die "GET /openapi.json failed"
fi
# Operations with inputs (path parameters or a body): the others have too few
# distinct cases to take their share.
operations=$("$VENV/bin/python" -c '
import json, sys
paths = json.load(open(sys.argv[1]))["paths"]
print(sum(1 for path, item in paths.items() for method, op in item.items()
          if method in ("get", "head", "post", "put", "delete")
          and ("{" in path or "requestBody" in op)))
' "$schema")
# The fuzzing phase's share; the coverage phase adds its own cases (boundaries and
# wrong types of every field), so the run has more than this in all.
per_operation=$(((cases + operations - 1) / operations))
say "$operations operations with inputs; $per_operation generated cases each, at least $cases in all"

step "fuzz: what exists before, and the fuzzer's own fixtures"
mkdir -p "$SCRATCH"
"$VENV/bin/python" "$ROOT/tests/fuzz/inventory.py" snapshot "$before"
cleanup_needed=true
"$VENV/bin/python" "$ROOT/tests/fuzz/inventory.py" fixtures "$before" "$work/fixtures.json" "$SCRATCH"
say "spared: $("$VENV/bin/python" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["names"]))' "$before") objects; fixtures: $(cat "$work/fixtures.json")"

step "fuzz: schemathesis, $cases cases"
seed=()
[[ -n ${KIMCHI_FUZZ_SEED:-} ]] && seed=(--seed "$KIMCHI_FUZZ_SEED")
started=$SECONDS
fuzz_status=0
(
  cd "$work"
  PYTHONPATH="$ROOT/tests/fuzz" SCHEMATHESIS_HOOKS=hooks \
    KIMCHI_FUZZ_INVENTORY="$before" KIMCHI_FUZZ_FIXTURES="$work/fixtures.json" \
    KIMCHI_FUZZ_SCRATCH="$SCRATCH" \
    "$VENV/bin/st" run "$schema" --url "$URL" --tls-verify false \
    -H "Cookie: kimchi_session=$cookie" -H "X-CSRF-Token: $csrf" \
    --generation-with-security-parameters false \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing --max-examples "$per_operation" \
    "${excluded[@]}" --workers "${KIMCHI_FUZZ_WORKERS:-1}" \
    --request-timeout 120 --generation-database none --no-color \
    --report junit,ndjson --report-dir "$work/report" "${seed[@]}"
) 2>&1 | tee "$work/schemathesis.log" || fuzz_status=$?
generated=$(grep -oE '[0-9]+ generated' "$work/schemathesis.log" | tail -1 | cut -d' ' -f1)
say "schemathesis ran ${generated:-?} cases in $((SECONDS - started)) s (exit $fuzz_status)"
# How deep it got: mostly 401 or 429 would mean the credentials did not hold.
say "statuses: $("$VENV/bin/python" -c '
import collections, glob, json, sys
seen = collections.Counter()
for path in glob.glob(sys.argv[1] + "/*.ndjson"):
    for line in open(path):
        event = json.loads(line).get("ScenarioFinished")
        for i in ((event or {}).get("recorder", {}).get("interactions") or {}).values():
            seen[(i.get("response") or {}).get("status_code")] += 1
print(", ".join(f"{s}: {n}" for s, n in sorted(seen.items(), key=lambda x: str(x[0]))))
' "$work/report")"

step "fuzz: daemons alive"
alive "$kimchid_pid" kimchid || die "kimchid (PID $kimchid_pid) died during the run"
alive "$gateway_pid" kimchi-gateway || die "kimchi-gateway (PID $gateway_pid) died during the run"
curl -sSfk "$URL/config" >/dev/null || die "the gateway does not answer GET /config"
say "kimchid (PID $kimchid_pid) and kimchi-gateway (PID $gateway_pid) still run"

((fuzz_status == 0)) || die "schemathesis found failures (see above; exit $fuzz_status)"
((${generated:-0} >= cases)) || die "only ${generated:-0} cases ran, not $cases"
step "fuzz: passed (${generated} cases)"
