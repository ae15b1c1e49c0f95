//! The VM operations of `docs/API-vm-operations.md` over REST against the real stack:
//! every power action and its wrong-state refusal, graceful shutdown and reboot of a
//! real guest that answers ACPI (and a shutdown that times out on one that does not),
//! `PUT /vms/:name` (rename, CPUs, memory, title, description, autostart; changes
//! that wait for the next power-on; every bad input), the NICs and drives of
//! `/vms/:name/ifaces` and `/vms/:name/storages` (cold, and hot-plugged into a
//! running guest that takes a DHCP lease on the new NIC), what a reader may not do,
//! and unknown VMs.
//!
//! What kimchid did is checked where libvirt keeps it (`virsh dumpxml`, `dominfo`,
//! `domiflist`, `domblklist`), and every refusal is checked to leave the domain's
//! definition byte for byte as it was.
//!
//! Three kinds of guests, all removed by guards even when a test fails:
//! - [`AcpiGuest`]: a Linux guest booting a kernel directly (`kimchi_tests::guest`),
//!   which powers off on the ACPI power button and takes DHCP leases; slow to boot
//!   under TCG, so this file boots two of them.
//! - [`BareVm`]: a diskless guest with no OS defined with virsh; its BIOS sits idle,
//!   ignoring the power button. For the power actions and live changes.
//! - [`TemplateVm`]: a shut-off VM created from a template over REST (a virtio disk
//!   kimchid made, an IDE CD-ROM, a NIC on `default`). For NICs and drives.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    definition, dumpxml, expect, keys, ScratchDir, TemplateVm, TestNetwork, TestPool, Web,
    DEFAULT_POOL_DIR, VM_KEYS,
};
use kimchi_tests::guest;
use kimchi_tests::{
    define_domain, manager_call, unique_name, virsh, write_iso, Response, DATA_VOLUME_ID, READER,
};
use serde_json::{json, Value};

/// The keys of a NIC document, sorted.
const IFACE_KEYS: [&str; 5] = ["ips", "mac", "model", "network", "type"];
/// The keys of a drive document, sorted.
const STORAGE_KEYS: [&str; 5] = ["bus", "dev", "format", "path", "type"];
/// The keys of a task document, sorted.
const TASK_KEYS: [&str; 4] = ["id", "message", "status", "target_uri"];

/// How long a boot of the test guest may take (TCG on a busy 2-core machine).
const BOOT: Duration = Duration::from_secs(180);
/// How long a hot-plugged NIC may take to get a DHCP lease.
const LEASE: Duration = Duration::from_secs(180);
/// How long a live detach may take to complete (the guest has to let go).
const UNPLUG: Duration = Duration::from_secs(90);
/// A MAC no NIC of these tests has.
const UNKNOWN_MAC: &str = "52:54:00:fe:dc:ba";

// ---------------------------------------------------------------------------------
// Waiting

/// Calls `f` every half second until it returns `Some`, for at most `timeout`; panics
/// with `what` and the last value `f` saw otherwise.
#[track_caller]
fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut(&mut String) -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Some(v) = f(&mut last) {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {} s; last seen: {last}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------
// REST

fn vm_uri(name: &str) -> String {
    format!("/vms/{name}")
}

/// `POST /vms/:name/<action>` without a body.
fn act(web: &Web, name: &str, action: &str) -> Response {
    web.action(&format!("{}/{action}", vm_uri(name)))
}

/// `POST /vms/:name/<action>` with a JSON body.
fn act_with(web: &Web, name: &str, action: &str, body: &Value) -> Response {
    web.post(&format!("{}/{action}", vm_uri(name)), body)
}

/// A power action that must succeed: 200 with the VM in `state`, which GET and
/// libvirt then show too; returns the document.
#[track_caller]
fn power(web: &Web, name: &str, action: &str, state: &str) -> Value {
    let doc = expect(act(web, name, action), 200, action).json();
    check_vm_doc(&doc, name);
    assert_eq!(doc["state"], state, "{action}: {doc}");
    assert_eq!(get_vm(web, name)["state"], state, "GET after {action}");
    assert_eq!(domstate(name), virsh_state(state), "virsh after {action}");
    doc
}

fn put(web: &Web, uri: &str, body: &Value) -> Response {
    web.request("PUT", uri).json(body).send()
}

/// `PUT /vms/:name` that must succeed: 200 with the changed VM; returns it.
#[track_caller]
fn put_vm(web: &Web, name: &str, body: &Value) -> Value {
    let doc = expect(put(web, &vm_uri(name), body), 200, &format!("PUT {body}")).json();
    check_vm_doc(&doc, name);
    doc
}

/// `GET /vms/:name`, asserting 200 and the document's shape.
#[track_caller]
fn get_vm(web: &Web, name: &str) -> Value {
    let doc = expect(web.get(&vm_uri(name)), 200, "get the VM").json();
    check_vm_doc(&doc, name);
    doc
}

/// Asserts a VM document's keys and the types of the new ones.
#[track_caller]
fn check_vm_doc(doc: &Value, name: &str) {
    assert_eq!(keys(doc), VM_KEYS, "{doc}");
    assert_eq!(doc["name"], name, "{doc}");
    assert!(doc["cpus"].as_u64().is_some_and(|c| c >= 1), "{doc}");
    assert!(doc["autostart"].is_boolean(), "{doc}");
    assert!(doc["title"].is_string(), "{doc}");
    assert!(doc["description"].is_string(), "{doc}");
    assert!(doc["pending_changes"].is_boolean(), "{doc}");
}

/// The error document of a refusal with `status`, asserting that its reason contains
/// each of `parts`.
#[track_caller]
fn refused(resp: &Response, status: u16, parts: &[&str]) -> Value {
    let doc = resp.assert_error(status);
    let reason = doc["reason"].as_str().expect("reason");
    assert!(!reason.trim().is_empty(), "an empty reason: {doc}");
    for part in parts {
        assert!(reason.contains(part), "the reason lacks {part:?}: {doc}");
    }
    doc
}

/// A wrong-state refusal: 409, InvalidState, a sentence naming the VM and `why`.
#[track_caller]
fn wrong_state(resp: &Response, name: &str, why: &str) {
    let doc = refused(resp, 409, &[name, why]);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.InvalidState",
        "{doc}"
    );
}

// ---------------------------------------------------------------------------------
// libvirt's view

/// `virsh domstate`, e.g. `shut off`.
#[track_caller]
fn domstate(name: &str) -> String {
    virsh(&["domstate", name])
        .expect_ok()
        .stdout
        .trim()
        .to_owned()
}

/// The word virsh uses for Kimchi's state.
fn virsh_state(state: &str) -> &str {
    match state {
        "shutoff" => "shut off",
        other => other,
    }
}

/// Asserts the vCPUs and memory a domain's XML gives the guest.
#[track_caller]
fn assert_size(xml: &str, vcpus: u32, memory_mib: u64, what: &str) {
    let def = definition(xml);
    assert_eq!(def.vcpus, vcpus, "{what}: vCPUs in {def:?}");
    assert_eq!(def.memory_mib, memory_mib, "{what}: <memory> in {def:?}");
    if let Some(current) = def.current_memory_mib {
        assert_eq!(current, memory_mib, "{what}: <currentMemory> in {def:?}");
    }
}

/// `virsh dominfo`'s Autostart line.
#[track_caller]
fn autostart(name: &str) -> bool {
    let info = virsh(&["dominfo", name]).expect_ok().stdout;
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("Autostart:"))
        .unwrap_or_else(|| panic!("no Autostart in {info}"));
    match line.trim() {
        "enable" => true,
        "disable" => false,
        other => panic!("Autostart: {other}"),
    }
}

fn is_defined(name: &str) -> bool {
    virsh(&["dominfo", name]).ok
}

/// Everything libvirt holds for a domain that a request could change.
#[derive(Debug, PartialEq)]
struct Held {
    config: String,
    live: Option<String>,
    autostart: bool,
    state: String,
}

#[track_caller]
fn held(name: &str) -> Held {
    let state = domstate(name);
    Held {
        config: dumpxml(name, true),
        live: (state != "shut off").then(|| dumpxml(name, false)),
        autostart: autostart(name),
        state,
    }
}

/// Asserts that libvirt holds what it held `before` for `name`.
#[track_caller]
fn assert_unchanged(name: &str, before: &Held, what: &str) {
    let now = held(name);
    assert!(
        now == *before,
        "{what} changed the domain:\nbefore: {before:#?}\nafter: {now:#?}"
    );
}

/// One line of `virsh domiflist`.
#[derive(Debug, Clone, PartialEq)]
struct Nic {
    kind: String,
    source: String,
    model: String,
    mac: String,
}

/// `virsh domiflist [--inactive]`.
#[track_caller]
fn domiflist(name: &str, inactive: bool) -> Vec<Nic> {
    let mut args = vec!["domiflist", name];
    if inactive {
        args.push("--inactive");
    }
    let out = virsh(&args).expect_ok().stdout;
    // Interface  Type  Source  Model  MAC, under a line of dashes.
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() == 5)
        .map(|cols| Nic {
            kind: cols[1].to_owned(),
            source: cols[2].to_owned(),
            model: cols[3].to_owned(),
            mac: cols[4].to_lowercase(),
        })
        .collect()
}

/// The NIC with `mac` in `virsh domiflist [--inactive]`, if any.
fn nic(name: &str, inactive: bool, mac: &str) -> Option<Nic> {
    domiflist(name, inactive)
        .into_iter()
        .find(|n| n.mac == mac.to_lowercase())
}

/// The model the domain's XML gives the NIC `mac`.
#[track_caller]
fn nic_model_in_xml(xml: &str, mac: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("bad XML ({e}): {xml}"));
    let iface = doc
        .descendants()
        .filter(|n| n.has_tag_name("interface"))
        .find(|n| {
            n.children().any(|c| {
                c.has_tag_name("mac")
                    && c.attribute("address")
                        .is_some_and(|a| a.eq_ignore_ascii_case(mac))
            })
        })
        .unwrap_or_else(|| panic!("no interface {mac} in {xml}"));
    iface
        .children()
        .find(|c| c.has_tag_name("model"))
        .and_then(|m| m.attribute("type"))
        .map(str::to_owned)
}

/// `virsh domblklist [--inactive]`: target → source (`-` for an empty drive).
#[track_caller]
fn domblklist(name: &str, inactive: bool) -> BTreeMap<String, String> {
    let mut args = vec!["domblklist", name];
    if inactive {
        args.push("--inactive");
    }
    let out = virsh(&args).expect_ok().stdout;
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| {
            let l = l.trim();
            let (target, source) = l.split_once(char::is_whitespace)?;
            Some((target.to_owned(), source.trim().to_owned()))
        })
        .collect()
}

/// Host memory in MiB (`MemTotal`).
fn host_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib / 1024
}

// ---------------------------------------------------------------------------------
// Guests

/// A diskless guest with no OS, defined with virsh (64 MiB, 1 vCPU, ACPI on, VNC
/// without a port): its BIOS finds nothing to boot and sits there, ignoring the power
/// button. Deleted through kimchid, else with virsh, under every name it had.
struct BareVm {
    names: Vec<String>,
}

impl BareVm {
    /// Defines the guest and waits until `GET /vms/:name` shows it.
    #[track_caller]
    fn define(web: &Web, what: &str) -> BareVm {
        let name = unique_name(what);
        let xml = format!(
            "<domain type='qemu'>\
               <name>{name}</name>\
               <memory unit='MiB'>64</memory>\
               <vcpu>1</vcpu>\
               <os><type arch='x86_64' machine='pc'>hvm</type></os>\
               <features><acpi/><apic/></features>\
               <devices>\
                 <graphics type='vnc'><listen type='none'/></graphics>\
               </devices>\
             </domain>"
        );
        define_domain(&xml);
        let vm = BareVm { names: vec![name] };
        wait_until_listed(web, vm.name());
        vm
    }

    /// The name it has now.
    fn name(&self) -> &str {
        self.names.last().expect("a name")
    }

    /// Also cleans up `name` (what a rename may have called it).
    fn add(&mut self, name: &str) {
        self.names.push(name.to_owned());
    }
}

impl Drop for BareVm {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = manager_call("DeleteVM", "sa{sv}", &[name, "0"]);
            if is_defined(name) {
                let _ = virsh(&["destroy", name]);
                let _ = virsh(&["undefine", name]);
            }
        }
    }
}

/// Polls `GET /vms/:name` until kimchid knows the domain (defined with virsh).
#[track_caller]
fn wait_until_listed(web: &Web, name: &str) {
    wait_for(
        Duration::from_secs(15),
        "GET of a guest defined with virsh",
        |last| {
            let resp = web.get(&vm_uri(name));
            *last = format!("{resp:?}");
            (resp.status == 200).then_some(())
        },
    );
}

/// The volume kimchid made for `vm` in the default pool.
fn disk_volume(vm: &TemplateVm) -> String {
    format!("{}-0.img", vm.name())
}

/// The test guest of `kimchi_tests::guest` (a kernel that powers off on the ACPI
/// button, DHCP on every NIC), defined with virsh; deleted through kimchid (with any
/// volume kimchid made for it), else undefined, on drop.
struct AcpiGuest {
    name: String,
    log: String,
}

impl AcpiGuest {
    /// Defines the guest, its NIC on `network` if any, and waits until kimchid lists it.
    #[track_caller]
    fn define(web: &Web, what: &str, network: Option<&str>) -> AcpiGuest {
        guest::ensure_built();
        let name = unique_name(what);
        let log = guest::define(&name, network);
        let guest = AcpiGuest { name, log };
        wait_until_listed(web, &guest.name);
        guest
    }

    /// Starts it over REST and waits for the `ready` line of this boot.
    #[track_caller]
    fn start_and_wait(&self, web: &Web) {
        // A new QEMU may append to the log: emptied, it shows this boot's lines only.
        truncate_if_present(&self.log);
        power(web, &self.name, "start", "running");
        self.wait_ready(1);
    }

    /// Waits until the console has shown the ready line `count` times since the
    /// last start.
    #[track_caller]
    fn wait_ready(&self, count: usize) {
        assert!(
            guest::wait_for_marker(&self.log, guest::READY, count, BOOT),
            "{:?} not seen {count} times within {} s; the console's end:\n{}",
            guest::READY,
            BOOT.as_secs(),
            console_tail(&self.log)
        );
    }
}

/// The last 3000 characters of the guest's serial log.
fn console_tail(log: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.char_indices().rev().nth(3000).map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

/// Empties the file if it exists (a file that does not is left for QEMU or libvirt to
/// create with the owner they need).
fn truncate_if_present(path: &str) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path);
}

impl Drop for AcpiGuest {
    fn drop(&mut self) {
        // kimchid deletes any volume it made for the guest; undefine removes the
        // rest (the domain should kimchid have failed, the serial log).
        let _ = manager_call("DeleteVM", "sa{sv}", &[&self.name, "0"]);
        guest::undefine(&self.name);
    }
}

// ---------------------------------------------------------------------------------
// NICs and drives over REST

fn ifaces_uri(vm: &str) -> String {
    format!("{}/ifaces", vm_uri(vm))
}

fn iface_uri(vm: &str, mac: &str) -> String {
    format!("{}/{mac}", ifaces_uri(vm))
}

fn storages_uri(vm: &str) -> String {
    format!("{}/storages", vm_uri(vm))
}

fn storage_uri(vm: &str, dev: &str) -> String {
    format!("{}/{dev}", storages_uri(vm))
}

/// `GET /vms/:name/ifaces`, asserting 200 and each document's keys.
#[track_caller]
fn list_ifaces(web: &Web, vm: &str) -> Vec<Value> {
    let doc = expect(web.get(&ifaces_uri(vm)), 200, "list the NICs").json();
    let list = doc
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {doc}"))
        .clone();
    for nic in &list {
        assert_eq!(keys(nic), IFACE_KEYS, "{nic}");
    }
    list
}

#[track_caller]
fn get_iface(web: &Web, vm: &str, mac: &str) -> Value {
    let doc = expect(web.get(&iface_uri(vm, mac)), 200, "get the NIC").json();
    assert_eq!(keys(&doc), IFACE_KEYS, "{doc}");
    doc
}

/// `POST /vms/:name/ifaces` that must succeed: 201 with the NIC and its Location.
#[track_caller]
fn attach_iface(web: &Web, vm: &str, body: &Value) -> Value {
    let resp = expect(web.post(&ifaces_uri(vm), body), 201, "attach a NIC");
    let doc = resp.json();
    assert_eq!(keys(&doc), IFACE_KEYS, "{doc}");
    let mac = doc["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("no mac: {doc}"));
    // The colons may come percent-encoded; the URI names the NIC either way.
    let location = resp
        .header("location")
        .unwrap_or_else(|| panic!("no Location: {resp:?}"));
    assert_eq!(percent_decoded(location), iface_uri(vm, mac), "{resp:?}");
    let there = expect(web.get(location), 200, "GET the Location");
    assert_eq!(there.json()["mac"], mac, "{there:?}");
    doc
}

/// Attaches a NIC on `default` to the running guest `vm` and checks it is plugged in
/// live and kept in the definition, with nothing pending; its MAC.
#[track_caller]
fn plug_live(web: &Web, vm: &str) -> String {
    let plugged = attach_iface(web, vm, &json!({"type": "network", "network": "default"}));
    let mac = plugged["mac"].as_str().expect("mac").to_owned();
    assert!(nic(vm, false, &mac).is_some(), "not plugged live");
    assert!(nic(vm, true, &mac).is_some(), "not kept in the definition");
    assert_eq!(get_vm(web, vm)["pending_changes"], false);
    mac
}

/// `text` with its `%XX` escapes decoded.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 after decoding")
}

/// `GET /vms/:name/storages`, asserting 200 and each document's keys; by device.
#[track_caller]
fn list_storages(web: &Web, vm: &str) -> BTreeMap<String, Value> {
    let doc = expect(web.get(&storages_uri(vm)), 200, "list the drives").json();
    doc.as_array()
        .unwrap_or_else(|| panic!("not a list: {doc}"))
        .iter()
        .map(|d| {
            assert_eq!(keys(d), STORAGE_KEYS, "{d}");
            (d["dev"].as_str().expect("dev").to_owned(), d.clone())
        })
        .collect()
}

/// `POST /vms/:name/storages` that must succeed: 201 with the drive and its
/// Location; returns the drive.
#[track_caller]
fn attach_storage(web: &Web, vm: &str, body: &Value) -> Value {
    let resp = expect(
        web.post(&storages_uri(vm), body),
        201,
        &format!("attach {body}"),
    );
    let doc = resp.json();
    assert_eq!(keys(&doc), STORAGE_KEYS, "{doc}");
    let dev = doc["dev"]
        .as_str()
        .unwrap_or_else(|| panic!("no dev: {doc}"));
    assert_eq!(
        resp.header("location"),
        Some(storage_uri(vm, dev).as_str()),
        "{resp:?}"
    );
    doc
}

/// The `dev` of a drive document.
fn dev(doc: &Value) -> String {
    doc["dev"].as_str().expect("dev").to_owned()
}

/// Asserts `ips` holds IPv4 addresses only; whether it holds any.
#[track_caller]
fn has_ipv4(nic: &Value) -> bool {
    let ips = nic["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("ips is not a list: {nic}"));
    for ip in ips {
        let text = ip.as_str().unwrap_or_else(|| panic!("not a string: {nic}"));
        assert!(
            text.parse::<Ipv4Addr>().is_ok(),
            "not an IPv4 address: {nic}"
        );
    }
    !ips.is_empty()
}

/// Waits until the NIC `mac` has a DHCP lease over REST; its document.
#[track_caller]
fn wait_for_ip(web: &Web, vm: &str, mac: &str) -> Value {
    wait_for(LEASE, &format!("an IP for {mac}"), |last| {
        let nic = get_iface(web, vm, mac);
        *last = nic.to_string();
        has_ipv4(&nic).then_some(nic)
    })
}

/// A volume of the default pool the test creates over REST; deleted on drop.
struct DefaultVolume {
    name: String,
}

impl DefaultVolume {
    #[track_caller]
    fn create(web: &Web, what: &str) -> DefaultVolume {
        let volume = DefaultVolume {
            name: format!("{}.qcow2", unique_name(what)),
        };
        let body = json!({"name": volume.name, "capacity": 64, "format": "qcow2"});
        let resp = web.post("/storagepools/default/storagevolumes", &body);
        expect(resp, 201, "create a volume in the default pool");
        volume
    }

    fn path(&self) -> PathBuf {
        Path::new(DEFAULT_POOL_DIR).join(&self.name)
    }
}

impl Drop for DefaultVolume {
    fn drop(&mut self) {
        let _ = manager_call(
            "DeleteStorageVolume",
            "ssa{sv}",
            &["default", &self.name, "0"],
        );
        let _ = std::fs::remove_file(self.path());
    }
}

// ---------------------------------------------------------------------------------
// 1. Power actions

#[test]
fn every_power_action_and_its_wrong_state_refusal() {
    let web = Web::admin();
    let vm = BareVm::define(&web, "ops-power");
    let name = vm.name();
    let uri = vm_uri(name);

    // Shut off: only start is possible.
    let doc = get_vm(&web, name);
    assert_eq!(doc["state"], "shutoff", "{doc}");
    for action in ["suspend", "shutdown", "reboot"] {
        wrong_state(&act(&web, name, action), name, "not running");
    }
    wrong_state(&act(&web, name, "resume"), name, "not paused");
    for action in ["reset", "poweroff", "stop"] {
        let resp = act(&web, name, action);
        wrong_state(&resp, name, "");
    }
    assert_eq!(domstate(name), "shut off");

    // Running.
    power(&web, name, "start", "running");
    wrong_state(&act(&web, name, "start"), name, "running");
    wrong_state(&act(&web, name, "resume"), name, "not paused");

    // Suspend and resume.
    power(&web, name, "suspend", "paused");
    wrong_state(&act(&web, name, "suspend"), name, "");
    wrong_state(&act(&web, name, "reboot"), name, "");
    wrong_state(&act(&web, name, "shutdown"), name, "");
    power(&web, name, "resume", "running");

    // Reset, like the button: still running.
    power(&web, name, "reset", "running");

    // Nobody answers the power button: the shutdown task gives up after its
    // timeout, 409, and the guest keeps running.
    let before = held(name);
    let resp = act_with(&web, name, "shutdown", &json!({"timeout": 2}));
    refused(&resp, 409, &[]);
    assert_eq!(get_vm(&web, name)["state"], "running");
    assert_unchanged(name, &before, "a shutdown that timed out");

    // Out-of-range timeouts are refused before anything is asked of the guest.
    for timeout in [json!(0), json!(3601), json!("soon")] {
        let resp = act_with(&web, name, "shutdown", &json!({"timeout": timeout}));
        refused(&resp, 400, &[]);
    }
    assert_eq!(domstate(name), "running");

    // With force, it is powered off once the timeout has passed.
    let resp = act_with(
        &web,
        name,
        "shutdown",
        &json!({"timeout": 2, "force": true}),
    );
    let doc = expect(resp, 200, "forced shutdown").json();
    assert_eq!(doc["state"], "shutoff", "{doc}");
    assert_eq!(get_vm(&web, name)["state"], "shutoff");
    assert_eq!(domstate(name), "shut off");

    // poweroff and stop pull the plug.
    power(&web, name, "start", "running");
    power(&web, name, "poweroff", "shutoff");
    wrong_state(&act(&web, name, "poweroff"), name, "");
    power(&web, name, "start", "running");
    power(&web, name, "stop", "shutoff");

    // Unknown actions are not actions.
    let resp = web.action(&format!("{uri}/hibernate"));
    assert_eq!(resp.status, 404, "{resp:?}");
}

#[test]
fn acpi_guest_reboots_and_shuts_down_when_asked() {
    let web = Web::admin();
    let guest = AcpiGuest::define(&web, "ops-acpi", None);
    let name = guest.name.as_str();

    guest.start_and_wait(&web);

    // Reboot answers at once; the guest comes up a second time.
    let doc = expect(act(&web, name, "reboot"), 200, "reboot").json();
    check_vm_doc(&doc, name);
    assert_eq!(doc["state"], "running", "{doc}");
    guest.wait_ready(2);
    assert_eq!(get_vm(&web, name)["state"], "running");
    assert_eq!(domstate(name), "running");

    // Shutdown waits until the guest is off.
    let doc = expect(act(&web, name, "shutdown"), 200, "shutdown").json();
    check_vm_doc(&doc, name);
    assert_eq!(doc["state"], "shutoff", "{doc}");
    assert_eq!(get_vm(&web, name)["state"], "shutoff");
    assert_eq!(domstate(name), "shut off");
    wrong_state(&act(&web, name, "shutdown"), name, "not running");

    // With Prefer: respond-async, 202 and a task that finishes with the guest off.
    guest.start_and_wait(&web);
    let resp = web
        .request("POST", &format!("{}/shutdown", vm_uri(name)))
        .header("Prefer", "respond-async")
        .send();
    let resp = expect(resp, 202, "async shutdown");
    assert_eq!(resp.header("preference-applied"), Some("respond-async"));
    let task = resp.json();
    assert_eq!(keys(&task), TASK_KEYS, "{task}");
    assert_eq!(task["target_uri"], vm_uri(name), "{task}");
    let id = task["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id: {task}"));
    let location = format!("/tasks/{id}");
    assert_eq!(resp.header("location"), Some(location.as_str()), "{resp:?}");
    let ended = wait_for(BOOT, "the shutdown task's end", |last| {
        let doc = expect(web.get(&location), 200, "get the task").json();
        *last = doc.to_string();
        (doc["status"] != "running").then_some(doc)
    });
    assert_eq!(ended["status"], "finished", "{ended}");
    assert_eq!(ended["target_uri"], vm_uri(name), "{ended}");
    assert_eq!(get_vm(&web, name)["state"], "shutoff");
    assert_eq!(domstate(name), "shut off");
}

// ---------------------------------------------------------------------------------
// 2. PUT /vms/:name

#[test]
fn rename_of_a_shut_off_vm_is_303_and_of_a_running_or_to_a_taken_name_409() {
    let web = Web::admin();
    let mut vm = BareVm::define(&web, "ops-rename");
    let other = BareVm::define(&web, "ops-rename-other");
    let old = vm.name().to_owned();
    let uuid = get_vm(&web, &old)["uuid"].clone();

    // A name another VM has: 409, nothing changes.
    let before = held(&old);
    let resp = put(&web, &vm_uri(&old), &json!({"name": other.name()}));
    refused(&resp, 409, &[other.name()]);
    assert_unchanged(&old, &before, "a rename to a taken name");

    // Shut off: 303 to the new URI; the old one is gone.
    let new = unique_name("ops-renamed");
    vm.add(&new);
    let resp = put(&web, &vm_uri(&old), &json!({"name": new}));
    let resp = expect(resp, 303, "rename");
    assert_eq!(
        resp.header("location"),
        Some(vm_uri(&new).as_str()),
        "{resp:?}"
    );
    refused(&web.get(&vm_uri(&old)), 404, &[&old]);
    let doc = get_vm(&web, &new);
    assert_eq!(doc["uuid"], uuid, "the same VM: {doc}");
    assert!(is_defined(&new), "libvirt has no {new}");
    assert!(!is_defined(&old), "libvirt still has {old}");

    // Running: 409, nothing changes.
    power(&web, &new, "start", "running");
    let third = unique_name("ops-renamed");
    vm.add(&third);
    let before = held(&new);
    let resp = put(&web, &vm_uri(&new), &json!({"name": third}));
    wrong_state(&resp, &new, "");
    assert_unchanged(&new, &before, "a rename of a running VM");
    assert_eq!(get_vm(&web, &new)["name"], new.as_str());
    refused(&web.get(&vm_uri(&third)), 404, &[]);
    assert!(!is_defined(&third), "libvirt has {third}");
    power(&web, &new, "poweroff", "shutoff");
}

#[test]
fn edits_of_a_shut_off_vm_are_stored_by_libvirt() {
    let web = Web::admin();
    let vm = BareVm::define(&web, "ops-edit");
    let name = vm.name();
    let doc = get_vm(&web, name);
    assert_eq!(doc["cpus"], 1, "{doc}");
    assert_eq!(doc["memory"], 64, "{doc}");
    assert_eq!(doc["autostart"], false, "{doc}");
    assert_eq!(doc["title"], "", "{doc}");
    assert_eq!(doc["description"], "", "{doc}");
    assert_eq!(doc["pending_changes"], false, "{doc}");

    // Everything at once; markup and newlines arrive as they were sent.
    let title = "Web <server> & \"co\" é";
    let description = "line 1\nline 2\twith a tab & <markup>";
    let body = json!({
        "cpus": 2, "memory": 256, "title": title, "description": description,
        "autostart": true
    });
    let doc = put_vm(&web, name, &body);
    for (key, value) in [
        ("cpus", json!(2)),
        ("memory", json!(256)),
        ("title", json!(title)),
        ("description", json!(description)),
        ("autostart", json!(true)),
        ("pending_changes", json!(false)),
        ("state", json!("shutoff")),
    ] {
        assert_eq!(doc[key], value, "{key}: {doc}");
    }
    assert_eq!(get_vm(&web, name), doc, "GET shows what PUT answered");
    let xml = dumpxml(name, true);
    assert_size(&xml, 2, 256, "after the PUT");
    let def = definition(&xml);
    assert_eq!(def.title.as_deref(), Some(title), "{xml}");
    assert_eq!(def.description.as_deref(), Some(description), "{xml}");
    assert!(autostart(name), "dominfo shows Autostart: disable");

    // Only what is given changes.
    let doc = put_vm(&web, name, &json!({"memory": 128, "autostart": false}));
    assert_eq!(doc["memory"], 128, "{doc}");
    assert_eq!(doc["cpus"], 2, "{doc}");
    assert_eq!(doc["title"], title, "{doc}");
    assert_eq!(doc["autostart"], false, "{doc}");
    assert!(!autostart(name), "dominfo shows Autostart: enable");
    let xml = dumpxml(name, true);
    assert_size(&xml, 2, 128, "after the second PUT");
    assert_eq!(definition(&xml).title.as_deref(), Some(title), "{xml}");

    // Back to one CPU; an empty title and description clear them.
    let doc = put_vm(
        &web,
        name,
        &json!({"cpus": 1, "title": "", "description": ""}),
    );
    assert_eq!(doc["cpus"], 1, "{doc}");
    assert_eq!(doc["title"], "", "{doc}");
    assert_eq!(doc["description"], "", "{doc}");
    let def = definition(&dumpxml(name, true));
    assert_eq!(def.vcpus, 1, "{def:?}");
    assert!(def.title.unwrap_or_default().is_empty(), "title kept");
    assert!(
        def.description.unwrap_or_default().is_empty(),
        "description kept"
    );
}

#[test]
fn cpus_memory_and_nic_model_of_a_running_vm_wait_for_the_next_power_on() {
    let web = Web::admin();
    let vm = BareVm::define(&web, "ops-pending");
    let name = vm.name();
    power(&web, name, "start", "running");

    // A NIC hot-plugged into the running guest: live at once, nothing pending.
    let mac = plug_live(&web, name);

    // CPUs and memory: stored, pending; the guest keeps what it has.
    let doc = put_vm(&web, name, &json!({"cpus": 2, "memory": 128}));
    assert_eq!(doc["pending_changes"], true, "{doc}");
    assert_eq!(doc["cpus"], 1, "the guest has one CPU now: {doc}");
    let doc = get_vm(&web, name);
    assert_eq!(doc["pending_changes"], true, "{doc}");
    assert_eq!(doc["state"], "running", "{doc}");
    assert_size(&dumpxml(name, true), 2, 128, "the stored definition");
    assert_size(&dumpxml(name, false), 1, 64, "the running guest");

    // A title applies at once, to both.
    let doc = put_vm(&web, name, &json!({"title": "live title"}));
    assert_eq!(doc["title"], "live title", "{doc}");
    for inactive in [false, true] {
        let def = definition(&dumpxml(name, inactive));
        assert_eq!(def.title.as_deref(), Some("live title"), "{def:?}");
    }

    // A NIC model waits for the next power-on (the answer shows the NIC as the
    // guest has it now, like `cpus`).
    let resp = put(&web, &iface_uri(name, &mac), &json!({"model": "e1000"}));
    let doc = expect(resp, 200, "change the NIC's model").json();
    assert_eq!(doc["mac"], mac.as_str(), "{doc}");
    assert_eq!(get_vm(&web, name)["pending_changes"], true);
    assert_eq!(
        nic_model_in_xml(&dumpxml(name, true), &mac).as_deref(),
        Some("e1000")
    );
    assert_eq!(
        nic_model_in_xml(&dumpxml(name, false), &mac).as_deref(),
        Some("virtio")
    );

    // Off and on again: all of it is live, nothing pending.
    power(&web, name, "poweroff", "shutoff");
    power(&web, name, "start", "running");
    let doc = get_vm(&web, name);
    assert_eq!(doc["pending_changes"], false, "{doc}");
    assert_eq!(doc["cpus"], 2, "{doc}");
    assert_eq!(doc["memory"], 128, "{doc}");
    let live = dumpxml(name, false);
    assert_size(&live, 2, 128, "the guest after a power cycle");
    assert_eq!(nic_model_in_xml(&live, &mac).as_deref(), Some("e1000"));
    assert_eq!(get_iface(&web, name, &mac)["model"], "e1000");
    power(&web, name, "poweroff", "shutoff");
}

#[test]
fn cdrom_attached_to_a_running_vm_waits_for_the_next_power_on() {
    let web = Web::admin();
    let vm = BareVm::define(&web, "ops-pending-cd");
    let name = vm.name();
    let dir = ScratchDir::new("ops-pending-cd");
    let iso = dir.join("media.iso");
    write_iso(DATA_VOLUME_ID, false, &iso);
    let iso = iso.to_str().expect("utf-8 path").to_owned();
    power(&web, name, "start", "running");

    // An IDE CD-ROM cannot be hot-plugged: stored, pending.
    let resp = web.post(&storages_uri(name), &json!({"type": "cdrom", "path": iso}));
    let config = domblklist(name, true);
    assert_eq!(
        resp.status, 201,
        "attach a CD-ROM to a running VM: {resp:?}; the stored definition now has \
         {config:?}"
    );
    let drive = resp.json();
    let cdrom = dev(&drive);
    assert_eq!(drive["type"], "cdrom", "{drive}");
    assert_eq!(drive["path"], iso.as_str(), "{drive}");
    assert_eq!(drive["bus"], "ide", "{drive}");
    assert_eq!(config.get(&cdrom), Some(&iso));
    assert_eq!(domblklist(name, false).get(&cdrom), None, "plugged live");
    assert_eq!(get_vm(&web, name)["pending_changes"], true);

    // Off and on again: the guest has it, nothing pending.
    power(&web, name, "poweroff", "shutoff");
    power(&web, name, "start", "running");
    assert_eq!(get_vm(&web, name)["pending_changes"], false);
    assert_eq!(domblklist(name, false).get(&cdrom), Some(&iso));
    let drive = expect(web.get(&storage_uri(name, &cdrom)), 200, "get the drive").json();
    assert_eq!(drive["path"], iso.as_str(), "{drive}");
    power(&web, name, "poweroff", "shutoff");
}

#[test]
fn bad_edits_are_400_and_change_nothing() {
    let web = Web::admin();
    let vm = BareVm::define(&web, "ops-badput");
    let name = vm.name();
    // Some values to keep: a bad request must not touch them.
    put_vm(
        &web,
        name,
        &json!({"title": "kept", "description": "kept too"}),
    );
    let before_doc = get_vm(&web, name);
    let before = held(name);
    let beyond_host = host_memory_mib() + 1024;
    let cases: Vec<(&str, Value)> = vec![
        ("unknown field", json!({"foo": 1})),
        (
            "unknown field next to a good one",
            json!({"cpus": 2, "foo": 1}),
        ),
        ("cpus 0", json!({"cpus": 0})),
        ("cpus 256", json!({"cpus": 256})),
        ("cpus 100000", json!({"cpus": 100000})),
        ("cpus negative", json!({"cpus": -1})),
        ("memory 1", json!({"memory": 1})),
        ("memory 63", json!({"memory": 63})),
        ("memory beyond the host", json!({"memory": beyond_host})),
        (
            "memory bad next to good cpus",
            json!({"cpus": 2, "memory": 1}),
        ),
        ("name with a slash", json!({"name": "a/b"})),
        ("name with a control character", json!({"name": "a\u{1}b"})),
        ("empty name", json!({"name": ""})),
        ("title with a newline", json!({"title": "one\ntwo"})),
        ("title of 257 characters", json!({"title": "t".repeat(257)})),
        (
            "description with a bell",
            json!({"description": "ding\u{7}"}),
        ),
        (
            "description of 4097 characters",
            json!({"description": "d".repeat(4097)}),
        ),
        ("cpus as a word", json!({"cpus": "two"})),
        ("cpus as a fraction", json!({"cpus": 1.5})),
        ("memory as a boolean", json!({"memory": true})),
        ("autostart as a word", json!({"autostart": "yes"})),
        ("title as a number", json!({"title": 5})),
        ("name as a number", json!({"name": 7})),
        ("a list", json!([{"cpus": 2}])),
    ];
    for (what, body) in &cases {
        let resp = put(&web, &vm_uri(name), body);
        assert_eq!(resp.status, 400, "{what}: {body} → {resp:?}");
        refused(&resp, 400, &[]);
        assert_unchanged(name, &before, what);
    }
    // Not JSON at all.
    let resp = web
        .request("PUT", &vm_uri(name))
        .body("application/json", "{cpus: 2")
        .send();
    refused(&resp, 400, &[]);
    assert_unchanged(name, &before, "a body that is not JSON");
    assert_eq!(get_vm(&web, name), before_doc);
    assert!(!is_defined("a/b") && !is_defined("a\u{1}b"));
}

// ---------------------------------------------------------------------------------
// 3. NICs

/// Polls `GET /networks/:name` until it lists `vms` as the guests attached.
#[track_caller]
fn wait_for_network_vms(web: &Web, net: &TestNetwork, vms: Value) {
    wait_for(Duration::from_secs(10), "the network's guests", |last| {
        let doc = expect(web.get(&net.uri()), 200, "get the network").json();
        *last = doc.to_string();
        (doc["vms"] == vms).then_some(())
    });
}

#[test]
fn nics_of_a_shut_off_vm_are_listed_attached_changed_and_detached() {
    let web = Web::admin();
    let net = TestNetwork::planned("ops-nic-net");
    let body = json!({"name": net.name(), "connection": "isolated"});
    expect(
        web.post("/networks", &body),
        201,
        "create the isolated network",
    );
    expect(
        web.action(&format!("{}/activate", net.uri())),
        200,
        "activate the network",
    );
    let vm = TemplateVm::create(&web, "ops-nic");
    let name = vm.name();

    // The template's NIC.
    let list = list_ifaces(&web, name);
    assert_eq!(list.len(), 1, "{list:?}");
    let first = &list[0];
    let first_mac = first["mac"].as_str().expect("mac").to_owned();
    assert_eq!(first["type"], "network", "{first}");
    assert_eq!(first["network"], "default", "{first}");
    assert_eq!(first["model"], "virtio", "{first}");
    assert_eq!(
        first["ips"],
        json!([]),
        "a shut-off guest has no lease: {first}"
    );
    assert_eq!(get_iface(&web, name, &first_mac), *first);
    let listed = nic(name, true, &first_mac).expect("in domiflist");
    assert_eq!(
        (listed.kind.as_str(), listed.source.as_str()),
        ("network", "default")
    );

    // Attach: the model of the other NIC.
    let added = attach_iface(
        &web,
        name,
        &json!({"type": "network", "network": "default"}),
    );
    let mac = added["mac"].as_str().expect("mac").to_owned();
    assert_ne!(mac, first_mac);
    assert_eq!(added["type"], "network", "{added}");
    assert_eq!(added["network"], "default", "{added}");
    assert_eq!(added["model"], "virtio", "{added}");
    let listed = nic(name, true, &mac).expect("the new NIC in domiflist");
    assert_eq!(
        (
            listed.kind.as_str(),
            listed.source.as_str(),
            listed.model.as_str()
        ),
        ("network", "default", "virtio")
    );
    assert_eq!(list_ifaces(&web, name).len(), 2);

    // Another model, then another network.
    let resp = put(&web, &iface_uri(name, &mac), &json!({"model": "e1000"}));
    let doc = expect(resp, 200, "change the model").json();
    assert_eq!(doc["model"], "e1000", "{doc}");
    assert_eq!(
        nic_model_in_xml(&dumpxml(name, true), &mac).as_deref(),
        Some("e1000")
    );
    let resp = put(
        &web,
        &iface_uri(name, &mac),
        &json!({"network": net.name()}),
    );
    let doc = expect(resp, 200, "change the network").json();
    assert_eq!(doc["network"], net.name(), "{doc}");
    assert_eq!(doc["model"], "e1000", "{doc}");
    let listed = nic(name, true, &mac).expect("the NIC in domiflist");
    assert_eq!(listed.source, net.name(), "{listed:?}");
    assert_eq!(get_iface(&web, name, &mac), doc);
    wait_for_network_vms(&web, &net, json!([name]));

    // Refusals change nothing.
    let before = held(name);
    let missing_net = unique_name("no-net");
    let cases = [
        (
            "unknown network",
            web.post(
                &ifaces_uri(name),
                &json!({"type": "network", "network": missing_net}),
            ),
            400,
        ),
        (
            "type bridge",
            web.post(
                &ifaces_uri(name),
                &json!({"type": "bridge", "network": "default"}),
            ),
            400,
        ),
        (
            "no type",
            web.post(&ifaces_uri(name), &json!({"network": "default"})),
            400,
        ),
        (
            "PUT to an unknown network",
            put(
                &web,
                &iface_uri(name, &mac),
                &json!({"network": missing_net}),
            ),
            400,
        ),
        (
            "PUT of an unknown field",
            put(&web, &iface_uri(name, &mac), &json!({"type": "bridge"})),
            400,
        ),
        (
            "GET of an unknown MAC",
            web.get(&iface_uri(name, UNKNOWN_MAC)),
            404,
        ),
        (
            "PUT of an unknown MAC",
            put(
                &web,
                &iface_uri(name, UNKNOWN_MAC),
                &json!({"model": "e1000"}),
            ),
            404,
        ),
        (
            "DELETE of an unknown MAC",
            web.delete(&iface_uri(name, UNKNOWN_MAC)),
            404,
        ),
    ];
    for (what, resp, status) in cases {
        assert_eq!(resp.status, status, "{what}: {resp:?}");
        refused(&resp, status, &[]);
        assert_unchanged(name, &before, what);
    }
    assert_eq!(list_ifaces(&web, name).len(), 2);

    // Detach.
    let resp = expect(web.delete(&iface_uri(name, &mac)), 204, "detach the NIC");
    assert!(resp.body.is_empty(), "{resp:?}");
    assert!(nic(name, true, &mac).is_none(), "still in domiflist");
    refused(&web.get(&iface_uri(name, &mac)), 404, &[]);
    let list = list_ifaces(&web, name);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["mac"], first_mac.as_str());
    wait_for_network_vms(&web, &net, json!([]));
}

// ---------------------------------------------------------------------------------
// 4. Drives

#[test]
fn cdroms_of_a_shut_off_vm_are_attached_changed_ejected_and_detached() {
    let web = Web::admin();
    let pool = TestPool::active("ops-cd-pool", &web);
    let vm = TemplateVm::create(&web, "ops-cd");
    let name = vm.name();
    let first = vm.dir.join("first.iso");
    write_iso(DATA_VOLUME_ID, false, &first);
    let first = first.to_str().expect("utf-8 path").to_owned();
    // An ISO in a pool, named as the kimchi_isos view names it.
    let pooled = pool.file("pooled.iso");
    write_iso(DATA_VOLUME_ID, false, &pooled);
    pool.volume_names(&web); // the pool looks at its directory again
    let pooled = pooled.to_str().expect("utf-8 path").to_owned();
    let pooled_volume = format!("{}:pooled.iso", pool.name);

    // The template's drives.
    let drives = list_storages(&web, name);
    let template_iso = vm.iso.to_str().expect("utf-8 path");
    let disk = &drives["vda"];
    assert_eq!(disk["type"], "disk", "{disk}");
    assert_eq!(disk["bus"], "virtio", "{disk}");
    assert_eq!(disk["format"], "qcow2", "{disk}");
    assert_eq!(
        disk["path"],
        Path::new(DEFAULT_POOL_DIR)
            .join(disk_volume(&vm))
            .to_str()
            .unwrap(),
        "{disk}"
    );
    let cd = &drives["hdc"];
    assert_eq!(cd["type"], "cdrom", "{cd}");
    assert_eq!(cd["bus"], "ide", "{cd}");
    assert_eq!(cd["path"], template_iso, "{cd}");
    let one = expect(web.get(&storage_uri(name, "hdc")), 200, "get hdc").json();
    assert_eq!(one, *cd);

    // Attach a second CD-ROM.
    let drive = attach_storage(&web, name, &json!({"type": "cdrom", "path": first}));
    let cdrom = dev(&drive);
    assert!(!drives.contains_key(&cdrom), "{cdrom} was taken: {drive}");
    assert_eq!(drive["type"], "cdrom", "{drive}");
    assert_eq!(drive["bus"], "ide", "{drive}");
    assert_eq!(drive["path"], first.as_str(), "{drive}");
    assert_eq!(domblklist(name, true).get(&cdrom), Some(&first));

    // Change the medium, by pool volume name.
    let resp = put(
        &web,
        &storage_uri(name, &cdrom),
        &json!({"path": pooled_volume}),
    );
    let doc = expect(resp, 200, "change the medium").json();
    assert_eq!(doc["path"], pooled.as_str(), "{doc}");
    assert_eq!(domblklist(name, true).get(&cdrom), Some(&pooled));

    // By path again.
    let resp = put(&web, &storage_uri(name, &cdrom), &json!({"path": first}));
    let doc = expect(resp, 200, "change the medium back").json();
    assert_eq!(doc["path"], first.as_str(), "{doc}");
    assert_eq!(domblklist(name, true).get(&cdrom), Some(&first));

    // Eject.
    let resp = put(&web, &storage_uri(name, &cdrom), &json!({"path": ""}));
    let doc = expect(resp, 200, "eject").json();
    assert_eq!(doc["path"], "", "{doc}");
    assert_eq!(
        domblklist(name, true).get(&cdrom).map(String::as_str),
        Some("-")
    );
    let doc = expect(web.get(&storage_uri(name, &cdrom)), 200, "get the drive").json();
    assert_eq!(doc["path"], "", "{doc}");

    // Refusals change nothing.
    let before = held(name);
    let missing = vm.dir.join("missing.iso");
    let cases = [
        (
            "a file that is not an ISO",
            web.post(
                &storages_uri(name),
                &json!({"type": "cdrom", "path": "/etc/hostname"}),
            ),
            400,
        ),
        (
            "a path that does not exist",
            web.post(
                &storages_uri(name),
                &json!({"type": "cdrom", "path": missing}),
            ),
            400,
        ),
        (
            "a relative path",
            web.post(
                &storages_uri(name),
                &json!({"type": "cdrom", "path": "first.iso"}),
            ),
            400,
        ),
        (
            "an unknown type",
            web.post(
                &storages_uri(name),
                &json!({"type": "floppy", "path": first}),
            ),
            400,
        ),
        (
            "a medium that is not an ISO",
            put(
                &web,
                &storage_uri(name, &cdrom),
                &json!({"path": "/etc/hostname"}),
            ),
            400,
        ),
        (
            "an unknown field",
            put(
                &web,
                &storage_uri(name, &cdrom),
                &json!({"path": first, "bus": "sata"}),
            ),
            400,
        ),
        (
            "a medium for a disk",
            put(&web, &storage_uri(name, "vda"), &json!({"path": first})),
            409,
        ),
        (
            "GET of an unknown dev",
            web.get(&storage_uri(name, "sdz")),
            404,
        ),
        (
            "PUT of an unknown dev",
            put(&web, &storage_uri(name, "sdz"), &json!({"path": first})),
            404,
        ),
        (
            "DELETE of an unknown dev",
            web.delete(&storage_uri(name, "sdz")),
            404,
        ),
    ];
    for (what, resp, status) in cases {
        assert_eq!(resp.status, status, "{what}: {resp:?}");
        refused(&resp, status, &[]);
        assert_unchanged(name, &before, what);
    }

    // Detach: the drive goes, the ISO stays.
    let resp = expect(
        web.delete(&storage_uri(name, &cdrom)),
        204,
        "detach the CD-ROM",
    );
    assert!(resp.body.is_empty(), "{resp:?}");
    assert!(
        !domblklist(name, true).contains_key(&cdrom),
        "still in domblklist"
    );
    refused(&web.get(&storage_uri(name, &cdrom)), 404, &[]);
    assert!(Path::new(&first).is_file(), "the ISO was deleted");
    assert_eq!(
        list_storages(&web, name).keys().collect::<Vec<_>>(),
        ["hdc", "vda"]
    );
}

#[test]
fn disks_of_a_shut_off_vm_from_volumes_or_by_size_and_what_detach_deletes() {
    let web = Web::admin();
    let pool = TestPool::active("ops-disk-pool", &web);
    let vm = TemplateVm::create(&web, "ops-disk");
    let name = vm.name();
    let other = BareVm::define(&web, "ops-disk-other");
    let volume = DefaultVolume::create(&web, "ops-disk-vol");
    let iso = pool.file("image.iso");
    write_iso(DATA_VOLUME_ID, false, &iso);
    pool.volume_names(&web);

    // An existing volume.
    let body = json!({"type": "disk", "pool": "default", "vol": volume.name});
    let existing = attach_storage(&web, name, &body);
    let existing_dev = dev(&existing);
    let existing_path = volume.path().to_str().expect("utf-8 path").to_owned();
    assert_eq!(existing["type"], "disk", "{existing}");
    assert_eq!(
        existing["bus"], "virtio",
        "the bus of the other disk: {existing}"
    );
    assert_eq!(existing["format"], "qcow2", "{existing}");
    assert_eq!(existing["path"], existing_path.as_str(), "{existing}");
    assert_eq!(
        domblklist(name, true).get(&existing_dev),
        Some(&existing_path)
    );

    // A new volume of 1 GiB in the default pool, made for this VM.
    let sized = attach_storage(
        &web,
        name,
        &json!({"type": "disk", "pool": "default", "size": 1}),
    );
    let sized_dev = dev(&sized);
    assert_ne!(sized_dev, existing_dev);
    assert_eq!(sized["bus"], "virtio", "{sized}");
    let sized_path = PathBuf::from(sized["path"].as_str().expect("path"));
    assert!(
        sized_path.starts_with(DEFAULT_POOL_DIR) && sized_path.is_file(),
        "{sized}"
    );
    let info = common::qemu_img_info(&sized_path);
    assert_eq!(info["virtual-size"], 1u64 << 30, "{info}");
    assert_eq!(
        domblklist(name, true).get(&sized_dev).map(PathBuf::from),
        Some(sized_path.clone())
    );

    // Refusals change nothing, here and on the other VM.
    let before = held(name);
    let other_before = held(other.name());
    let storages = storages_uri(name);
    let cases = [
        (
            "a volume another VM uses",
            web.post(
                &storages_uri(other.name()),
                &json!({"type": "disk", "pool": "default", "vol": disk_volume(&vm)}),
            ),
            409,
        ),
        (
            "an unknown pool",
            web.post(
                &storages,
                &json!({"type": "disk", "pool": unique_name("no-pool"), "vol": volume.name}),
            ),
            400,
        ),
        (
            "an unknown volume",
            web.post(
                &storages,
                &json!({"type": "disk", "pool": "default", "vol": unique_name("no-vol")}),
            ),
            400,
        ),
        (
            "an unknown pool for a new volume",
            web.post(
                &storages,
                &json!({"type": "disk", "pool": unique_name("no-pool"), "size": 1}),
            ),
            400,
        ),
        (
            "an ISO image as a disk",
            web.post(
                &storages,
                &json!({"type": "disk", "pool": pool.name, "vol": "image.iso"}),
            ),
            400,
        ),
        (
            "size 0",
            web.post(
                &storages,
                &json!({"type": "disk", "pool": "default", "size": 0}),
            ),
            400,
        ),
        (
            "size 65537",
            web.post(
                &storages,
                &json!({"type": "disk", "pool": "default", "size": 65537}),
            ),
            400,
        ),
        (
            "neither volume nor size",
            web.post(&storages, &json!({"type": "disk", "pool": "default"})),
            400,
        ),
        (
            "a medium for a disk",
            put(
                &web,
                &storage_uri(name, &existing_dev),
                &json!({"path": ""}),
            ),
            409,
        ),
    ];
    for (what, resp, status) in cases {
        assert_eq!(resp.status, status, "{what}: {resp:?}");
        refused(&resp, status, &[]);
        assert_unchanged(name, &before, what);
        assert_unchanged(other.name(), &other_before, what);
    }

    // Detach: the existing volume stays, the one made for the VM goes.
    expect(
        web.delete(&storage_uri(name, &existing_dev)),
        204,
        "detach the volume",
    );
    assert!(!domblklist(name, true).contains_key(&existing_dev));
    assert!(volume.path().is_file(), "the volume was deleted");
    expect(
        web.get(&format!(
            "/storagepools/default/storagevolumes/{}",
            volume.name
        )),
        200,
        "the volume is still in the pool",
    );
    expect(
        web.delete(&storage_uri(name, &sized_dev)),
        204,
        "detach the new volume",
    );
    assert!(!domblklist(name, true).contains_key(&sized_dev));
    assert!(!sized_path.exists(), "{} left behind", sized_path.display());
    let file = sized_path.file_name().unwrap().to_str().unwrap();
    let resp = web.get(&format!("/storagepools/default/storagevolumes/{file}"));
    refused(&resp, 404, &[]);
    assert_eq!(
        list_storages(&web, name).keys().collect::<Vec<_>>(),
        ["hdc", "vda"]
    );
}

// ---------------------------------------------------------------------------------
// 5. A running guest gets NICs and disks at once

#[test]
fn running_acpi_guest_gets_nics_with_leases_and_disks_plugged_live() {
    let web = Web::admin();
    let guest = AcpiGuest::define(&web, "ops-hotplug", Some("default"));
    let name = guest.name.as_str();
    guest.start_and_wait(&web);

    // Its NIC, with a lease from the default network.
    let list = list_ifaces(&web, name);
    assert_eq!(list.len(), 1, "{list:?}");
    let first = list[0]["mac"].as_str().expect("mac").to_owned();
    assert_eq!(list[0]["type"], "network", "{list:?}");
    assert_eq!(list[0]["network"], "default", "{list:?}");
    assert_eq!(list[0]["model"], "virtio", "{list:?}");
    wait_for_ip(&web, name, &first);

    // A NIC plugged in live: the guest takes a lease on it too.
    let mac = plug_live(&web, name);
    wait_for_ip(&web, name, &mac);
    let listed = list_ifaces(&web, name);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(has_ipv4),
        "a NIC without an address: {listed:?}"
    );

    // A disk plugged in live: virtio, as the guest has no other disk.
    let disk = attach_storage(
        &web,
        name,
        &json!({"type": "disk", "pool": "default", "size": 1}),
    );
    let disk_dev = dev(&disk);
    let disk_path = disk["path"].as_str().expect("path").to_owned();
    assert_eq!(disk["bus"], "virtio", "{disk}");
    assert_eq!(domblklist(name, false).get(&disk_dev), Some(&disk_path));
    assert_eq!(domblklist(name, true).get(&disk_dev), Some(&disk_path));
    assert_eq!(get_vm(&web, name)["pending_changes"], false);

    // Both unplugged live; the disk made for the guest is deleted.
    expect(
        web.delete(&storage_uri(name, &disk_dev)),
        204,
        "detach the disk",
    );
    assert!(!domblklist(name, true).contains_key(&disk_dev));
    wait_for(UNPLUG, "the disk unplugged", |last| {
        let live = domblklist(name, false);
        *last = format!("{live:?}");
        (!live.contains_key(&disk_dev)).then_some(())
    });
    wait_for(UNPLUG, "the disk's volume deleted", |last| {
        *last = disk_path.clone();
        (!Path::new(&disk_path).exists()).then_some(())
    });
    expect(web.delete(&iface_uri(name, &mac)), 204, "detach the NIC");
    assert!(nic(name, true, &mac).is_none(), "still in the definition");
    wait_for(UNPLUG, "the NIC unplugged", |last| {
        let live = domiflist(name, false);
        *last = format!("{live:?}");
        live.iter().all(|n| n.mac != mac).then_some(())
    });
    let doc = get_vm(&web, name);
    assert_eq!(doc["state"], "running", "{doc}");
    assert_eq!(doc["pending_changes"], false, "{doc}");
    assert_eq!(list_ifaces(&web, name).len(), 1);
}

// ---------------------------------------------------------------------------------
// 6. Readers, unknown VMs

#[test]
fn reader_may_read_nics_and_drives_but_change_nothing() {
    let web = Web::admin();
    let reader = Web::login(READER);
    let vm = TemplateVm::create(&web, "ops-reader");
    let name = vm.name();
    let mac = list_ifaces(&web, name)[0]["mac"]
        .as_str()
        .expect("mac")
        .to_owned();

    for uri in [
        vm_uri(name),
        ifaces_uri(name),
        iface_uri(name, &mac),
        storages_uri(name),
        storage_uri(name, "hdc"),
    ] {
        assert_eq!(
            expect(reader.get(&uri), 200, &format!("reader GET {uri}")).json(),
            expect(web.get(&uri), 200, &format!("admin GET {uri}")).json(),
            "{uri}"
        );
    }

    let before = held(name);
    let iso = vm.iso.to_str().expect("utf-8 path");
    let mut refusals: Vec<(String, Response)> = [
        "start", "stop", "poweroff", "shutdown", "reboot", "reset", "suspend", "resume",
    ]
    .iter()
    .map(|action| (action.to_string(), act(&reader, name, action)))
    .collect();
    refusals.extend([
        (
            "PUT".into(),
            put(&reader, &vm_uri(name), &json!({"title": "mine"})),
        ),
        (
            "PUT name".into(),
            put(
                &reader,
                &vm_uri(name),
                &json!({"name": unique_name("ops-reader")}),
            ),
        ),
        (
            "POST ifaces".into(),
            reader.post(
                &ifaces_uri(name),
                &json!({"type": "network", "network": "default"}),
            ),
        ),
        (
            "PUT iface".into(),
            put(&reader, &iface_uri(name, &mac), &json!({"model": "e1000"})),
        ),
        ("DELETE iface".into(), reader.delete(&iface_uri(name, &mac))),
        (
            "POST storages".into(),
            reader.post(&storages_uri(name), &json!({"type": "cdrom", "path": iso})),
        ),
        (
            "PUT storage".into(),
            put(&reader, &storage_uri(name, "hdc"), &json!({"path": ""})),
        ),
        (
            "DELETE storage".into(),
            reader.delete(&storage_uri(name, "hdc")),
        ),
    ]);
    for (what, resp) in refusals {
        let doc = resp.assert_error(403);
        assert_eq!(
            doc["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
            "{what}: {doc}"
        );
        assert_unchanged(name, &before, &what);
    }
}

#[test]
fn unknown_vm_is_404_for_every_new_request() {
    let web = Web::admin();
    let name = unique_name("ops-no-vm");
    let mut cases: Vec<(String, Response)> = [
        "shutdown", "reboot", "reset", "suspend", "resume", "poweroff",
    ]
    .iter()
    .map(|action| (action.to_string(), act(&web, &name, action)))
    .collect();
    cases.extend([
        (
            "PUT".into(),
            put(&web, &vm_uri(&name), &json!({"title": "x"})),
        ),
        ("GET ifaces".into(), web.get(&ifaces_uri(&name))),
        (
            "POST ifaces".into(),
            web.post(
                &ifaces_uri(&name),
                &json!({"type": "network", "network": "default"}),
            ),
        ),
        ("GET iface".into(), web.get(&iface_uri(&name, UNKNOWN_MAC))),
        ("GET storages".into(), web.get(&storages_uri(&name))),
        (
            "POST storages".into(),
            web.post(
                &storages_uri(&name),
                &json!({"type": "disk", "pool": "default", "size": 1}),
            ),
        ),
        (
            "DELETE storage".into(),
            web.delete(&storage_uri(&name, "vda")),
        ),
    ]);
    for (what, resp) in cases {
        assert_eq!(resp.status, 404, "{what}: {resp:?}");
        let doc = refused(&resp, 404, &[&name]);
        assert_eq!(
            doc["error"], "org.kimchi.Kimchi1.Error.NotFound",
            "{what}: {doc}"
        );
    }
    assert!(!is_defined(&name));
}
