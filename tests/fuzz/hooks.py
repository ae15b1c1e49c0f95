"""Schemathesis hooks of tests/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

One gate, `before_call`, sees every request of every phase just before it is sent and
keeps the fuzzer off the host's own things:

- a path parameter naming an object that existed before the run (the `default` pool
  and network, other tests' VMs, ...) is replaced by a name nothing has, so those
  are never changed or deleted;
- half of the other names, in paths and in the body fields that name objects
  (chosen by a hash of the value, so a case replays the same), are replaced by the
  fuzzer's own fixtures (a VM, template, pool, volume, network), so that generated
  requests also reach objects that exist;
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


# Body fields naming other objects (a VM's template and pool, a NIC's network, a
# drive's pool and volume) and the fixture they may be given.
BODY_FIXTURES = {
    "template": "/templates/" + FIXTURES["template"],
    "storagepool": "/storagepools/" + FIXTURES["pool"],
    "network": FIXTURES["network"],
    "pool": FIXTURES["pool"],
    "vol": FIXTURES["volume"],
}


def picked(value):
    """Whether a generated value is replaced by a fixture: for half of the values,
    decided by their hash so that a case replays the same."""
    return zlib.crc32(repr(value).encode("utf-8", "replace")) % 2 == 0


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
        if fixture is not None and picked(value):
            params[param] = fixture
    body = case.body
    if isinstance(body, dict):
        for key, value in list(body.items()):
            fixture = BODY_FIXTURES.get(key)
            if fixture is not None and picked(value):
                body[key] = fixture
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
