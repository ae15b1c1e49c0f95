"""Schemathesis hooks of tests/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

One gate, `before_call`, sees every request of every phase just before it is sent and
keeps the fuzzer off the host's own things:

- a path parameter naming an object that existed before the run (the `default` pool
  and network, other tests' VMs, ...) is replaced by a name nothing has, so those
  are never changed or deleted;
- half of the other names (chosen by a hash of the value, so a case replays the same)
  are replaced by the fuzzer's own fixtures (a VM, template, pool, volume, network),
  so that generated requests also reach objects that exist;
- new storage pools are directory pools inside the run's scratch directory (never a
  logical pool on a host's disk, nor a pool over a host directory), and new networks
  are isolated ones without host interfaces (never a bridge or macvtap on the host's
  NIC).
"""

import json
import os
import re
import zlib

import schemathesis

with open(os.environ["KIMCHI_FUZZ_INVENTORY"]) as f:
    PROTECTED = set(json.load(f)["names"])
with open(os.environ["KIMCHI_FUZZ_FIXTURES"]) as f:
    FIXTURES = json.load(f)
SCRATCH = os.environ["KIMCHI_FUZZ_SCRATCH"]
SPARED = "kimchi-fuzz-spared"


def fixture_for(path, param):
    """The fixture a parameter of `path` may name, if any."""
    if param == "mac":
        return FIXTURES["mac"]
    if param == "dev":
        return FIXTURES["dev"]
    if param == "pool":
        return FIXTURES["pool"]
    if path.startswith("/storagepools/{pool}/storagevolumes/"):
        return FIXTURES["volume"]
    for prefix, key in (
        ("/vms/", "vm"),
        ("/templates/", "template"),
        ("/storagepools/", "pool"),
        ("/networks/", "network"),
        ("/interfaces/", "interface"),
    ):
        if path.startswith(prefix):
            return FIXTURES[key]
    return None


def safe_path(value):
    name = re.sub(r"[^A-Za-z0-9._-]", "_", value)[:64].strip(".") or "p"
    return os.path.join(SCRATCH, "pools", name)


@schemathesis.hook
def before_call(context, case, **kwargs):
    path = case.operation.path
    params = case.path_parameters or {}
    for param, value in list(params.items()):
        if not isinstance(value, str):
            continue
        if value in PROTECTED:
            params[param] = SPARED
            continue
        fixture = fixture_for(path, param)
        if fixture is not None and zlib.crc32(value.encode("utf-8", "replace")) % 2 == 0:
            params[param] = fixture
    body = case.body
    if case.method.upper() == "POST" and isinstance(body, dict):
        if path == "/storagepools":
            body.pop("source", None)
            if isinstance(body.get("type"), str):
                body["type"] = "dir"
            if isinstance(body.get("path"), str):
                body["path"] = safe_path(body["path"])
        elif path == "/networks":
            body.pop("interfaces", None)
            body.pop("interface", None)
            if isinstance(body.get("connection"), str):
                body["connection"] = "isolated"
