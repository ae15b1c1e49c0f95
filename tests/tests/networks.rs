//! Virtual networks over REST and D-Bus against real libvirt networks: nat and
//! isolated networks with a subnet kimchid picks (free of every other network and
//! every host route) or one given, their life (create → activate → deactivate →
//! delete) as `ip route` sees it, guests attached with virsh, renames and autostart,
//! a network stopped with virsh behind kimchi's back (REST and PropertiesChanged),
//! a guest refused to start on an inactive network with libvirt's reason, every
//! refusal (and that it defines nothing), bridge and macvtap networks on host
//! devices the tests create, the host's interfaces, what a reader may not do, and
//! busctl.
//!
//! Every network is stopped and undefined by a guard, every host device deleted by
//! one, even when a test fails. Explicit subnets are random 10.x.y.0/24s that no route
//! and no network uses (kimchid picks its own in 192.168.x), so the tests run in
//! parallel with each other and the rest of the suite.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{expect, keys, manager_call, object_path_reply, TemplateVm, TestNetwork, Web};
use futures_util::StreamExt;
use kimchi_dbus::{network_path, BUS_NAME, NETWORK_INTERFACE};
use kimchi_tests::{busctl, poll, run, system_bus, unique_name, virsh, Ran, Response, READER};
use serde_json::{json, Value};
use zbus::message::Type as MessageType;
use zbus::{MatchRule, MessageStream, OwnedVariant};

/// The keys of a network document, sorted.
const NETWORK_KEYS: [&str; 11] = [
    "autostart",
    "connection",
    "dhcp",
    "in_use",
    "interfaces",
    "name",
    "persistent",
    "state",
    "subnet",
    "vlan_id",
    "vms",
];

/// The keys of a host interface document, sorted.
const INTERFACE_KEYS: [&str; 6] = ["ipaddr", "module", "name", "netmask", "status", "type"];

// ---------------------------------------------------------------------------------
// Subnets

/// An IPv4 network: its address (host bits clear) and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Subnet {
    network: u32,
    prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/p` (or a bare address, a /32), host bits cleared.
    fn parse(text: &str) -> Option<Subnet> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, "32"));
        let address: Ipv4Addr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Subnet::of(address, prefix))
    }

    fn of(address: Ipv4Addr, prefix: u8) -> Subnet {
        let mask = mask(prefix);
        Subnet {
            network: u32::from(address) & mask,
            prefix,
        }
    }

    fn overlaps(self, other: Subnet) -> bool {
        let mask = mask(self.prefix) & mask(other.prefix);
        self.network & mask == other.network & mask
    }

    fn address(self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + offset)
    }

    fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(self.network | !mask(self.prefix))
    }

    /// The DHCP range Kimchi gives a network: all but the network address, the
    /// gateway (the first address) and the broadcast address.
    fn dhcp(self) -> Value {
        let end = Ipv4Addr::from(u32::from(self.broadcast()) - 1);
        json!({"start": self.address(2).to_string(), "end": end.to_string()})
    }

    /// In 10/8, 172.16/12 or 192.168/16.
    fn is_private(self) -> bool {
        [("10.0.0.0", 8), ("172.16.0.0", 12), ("192.168.0.0", 16)]
            .iter()
            .any(|(net, prefix)| {
                let space = Subnet::of(net.parse().unwrap(), *prefix);
                self.prefix >= space.prefix && space.overlaps(self)
            })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// `ip -4 route` of the main table: (destination, the whole line); the default route
/// left out.
fn host_routes() -> Vec<(Subnet, String)> {
    let ran = run(Command::new("ip").args(["-4", "route", "show"])).expect_ok();
    ran.stdout
        .lines()
        .filter_map(|line| {
            let dest = line.split_whitespace().next()?;
            let dest = match dest {
                "default" => return None,
                // Route types come first: `unreachable 10.1.0.0/16 …`.
                "unicast" | "unreachable" | "blackhole" | "prohibit" | "throw" => {
                    line.split_whitespace().nth(1)?
                }
                dest => dest,
            };
            Some((Subnet::parse(dest)?, line.to_owned()))
        })
        .collect()
}

/// Every libvirt network's IPv4 subnet, by network name, from `virsh net-dumpxml`
/// (networks that go away meanwhile are skipped).
fn libvirt_subnets() -> Vec<(String, Subnet)> {
    let names = virsh(&["net-list", "--all", "--name"]).expect_ok().stdout;
    let mut subnets = Vec::new();
    for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let ran = virsh(&["net-dumpxml", name]);
        if !ran.ok {
            continue;
        }
        subnets.extend(
            xml_subnets(&ran.stdout)
                .into_iter()
                .map(|s| (name.to_owned(), s)),
        );
    }
    subnets
}

/// The IPv4 `<ip>` elements of a network's XML as subnets.
fn xml_subnets(xml: &str) -> Vec<Subnet> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("bad XML ({e}): {xml}"));
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("ip"))
        .filter(|n| n.attribute("family").is_none_or(|f| f == "ipv4"))
        .filter_map(|n| {
            let address: Ipv4Addr = n.attribute("address")?.parse().ok()?;
            let prefix = match (n.attribute("prefix"), n.attribute("netmask")) {
                (Some(p), _) => p.parse().ok()?,
                (None, Some(m)) => u32::from(m.parse::<Ipv4Addr>().ok()?).count_ones() as u8,
                (None, None) => 24,
            };
            Some(Subnet::of(address, prefix))
        })
        .collect()
}

/// A random 10.x.y.0/24 that no host route, no libvirt network and no earlier pick of
/// this process overlaps.
fn free_subnet() -> Subnet {
    static PICKED: Mutex<BTreeSet<Subnet>> = Mutex::new(BTreeSet::new());
    let routes = host_routes();
    let networks = libvirt_subnets();
    let mut picked = PICKED.lock().unwrap();
    for _ in 0..1000 {
        let r = random();
        // 10.100.0.0–10.227.255.0: clear of the 10.0.x.y addresses hosts like to use.
        let candidate = Subnet::of(
            Ipv4Addr::new(10, 100 + (r % 128) as u8, (r >> 8) as u8, 0),
            24,
        );
        let taken = routes.iter().any(|(s, _)| s.overlaps(candidate))
            || networks.iter().any(|(_, s)| s.overlaps(candidate))
            || picked.iter().any(|s| s.overlaps(candidate));
        if !taken {
            picked.insert(candidate);
            return candidate;
        }
    }
    panic!("no free 10.x.y.0/24 found");
}

fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

// ---------------------------------------------------------------------------------
// Host devices

/// A network device the test creates with `ip link` (a Linux bridge, or a stand-in
/// for a nic); deleted on drop.
struct HostLink {
    name: String,
    /// What `ip link add` made: bridge, dummy, ifb or tap.
    kind: &'static str,
}

impl HostLink {
    /// `kt-<tag><pid>-<n>`: unique, and within the kernel's 15 bytes.
    fn fresh_name(tag: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 256;
        format!("kt-{tag}{:x}-{n:x}", std::process::id())
    }

    /// A Linux bridge, down, with no ports.
    #[track_caller]
    fn bridge() -> HostLink {
        let name = HostLink::fresh_name("br");
        run(Command::new("ip").args(["link", "add", &name, "type", "bridge"])).expect_ok();
        HostLink {
            name,
            kind: "bridge",
        }
    }

    /// A bridge that is up with `gateway/prefix` of `subnet`: the host then routes
    /// `subnet` to it.
    #[track_caller]
    fn bridge_with_address(subnet: Subnet) -> HostLink {
        let link = HostLink::bridge();
        let address = format!("{}/{}", subnet.address(1), subnet.prefix);
        run(Command::new("ip").args(["addr", "add", &address, "dev", &link.name])).expect_ok();
        run(Command::new("ip").args(["link", "set", &link.name, "up"])).expect_ok();
        link
    }

    /// A device that is neither a bridge, a vlan nor a bond: a dummy nic where the
    /// kernel has the dummy driver, else an ifb device, else a tap device.
    #[track_caller]
    fn nic() -> HostLink {
        let name = HostLink::fresh_name("nc");
        let attempts: [(&'static str, &[&str]); 3] = [
            ("dummy", &["link", "add", &name, "type", "dummy"]),
            ("ifb", &["link", "add", &name, "type", "ifb"]),
            ("tap", &["tuntap", "add", "dev", &name, "mode", "tap"]),
        ];
        let mut complaints = String::new();
        for (kind, args) in attempts {
            let ran = run(Command::new("ip").args(args));
            if ran.ok {
                if kind != "dummy" {
                    println!("no dummy driver here: {name} is an {kind} device");
                }
                return HostLink {
                    name: name.clone(),
                    kind,
                };
            }
            complaints.push_str(&format!("{kind}: {}", ran.stderr));
        }
        panic!("cannot create a nic stand-in: {complaints}");
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = match self.kind {
            "tap" => {
                run(Command::new("ip").args(["tuntap", "del", "dev", &self.name, "mode", "tap"]))
            }
            _ => run(Command::new("ip").args(["link", "del", &self.name])),
        };
    }
}

// ---------------------------------------------------------------------------------
// REST helpers

fn create(web: &Web, body: &Value) -> Response {
    web.post("/networks", body)
}

/// `POST /networks` with `body`, asserting 201 with the network's Location; the
/// network document, checked.
#[track_caller]
fn create_ok(web: &Web, body: &Value) -> Value {
    let resp = expect(create(web, body), 201, "create the network");
    let doc = resp.json();
    let name = body["name"].as_str().expect("a name in the body");
    assert_eq!(
        resp.header("location"),
        Some(format!("/networks/{name}").as_str()),
        "{resp:?}"
    );
    check_doc(&doc, name);
    doc
}

/// A nat or isolated network kimchid gives a subnet; its document.
#[track_caller]
fn create_routed(web: &Web, net: &TestNetwork, connection: &str) -> Value {
    create_ok(web, &json!({"name": net.name(), "connection": connection}))
}

#[track_caller]
fn get(web: &Web, net: &TestNetwork) -> Value {
    let doc = expect(web.get(&net.uri()), 200, "get the network").json();
    check_doc(&doc, net.name());
    doc
}

fn put(web: &Web, uri: &str, body: &Value) -> Response {
    web.request("PUT", uri).json(body).send()
}

fn activate(web: &Web, net: &TestNetwork) -> Response {
    web.action(&format!("{}/activate", net.uri()))
}

fn deactivate(web: &Web, net: &TestNetwork) -> Response {
    web.action(&format!("{}/deactivate", net.uri()))
}

/// Asserts the shape of a network document and its name.
#[track_caller]
fn check_doc(doc: &Value, name: &str) {
    assert_eq!(keys(doc), NETWORK_KEYS, "{doc}");
    assert_eq!(doc["name"], name, "{doc}");
    assert!(
        doc["state"] == "active" || doc["state"] == "inactive",
        "{doc}"
    );
    for flag in ["autostart", "persistent", "in_use"] {
        assert!(doc[flag].is_boolean(), "{flag}: {doc}");
    }
    assert!(doc["subnet"].is_string(), "{doc}");
    assert!(doc["interfaces"].is_array(), "{doc}");
    assert!(doc["vms"].is_array(), "{doc}");
    assert!(doc["dhcp"].is_null() || doc["dhcp"].is_object(), "{doc}");
    assert!(doc["vlan_id"].is_null() || doc["vlan_id"].is_u64(), "{doc}");
}

/// The subnet of a nat or isolated network document.
#[track_caller]
fn subnet_of(doc: &Value) -> Subnet {
    let text = doc["subnet"].as_str().expect("subnet");
    let subnet = Subnet::parse(text).unwrap_or_else(|| panic!("subnet is not a.b.c.d/p: {doc}"));
    assert_eq!(subnet.to_string(), text, "host bits set: {doc}");
    subnet
}

/// The network documents of `GET /networks` named `name`.
#[track_caller]
fn listed(web: &Web, name: &str) -> Vec<Value> {
    let list = expect(web.get("/networks"), 200, "list networks").json();
    let all = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    for doc in all {
        assert_eq!(keys(doc), NETWORK_KEYS, "{doc}");
    }
    all.iter().filter(|n| n["name"] == name).cloned().collect()
}

/// The `reason` of an error document with `status`, asserting it names at least one
/// of `any_of` (case-insensitive).
#[track_caller]
fn refused(resp: &Response, status: u16, any_of: &[&str]) -> String {
    let doc = resp.assert_error(status);
    let reason = doc["reason"].as_str().expect("reason").to_owned();
    let lower = reason.to_lowercase();
    assert!(
        any_of.iter().any(|w| lower.contains(&w.to_lowercase())),
        "the reason names none of {any_of:?}: {doc}"
    );
    reason
}

/// Asserts libvirt has no network called `name`.
#[track_caller]
fn assert_not_defined(name: &str) {
    assert!(
        !virsh(&["net-info", name]).ok,
        "libvirt has a network {name:?}"
    );
    let list = virsh(&["net-list", "--all", "--name"]).expect_ok().stdout;
    assert!(
        !list.lines().any(|l| l.trim() == name),
        "virsh net-list --all shows {name:?}:\n{list}"
    );
}

/// The XML libvirt keeps for the network.
#[track_caller]
fn libvirt_xml(name: &str) -> String {
    virsh(&["net-dumpxml", name]).expect_ok().stdout
}

/// `virsh net-info` of the network: field → value.
#[track_caller]
fn net_info(name: &str) -> HashMap<String, String> {
    virsh(&["net-info", name])
        .expect_ok()
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `ip -4 route` lines for exactly `subnet`.
fn routes_to(subnet: Subnet) -> Vec<String> {
    host_routes()
        .into_iter()
        .filter(|(s, _)| *s == subnet)
        .map(|(_, line)| line)
        .collect()
}

/// The object path kimchid gives the network (`LookupNetwork` through busctl),
/// once it has learnt of it. Panics with busctl's last complaint after 5 s.
#[track_caller]
fn lookup_network_path(name: &str) -> String {
    let mut last = None;
    let found = poll(Duration::from_secs(5), || {
        let ran = manager_call("LookupNetwork", "sa{sv}", &[name, "0"]);
        if ran.ok {
            return Some(object_path_reply(&ran));
        }
        last = Some(ran);
        None
    });
    found.unwrap_or_else(|| panic!("LookupNetwork {name} kept failing: {last:?}"))
}

/// A Network property as busctl shows it, e.g. `s "inactive"`.
#[track_caller]
fn network_property(path: &str, property: &str) -> String {
    busctl(&["get-property", BUS_NAME, path, NETWORK_INTERFACE, property])
        .expect_ok()
        .stdout
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------
// A guest to attach

/// The MAC of `vm`'s interface on `network` (`virsh domiflist`).
#[track_caller]
fn mac_on(vm: &str, network: &str) -> String {
    let list = virsh(&["domiflist", vm]).expect_ok().stdout;
    // Interface  Type  Source  Model  MAC
    list.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.len() >= 5 && cols[1] == "network" && cols[2] == network)
        .map(|cols| cols[cols.len() - 1].to_owned())
        .unwrap_or_else(|| panic!("no interface on {network}:\n{list}"))
}

/// Polls `GET` until `check` holds (5 s); the last document.
#[track_caller]
fn wait_for_doc(web: &Web, net: &TestNetwork, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = poll(Duration::from_secs(5), || {
        last = get(web, net);
        check(&last).then(|| last.clone())
    });
    found.unwrap_or_else(|| panic!("{what} did not show within 5 s: {last}"))
}

// ---------------------------------------------------------------------------------
// 1. nat and isolated networks

#[test]
fn nat_network_without_subnet_gets_a_free_private_24_and_goes_through_its_life() {
    let web = Web::admin();
    let net = TestNetwork::planned("net-nat");
    let doc = create_routed(&web, &net, "nat");
    assert_eq!(doc["state"], "inactive", "{doc}");
    assert_eq!(doc["connection"], "nat", "{doc}");
    assert_eq!(doc["persistent"], true, "{doc}");
    assert_eq!(doc["in_use"], false, "{doc}");
    assert_eq!(doc["vms"], json!([]), "{doc}");
    assert_eq!(doc["interfaces"], json!([]), "{doc}");
    assert_eq!(doc["vlan_id"], Value::Null, "{doc}");

    // A private /24 nothing else uses, with the DHCP range Kimchi derives.
    let subnet = subnet_of(&doc);
    assert_eq!(subnet.prefix, 24, "{doc}");
    assert!(subnet.is_private(), "{subnet} is not private: {doc}");
    assert_eq!(doc["dhcp"], subnet.dhcp(), "{doc}");
    for (dest, line) in host_routes() {
        assert!(!dest.overlaps(subnet), "{subnet} overlaps the route {line}");
    }
    for (other, s) in libvirt_subnets() {
        if other != net.name() {
            assert!(
                !s.overlaps(subnet),
                "{subnet} overlaps network {other} ({s})"
            );
        }
    }
    assert_eq!(
        xml_subnets(&libvirt_xml(net.name())),
        [subnet],
        "libvirt has another subnet"
    );
    assert_eq!(get(&web, &net), doc, "GET shows what POST answered");
    assert_eq!(
        listed(&web, net.name()),
        std::slice::from_ref(&doc),
        "GET /networks"
    );

    // Active: the host routes the subnet to libvirt's bridge.
    expect(activate(&web, &net), 200, "activate");
    assert_eq!(get(&web, &net)["state"], "active");
    assert_eq!(net_info(net.name())["Active"], "yes");
    let routes = routes_to(subnet);
    assert!(
        routes.iter().any(|l| l.contains("dev virbr")),
        "no route to {subnet} via a virbr device: {routes:?}"
    );
    refused(&web.delete(&net.uri()), 409, &["active"]);
    assert!(virsh(&["net-info", net.name()]).ok, "deleted while active");

    expect(deactivate(&web, &net), 200, "deactivate");
    assert_eq!(get(&web, &net)["state"], "inactive");
    assert_eq!(routes_to(subnet), Vec::<String>::new(), "route left behind");

    let resp = expect(web.delete(&net.uri()), 204, "delete");
    assert!(resp.body.is_empty(), "{resp:?}");
    web.get(&net.uri()).assert_error(404);
    assert_eq!(listed(&web, net.name()), Vec::<Value>::new());
    assert_not_defined(net.name());
}

#[test]
fn isolated_network_keeps_its_explicit_subnet_and_derives_the_dhcp_range() {
    let web = Web::admin();
    let net = TestNetwork::planned("net-iso");
    let subnet = free_subnet();
    let doc = create_ok(
        &web,
        &json!({"name": net.name(), "connection": "isolated", "subnet": subnet.to_string()}),
    );
    assert_eq!(doc["connection"], "isolated", "{doc}");
    assert_eq!(doc["state"], "inactive", "{doc}");
    assert_eq!(doc["subnet"], subnet.to_string(), "{doc}");
    assert_eq!(doc["dhcp"], subnet.dhcp(), "{doc}");
    assert_eq!(
        doc["dhcp"]["end"],
        subnet.address(254).to_string(),
        "a /24 ends at .254"
    );
    assert_eq!(xml_subnets(&libvirt_xml(net.name())), [subnet]);
    // Isolated: libvirt forwards nothing.
    let xml = libvirt_xml(net.name());
    let parsed = roxmltree::Document::parse(&xml).unwrap();
    assert!(
        !parsed.descendants().any(|n| n.has_tag_name("forward")),
        "an isolated network has no <forward>: {xml}"
    );
}

#[test]
fn default_network_is_listed_with_its_libvirt_subnet() {
    let web = Web::admin();
    let found = listed(&web, "default");
    assert_eq!(found.len(), 1, "no default network: {found:?}");
    let doc = &found[0];
    assert_eq!(doc["connection"], "nat", "{doc}");
    let subnets = xml_subnets(&libvirt_xml("default"));
    assert_eq!(
        [subnet_of(doc)],
        subnets.as_slice(),
        "libvirt's subnet: {doc}"
    );
}

#[test]
fn unknown_network_is_404() {
    let web = Web::admin();
    let name = unique_name("net-none");
    let uri = format!("/networks/{name}");
    for resp in [
        web.get(&uri),
        web.delete(&uri),
        web.action(&format!("{uri}/activate")),
        web.action(&format!("{uri}/deactivate")),
        put(&web, &uri, &json!({"autostart": true})),
    ] {
        let doc = resp.assert_error(404);
        // kimchid's answer, not the gateway's for a path it does not serve.
        assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
        assert!(doc["reason"].as_str().unwrap().contains(&name), "{doc}");
    }
}

// ---------------------------------------------------------------------------------
// 2. Guests

/// A NIC on `net` in the guest's stored definition, added behind kimchid's back.
fn attach_to(guest: &TemplateVm, net: &TestNetwork) {
    virsh(&[
        "attach-interface",
        "--domain",
        guest.name(),
        "--type",
        "network",
        "--source",
        net.name(),
        "--config",
    ])
    .expect_ok();
}

#[test]
fn network_used_by_a_guest_lists_it_and_is_not_deleted_until_detached() {
    let web = Web::admin();
    let net = TestNetwork::planned("net-guest");
    create_routed(&web, &net, "isolated");
    let guest = TemplateVm::create(&web, "net-guest");
    attach_to(&guest, &net);

    let doc = wait_for_doc(&web, &net, "the guest on the network", |d| {
        d["in_use"] == true
    });
    assert_eq!(doc["vms"], json!([guest.name()]), "{doc}");
    assert_eq!(listed(&web, net.name())[0]["vms"], json!([guest.name()]));

    refused(&web.delete(&net.uri()), 409, &[guest.name(), "use"]);
    assert!(virsh(&["net-info", net.name()]).ok, "deleted while in use");

    let mac = mac_on(guest.name(), net.name());
    virsh(&[
        "detach-interface",
        "--domain",
        guest.name(),
        "--type",
        "network",
        "--config",
        "--mac",
        &mac,
    ])
    .expect_ok();
    let doc = wait_for_doc(&web, &net, "the guest gone from the network", |d| {
        d["in_use"] == false
    });
    assert_eq!(doc["vms"], json!([]), "{doc}");
    expect(web.delete(&net.uri()), 204, "delete once detached");
    assert_not_defined(net.name());
}

/// A guest whose network is down does not start, and the answer says so with
/// libvirt's own reason: never a guess such as "already shut off" (the network here is
/// the test's own, never the shared `default`).
#[test]
fn starting_a_guest_on_an_inactive_network_gives_libvirts_reason() {
    let web = Web::admin();
    let net = TestNetwork::planned("net-down");
    create_routed(&web, &net, "isolated");
    let guest = TemplateVm::create(&web, "net-down");
    attach_to(&guest, &net);
    let doc = get(&web, &net);
    assert_eq!(doc["state"], "inactive", "created inactive: {doc}");

    let start = format!("{}/start", guest.vm.uri());
    let resp = web.action(&start);
    assert!(
        resp.status == 409 || resp.status == 400,
        "a start on a down network is refused: {resp:?}"
    );
    let reason = refused(
        &resp,
        resp.status,
        &[&format!("network '{}' is not active", net.name())],
    );
    assert!(
        !reason.to_lowercase().contains("already"),
        "a guess, not libvirt's reason: {reason}"
    );
    let vm = expect(web.get(&guest.vm.uri()), 200, "get the VM").json();
    assert_eq!(vm["state"], "shutoff", "{vm}");

    expect(activate(&web, &net), 200, "activate");
    expect(web.action(&start), 200, "start once the network is up");
}

// ---------------------------------------------------------------------------------
// 3. Changes

#[test]
fn rename_while_inactive_is_303_to_the_new_uri() {
    let web = Web::admin();
    let mut net = TestNetwork::planned("net-rename");
    let new = unique_name("net-renamed");
    net.add(&new);
    let before = create_routed(&web, &net, "isolated");
    let resp = expect(put(&web, &net.uri(), &json!({"name": new})), 303, "rename");
    let new_uri = format!("/networks/{new}");
    assert_eq!(resp.header("location"), Some(new_uri.as_str()), "{resp:?}");

    web.get(&net.uri()).assert_error(404);
    let after = expect(web.get(&new_uri), 200, "GET the new name").json();
    check_doc(&after, &new);
    let mut expected = before;
    expected["name"] = json!(new);
    assert_eq!(after, expected, "only the name changed");
    assert_not_defined(net.name());
    assert!(virsh(&["net-info", &new]).ok, "libvirt lacks {new}");
}

#[test]
fn rename_or_new_subnet_while_active_is_409_but_autostart_changes() {
    let web = Web::admin();
    let mut net = TestNetwork::planned("net-on-put");
    let new = unique_name("net-on-renamed");
    net.add(&new);
    let before = create_routed(&web, &net, "isolated");
    expect(activate(&web, &net), 200, "activate");

    refused(
        &put(&web, &net.uri(), &json!({"name": new})),
        409,
        &["active"],
    );
    let other = free_subnet().to_string();
    refused(
        &put(&web, &net.uri(), &json!({"subnet": other})),
        409,
        &["active"],
    );
    assert_not_defined(&new);
    let doc = get(&web, &net);
    assert_eq!(doc["subnet"], before["subnet"], "{doc}");
    assert_eq!(doc["state"], "active", "{doc}");

    let resp = expect(
        put(&web, &net.uri(), &json!({"autostart": true})),
        200,
        "autostart",
    );
    assert_eq!(resp.json()["autostart"], true, "{resp:?}");
    let doc = get(&web, &net);
    assert_eq!(doc["autostart"], true, "{doc}");
    assert_eq!(doc["state"], "active", "{doc}");
    assert_eq!(net_info(net.name())["Autostart"], "yes");
}

#[test]
fn new_subnet_while_inactive_is_taken_with_its_dhcp_range() {
    let web = Web::admin();
    let net = TestNetwork::planned("net-resubnet");
    let before = create_routed(&web, &net, "isolated");
    let subnet = free_subnet();
    let resp = expect(
        put(&web, &net.uri(), &json!({"subnet": subnet.to_string()})),
        200,
        "new subnet",
    );
    let doc = resp.json();
    check_doc(&doc, net.name());
    assert_eq!(doc["subnet"], subnet.to_string(), "{doc}");
    assert_eq!(doc["dhcp"], subnet.dhcp(), "{doc}");
    assert_eq!(doc["state"], "inactive", "{doc}");
    assert_eq!(get(&web, &net), doc);
    assert_eq!(xml_subnets(&libvirt_xml(net.name())), [subnet]);
    assert_ne!(doc["subnet"], before["subnet"]);
}

#[test]
fn put_with_an_unknown_or_fixed_field_is_400_and_changes_nothing() {
    let web = Web::admin();
    let net = TestNetwork::planned("net-put-bad");
    let before = create_routed(&web, &net, "isolated");
    refused(
        &put(&web, &net.uri(), &json!({"bogus_field": 1})),
        400,
        &["bogus_field"],
    );
    refused(
        &put(
            &web,
            &net.uri(),
            &json!({"autostart": true, "connection": "nat"}),
        ),
        400,
        &["connection"],
    );
    assert_eq!(get(&web, &net), before);
}

// ---------------------------------------------------------------------------------
// 4. Behind kimchi's back

#[tokio::test(flavor = "multi_thread")]
async fn network_stopped_with_virsh_shows_inactive_over_rest_and_as_a_signal() {
    let (web, net, path) = tokio::task::block_in_place(|| {
        let web = Web::admin();
        let net = TestNetwork::planned("net-virsh-stop");
        create_routed(&web, &net, "isolated");
        expect(activate(&web, &net), 200, "activate");
        let path = lookup_network_path(net.name());
        (web, net, path)
    });
    assert_eq!(
        path,
        network_path(virsh(&["net-uuid", net.name()]).expect_ok().stdout.trim())
    );

    // Subscribed before virsh acts, so the signal cannot be missed.
    let conn = system_bus().await;
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path(path.as_str())
        .build()
        .unwrap();
    let mut signals = MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        while let Some(msg) = signals.next().await {
            let msg = msg.unwrap();
            let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                msg.body().deserialize().unwrap();
            let state = changed
                .get("State")
                .and_then(|v| String::try_from(v.clone()).ok());
            if iface == NETWORK_INTERFACE && state.as_deref() == Some("inactive") {
                return Instant::now();
            }
        }
        panic!("signal stream ended");
    });

    let start = Instant::now();
    let rest_seen = tokio::task::block_in_place(|| {
        virsh(&["net-destroy", net.name()]).expect_ok();
        println!("virsh net-destroy took {:?}", start.elapsed());
        poll(Duration::from_secs(2), || {
            (get(&web, &net)["state"] == "inactive").then(Instant::now)
        })
    });
    let rest_seen = rest_seen.unwrap_or_else(|| {
        panic!(
            "GET still shows the network active 2 s after virsh net-destroy: {}",
            get(&web, &net)
        )
    });
    println!(
        "REST showed inactive {:?} after net-destroy began",
        rest_seen - start
    );

    let signalled = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap_or_else(|_| panic!("no PropertiesChanged State=inactive on {path} within 5 s"))
        .expect("the signal waiter");
    println!(
        "PropertiesChanged State=inactive came {:?} after net-destroy began",
        signalled.saturating_duration_since(start)
    );
    let state = tokio::task::block_in_place(|| network_property(&path, "State"));
    assert_eq!(state, "s \"inactive\"");
}

// ---------------------------------------------------------------------------------
// 5. Refusals

#[test]
fn bad_network_requests_are_400_with_a_reason_and_define_nothing() {
    let web = Web::admin();
    let subnet = free_subnet();
    let base = subnet.address(0);
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"connection": "nat", "subnet": "not-a-subnet"}),
            &["subnet"],
        ),
        (
            json!({"connection": "nat", "subnet": base.to_string()}),
            &["subnet"],
        ),
        (
            json!({"connection": "isolated", "subnet": format!("{base}/abc")}),
            &["subnet"],
        ),
        (
            json!({"connection": "nat", "subnet": "300.1.2.0/24"}),
            &["subnet"],
        ),
        (
            json!({"connection": "nat", "subnet": "10.1.2/24"}),
            &["subnet"],
        ),
        (
            json!({"connection": "nat", "subnet": format!("{base}/33")}),
            &["subnet", "prefix"],
        ),
        (
            json!({"connection": "nat", "subnet": "10.0.0.0/8"}),
            &["prefix"],
        ),
        (
            json!({"connection": "nat", "subnet": format!("{}/15", Subnet::of(base, 15))}),
            &["prefix"],
        ),
        (
            json!({"connection": "isolated", "subnet": format!("{base}/31")}),
            &["prefix"],
        ),
        (
            json!({"connection": "nat", "subnet": format!("{base}/32")}),
            &["prefix"],
        ),
        (json!({"connection": "wormhole"}), &["wormhole"]),
        (
            json!({"connection": "nat", "interfaces": ["eth0"]}),
            &["interface"],
        ),
        (
            json!({"connection": "isolated", "interfaces": ["lo"]}),
            &["interface"],
        ),
        (
            json!({"connection": "bridge", "interfaces": ["kt-no-such-if"]}),
            &["kt-no-such-if"],
        ),
        (
            json!({"connection": "macvtap", "interfaces": ["kt-no-such-if"]}),
            &["kt-no-such-if"],
        ),
        (json!({"connection": "bridge"}), &["interface"]),
    ];
    for (mut body, words) in cases {
        let net = TestNetwork::planned("net-bad");
        body["name"] = json!(net.name());
        let resp = create(&web, &body);
        let reason = refused(&resp, 400, words);
        println!("{body} → {reason}");
        assert_not_defined(net.name());
    }

    let with_slash = format!("{}/x", unique_name("net-slash"));
    let _guard = TestNetwork::named(&with_slash);
    let body = json!({"name": with_slash, "connection": "isolated"});
    refused(&create(&web, &body), 400, &["/", "name"]);
    assert_not_defined(&with_slash);
}

#[test]
fn subnet_overlapping_another_network_is_400() {
    let web = Web::admin();
    let first = TestNetwork::planned("net-overlap-a");
    let subnet = free_subnet();
    create_ok(
        &web,
        &json!({"name": first.name(), "connection": "isolated", "subnet": subnet.to_string()}),
    );
    // The same /24, a /25 inside it, the /16 around it: all overlap the inactive
    // network, which has no route yet.
    let half = format!("{}/25", subnet.address(128));
    let around = Subnet::of(subnet.address(0), 16).to_string();
    for overlapping in [subnet.to_string(), half, around] {
        let second = TestNetwork::planned("net-overlap-b");
        let body =
            json!({"name": second.name(), "connection": "nat", "subnet": overlapping.clone()});
        let reason = refused(&create(&web, &body), 400, &[first.name(), "overlap"]);
        println!("{overlapping} → {reason}");
        assert_not_defined(second.name());
    }
}

#[test]
fn subnet_overlapping_a_host_route_is_400() {
    let web = Web::admin();
    let subnet = free_subnet();
    let bridge = HostLink::bridge_with_address(subnet);
    let routes = routes_to(subnet);
    assert!(
        routes.iter().any(|l| l.contains(&bridge.name)),
        "adding {} to {} made no route: {routes:?}",
        subnet.address(1),
        bridge.name
    );
    let net = TestNetwork::planned("net-hostrt");
    let body = json!({"name": net.name(), "connection": "isolated", "subnet": subnet.to_string()});
    refused(&create(&web, &body), 400, &["route", "overlap"]);
    assert_not_defined(net.name());
}

#[test]
fn duplicate_network_name_is_409_and_keeps_the_first() {
    let web = Web::admin();
    let net = TestNetwork::planned("net-dup");
    let first = create_routed(&web, &net, "isolated");
    let body =
        json!({"name": net.name(), "connection": "nat", "subnet": free_subnet().to_string()});
    refused(&create(&web, &body), 409, &[net.name(), "exists"]);
    assert_eq!(get(&web, &net), first, "the first network is kept");
    // `default` is no exception.
    let body = json!({"name": "default", "connection": "isolated"});
    web.post("/networks", &body).assert_error(409);
}

// ---------------------------------------------------------------------------------
// 6. Bridge and macvtap networks on host devices

#[test]
fn bridge_network_joins_an_existing_host_bridge() {
    let web = Web::admin();
    let bridge = HostLink::bridge();
    let net = TestNetwork::planned("net-bridge");
    let doc = create_ok(
        &web,
        &json!({"name": net.name(), "connection": "bridge", "interfaces": [bridge.name]}),
    );
    assert_eq!(doc["connection"], "bridge", "{doc}");
    assert_eq!(doc["interfaces"], json!([bridge.name]), "{doc}");
    assert_eq!(doc["subnet"], "", "{doc}");
    assert_eq!(doc["dhcp"], Value::Null, "{doc}");
    assert_eq!(doc["state"], "inactive", "{doc}");
    let xml = libvirt_xml(net.name());
    let parsed = roxmltree::Document::parse(&xml).unwrap();
    let forward = parsed.descendants().find(|n| n.has_tag_name("forward"));
    assert_eq!(
        forward.and_then(|f| f.attribute("mode")),
        Some("bridge"),
        "{xml}"
    );
    let bridge_el = parsed.descendants().find(|n| n.has_tag_name("bridge"));
    assert_eq!(
        bridge_el.and_then(|b| b.attribute("name")),
        Some(bridge.name.as_str()),
        "{xml}"
    );
    assert_eq!(get(&web, &net), doc);
}

#[test]
fn bridge_connection_on_a_nic_is_400() {
    let web = Web::admin();
    let nic = HostLink::nic();
    let net = TestNetwork::planned("net-bridge-nic");
    let body = json!({"name": net.name(), "connection": "bridge", "interfaces": [nic.name]});
    refused(&create(&web, &body), 400, &[&nic.name]);
    assert_not_defined(net.name());
    // Two bridges where one is wanted.
    let (a, b) = (HostLink::bridge(), HostLink::bridge());
    let body = json!({"name": net.name(), "connection": "bridge", "interfaces": [a.name, b.name]});
    refused(&create(&web, &body), 400, &["interface"]);
    assert_not_defined(net.name());
}

#[test]
fn macvtap_network_on_a_nic_is_created() {
    let web = Web::admin();
    let nic = HostLink::nic();
    let net = TestNetwork::planned("net-macvtap");
    let doc = create_ok(
        &web,
        &json!({"name": net.name(), "connection": "macvtap", "interfaces": [nic.name]}),
    );
    assert_eq!(doc["connection"], "macvtap", "{doc}");
    assert_eq!(doc["interfaces"], json!([nic.name]), "{doc}");
    assert_eq!(doc["subnet"], "", "{doc}");
    assert_eq!(doc["dhcp"], Value::Null, "{doc}");
    let xml = libvirt_xml(net.name());
    let parsed = roxmltree::Document::parse(&xml).unwrap();
    let forward = parsed
        .descendants()
        .find(|n| n.has_tag_name("forward"))
        .unwrap_or_else(|| panic!("no <forward>: {xml}"));
    let devices: Vec<&str> = forward
        .descendants()
        .filter_map(|n| n.attribute("dev"))
        .collect();
    assert!(devices.contains(&nic.name.as_str()), "{xml}");
    assert_eq!(get(&web, &net), doc);
}

#[test]
fn macvtap_on_a_bridge_is_400() {
    let web = Web::admin();
    let bridge = HostLink::bridge();
    let net = TestNetwork::planned("net-macvtap-br");
    let body = json!({"name": net.name(), "connection": "macvtap", "interfaces": [bridge.name]});
    refused(&create(&web, &body), 400, &[&bridge.name]);
    assert_not_defined(net.name());
}

#[test]
fn interfaces_list_host_bridges_and_nics_but_not_lo_or_libvirts_devices() {
    let web = Web::admin();
    let subnet = free_subnet();
    let bridge = HostLink::bridge_with_address(subnet);
    let nic = HostLink::nic();
    let list = expect(web.get("/interfaces"), 200, "list interfaces").json();
    let all = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    for doc in all {
        assert_eq!(keys(doc), INTERFACE_KEYS, "{doc}");
        let name = doc["name"].as_str().expect("name");
        assert!(
            name != "lo" && !name.starts_with("virbr") && !name.starts_with("vnet"),
            "{name} is listed: {list}"
        );
        let kind = doc["type"].as_str().expect("type");
        assert!(["nic", "bridge", "vlan", "bond"].contains(&kind), "{doc}");
        assert!(
            doc["status"].as_str().is_some_and(|s| !s.is_empty()),
            "{doc}"
        );
    }
    let find = |name: &str| {
        all.iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {list}"))
    };
    let br = find(&bridge.name);
    assert_eq!(br["type"], "bridge", "{br}");
    assert_eq!(br["ipaddr"], subnet.address(1).to_string(), "{br}");
    assert_eq!(br["netmask"], "255.255.255.0", "{br}");
    let nc = find(&nic.name);
    assert_eq!(nc["type"], "nic", "{} device: {nc}", nic.kind);
}

// ---------------------------------------------------------------------------------
// 7. Readers

#[test]
fn reader_may_read_networks_and_interfaces_but_not_change_them() {
    let web = Web::admin();
    let reader = Web::login(READER);
    let net = TestNetwork::planned("net-reader");
    let doc = create_routed(&web, &net, "isolated");

    expect(reader.get("/networks"), 200, "reader lists networks");
    assert_eq!(
        expect(reader.get(&net.uri()), 200, "reader GET").json(),
        doc
    );
    expect(reader.get("/interfaces"), 200, "reader lists interfaces");

    let other = TestNetwork::planned("net-reader-new");
    let body = json!({"name": other.name(), "connection": "isolated"});
    let err = create(&reader, &body).assert_error(403);
    assert_eq!(
        err["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
        "{err}"
    );
    assert_not_defined(other.name());

    activate(&reader, &net).assert_error(403);
    assert_eq!(get(&web, &net)["state"], "inactive");
    expect(activate(&web, &net), 200, "admin activates");
    deactivate(&reader, &net).assert_error(403);
    put(&reader, &net.uri(), &json!({"autostart": true})).assert_error(403);
    reader.delete(&net.uri()).assert_error(403);

    let after = get(&web, &net);
    assert_eq!(after["state"], "active", "{after}");
    assert_eq!(after["autostart"], false, "{after}");
}

// ---------------------------------------------------------------------------------
// 8. busctl

#[test]
fn busctl_create_network_then_lookup_gives_an_object_whose_state_is_inactive() {
    let net = TestNetwork::planned("net-busctl");
    // CreateNetwork((name, connection, subnet, interfaces, vlan_id), options).
    let ran: Ran = manager_call(
        "CreateNetwork",
        "(sssasu)a{sv}",
        &[net.name(), "isolated", "", "0", "0", "0"],
    );
    assert!(ran.ok, "CreateNetwork failed: {}", ran.stderr);
    assert!(ran.stdout.contains(net.name()), "{}", ran.stdout);

    let path =
        object_path_reply(&manager_call("LookupNetwork", "sa{sv}", &[net.name(), "0"]).expect_ok());
    let uuid = virsh(&["net-uuid", net.name()]).expect_ok().stdout;
    assert_eq!(path, network_path(uuid.trim()));
    assert_eq!(network_property(&path, "State"), "s \"inactive\"");
    assert_eq!(
        network_property(&path, "Name"),
        format!("s \"{}\"", net.name())
    );
    assert_eq!(network_property(&path, "Connection"), "s \"isolated\"");
}
