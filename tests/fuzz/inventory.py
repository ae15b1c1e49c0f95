#!/usr/bin/env python3
"""What exists on the stack, through the REST API, for tests/fuzz.sh.

  inventory.py login OUT.json            opens a session: {"cookie", "csrf_token"}
  inventory.py snapshot OUT.json         every VM, template, pool, volume and network
  inventory.py fixtures BEFORE.json OUT.json SCRATCH
                                         creates the objects the fuzzer may change
                                         (a template, a VM, a pool with a volume,
                                         a network) and writes their names
  inventory.py cleanup BEFORE.json       deletes what did not exist in BEFORE.json,
                                         then fails if anything new is left

The gateway's URL and credentials come from KIMCHI_URL, KIMCHI_USER and
KIMCHI_PASSWORD; every command but `login` uses the session in KIMCHI_SESSION (the
file `login` wrote), so that its requests are no login attempts (which the gateway
throttles per client address). Standard library only.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

URL = os.environ.get("KIMCHI_URL", "https://localhost:8001")
# The test stack's certificate is self-signed.
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE

FIXTURE = "kimchi-fuzz"
ISO_POOL = "kimchi_isos"


def seg(name):
    return urllib.parse.quote(name, safe="")


SESSION = None


def send(method, path, body, headers):
    """One request; a 429 is waited out (Retry-After) and sent again, a few times."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(10):
        req = urllib.request.Request(URL + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in headers.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, context=TLS, timeout=300) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            if e.code != 429 or attempt == 9:
                return e.code, e.headers, e.read()
            time.sleep(min(int(e.headers.get("Retry-After", "1")), 30))


def call(method, path, body=None, ok=(200, 201, 202, 204)):
    headers = {
        "Cookie": "kimchi_session=" + SESSION["cookie"],
        "X-CSRF-Token": SESSION["csrf_token"],
    }
    status, _, raw = send(method, path, body, headers)
    value = json.loads(raw) if raw.strip() else None
    if status not in ok:
        raise RuntimeError(f"{method} {path}: {status} {value}")
    return status, value


def login():
    credentials = {"username": os.environ["KIMCHI_USER"], "password": os.environ["KIMCHI_PASSWORD"]}
    status, headers, raw = send("POST", "/login", credentials, {})
    if status != 200:
        raise RuntimeError(f"POST /login: {status} {raw[:200]!r}")
    cookie = next(
        c.split(";")[0].split("=", 1)[1]
        for c in headers.get_all("Set-Cookie")
        if c.startswith("kimchi_session=")
    )
    return {"cookie": cookie, "csrf_token": json.loads(raw)["csrf_token"]}


def get(path):
    return call("GET", path)[1]


def snapshot():
    pools = get("/storagepools")
    volumes = {}
    for pool in pools:
        if pool["name"] != ISO_POOL and pool["state"] == "active":
            volumes[pool["name"]] = sorted(
                v["name"] for v in get(f"/storagepools/{seg(pool['name'])}/storagevolumes")
            )
    return {
        "vms": sorted(v["name"] for v in get("/vms")),
        "templates": sorted(t["name"] for t in get("/templates")),
        "pools": sorted(p["name"] for p in pools),
        "volumes": volumes,
        "networks": sorted(n["name"] for n in get("/networks")),
    }


def names(inventory):
    """Every name in an inventory: the fuzzer must not touch any of them."""
    found = set(inventory["vms"] + inventory["templates"] + inventory["pools"])
    found.update(inventory["networks"])
    for vols in inventory["volumes"].values():
        found.update(vols)
    return sorted(found)


def fixtures(before, scratch):
    """Objects of the fuzzer's own, so that generated requests also reach real ones."""
    taken = set(names(before))
    for name in (FIXTURE + s for s in ("-tmpl", "-vm", "-pool", "-net")):
        if name in taken:
            raise RuntimeError(f"{name} exists already: remove it first")
    pool_dir = os.path.join(scratch, "pool")
    os.makedirs(pool_dir, exist_ok=True)
    call("POST", "/storagepools", {"name": FIXTURE + "-pool", "type": "dir", "path": pool_dir})
    call("POST", f"/storagepools/{FIXTURE}-pool/activate")
    call(
        "POST",
        f"/storagepools/{FIXTURE}-pool/storagevolumes",
        {"name": FIXTURE + "-vol.img", "capacity": 16, "format": "raw"},
    )
    call("POST", "/templates", {"name": FIXTURE + "-tmpl", "memory": 128, "disks": [{"size": 1}]})
    _, vm = call(
        "POST",
        "/vms",
        {
            "name": FIXTURE + "-vm",
            "template": f"/templates/{FIXTURE}-tmpl",
            "storagepool": f"/storagepools/{FIXTURE}-pool",
        },
    )
    call("POST", "/networks", {"name": FIXTURE + "-net", "connection": "isolated"})
    ifaces = get(f"/vms/{FIXTURE}-vm/ifaces")
    storages = get(f"/vms/{FIXTURE}-vm/storages")
    interfaces = get("/interfaces")
    return {
        "vm": vm["name"],
        "template": FIXTURE + "-tmpl",
        "pool": FIXTURE + "-pool",
        "volume": FIXTURE + "-vol.img",
        "network": FIXTURE + "-net",
        "mac": ifaces[0]["mac"] if ifaces else "52:54:00:00:00:01",
        "dev": storages[0]["dev"] if storages else "vda",
        "interface": interfaces[0]["name"] if interfaces else "lo",
    }


def wait_for_tasks(seconds=300):
    """Tasks the fuzzer started with Prefer: respond-async must end before cleanup."""
    deadline = time.monotonic() + seconds
    while any(t["status"] == "running" for t in get("/tasks")):
        if time.monotonic() > deadline:
            raise RuntimeError("tasks still running after %d s: %s" % (seconds, get("/tasks")))
        time.sleep(1)


def difference(now, then):
    """What `now` has and `then` has not. Every new object is the run's: the fuzz runs
    alone (tests/run.sh starts it after the other tests)."""
    def minus(a, b):
        return sorted(set(a) - set(b))

    diff = {key: minus(now[key], then[key]) for key in ("vms", "templates", "pools", "networks")}
    diff["volumes"] = {
        pool: minus(vols, then["volumes"].get(pool, []))
        for pool, vols in now["volumes"].items()
        if minus(vols, then["volumes"].get(pool, []))
    }
    return diff


def new_objects(before, after):
    return difference(after, before)


def attempt(what, method, path, ok=(200, 202, 204, 404, 409)):
    try:
        call(method, path, ok=ok)
    except RuntimeError as e:
        print(f"    could not {what}: {e}", file=sys.stderr)


def cleanup(before):
    wait_for_tasks()
    new = new_objects(before, snapshot())
    for vm in new["vms"]:
        attempt("power off " + vm, "POST", f"/vms/{seg(vm)}/poweroff")
        attempt("delete " + vm, "DELETE", f"/vms/{seg(vm)}")
    for template in new["templates"]:
        attempt("delete template " + template, "DELETE", f"/templates/{seg(template)}")
    for network in new["networks"]:
        attempt("deactivate " + network, "POST", f"/networks/{seg(network)}/deactivate")
        attempt("delete network " + network, "DELETE", f"/networks/{seg(network)}")
    for pool, volumes in new["volumes"].items():
        for volume in volumes:
            attempt(
                f"delete volume {pool}/{volume}",
                "DELETE",
                f"/storagepools/{seg(pool)}/storagevolumes/{seg(volume)}",
            )
    for pool in new["pools"]:
        attempt("deactivate pool " + pool, "POST", f"/storagepools/{seg(pool)}/deactivate")
        attempt("delete pool " + pool, "DELETE", f"/storagepools/{seg(pool)}")
    left = new_objects(before, snapshot())
    gone = before_gone(before, snapshot())
    ok = True
    if any(left[k] for k in left):
        print("left behind after cleanup: " + json.dumps(left), file=sys.stderr)
        ok = False
    if any(gone[k] for k in gone):
        print("gone although they existed before the run: " + json.dumps(gone), file=sys.stderr)
        ok = False
    return ok


def before_gone(before, after):
    return difference(before, after)


def main(argv):
    global SESSION
    command = argv[1] if len(argv) > 1 else ""
    if command == "login" and len(argv) == 3:
        with open(argv[2], "w") as out:
            json.dump(login(), out)
        return 0
    with open(os.environ["KIMCHI_SESSION"]) as f:
        SESSION = json.load(f)
    if command == "snapshot" and len(argv) == 3:
        inventory = snapshot()
        inventory["names"] = names(inventory)
        with open(argv[2], "w") as out:
            json.dump(inventory, out)
        return 0
    if command == "fixtures" and len(argv) == 5:
        with open(argv[2]) as f:
            before = json.load(f)
        with open(argv[3], "w") as out:
            json.dump(fixtures(before, argv[4]), out)
        return 0
    if command == "cleanup" and len(argv) == 3:
        with open(argv[2]) as f:
            before = json.load(f)
        return 0 if cleanup(before) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
