//! kimchid as busctl and D-Bus clients see it on the system bus.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use kimchi_dbus::{
    CallOptions, Error, ManagerProxy, TaskState, VmState, BUS_NAME, MANAGER_INTERFACE,
    MANAGER_PATH, ROOT_PATH, SESSIONS_PATH, STORAGE_POOL_INTERFACE, TASK_INTERFACE,
    TEMPLATE_INTERFACE, VM_INTERFACE,
};
use kimchi_tests::{
    busctl, gdbus_call, lookup_vm_path, manager_call, manager_json, poll, run, system_bus,
    task_from_busctl, unique_name, vm_property, Ran, TestVm,
};
use zbus::fdo::{IntrospectableProxy, PropertiesProxy};
use zbus::{OwnedVariant, Variant};

#[test]
fn busctl_introspect_shows_the_manager_interface() {
    let out = busctl(&["introspect", BUS_NAME, MANAGER_PATH]).expect_ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(MANAGER_INTERFACE) && l.contains("interface")),
        "{}",
        out.stdout
    );
}

// --- The checked-in introspection file ------------------------------------------------

/// An interface reduced to what callers depend on: no comments, no order, no layout.
#[derive(Debug, Default, PartialEq, Eq)]
struct Interface {
    annotations: BTreeMap<String, String>,
    methods: BTreeMap<String, Member>,
    signals: BTreeMap<String, Member>,
    properties: BTreeMap<String, Property>,
}

#[derive(Debug, PartialEq, Eq)]
struct Member {
    /// (name, type, direction), in order: the order is part of the signature.
    args: Vec<(String, String, String)>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, Eq)]
struct Property {
    ty: String,
    access: String,
    annotations: BTreeMap<String, String>,
}

fn attr(node: roxmltree::Node, name: &str) -> String {
    node.attribute(name).unwrap_or_default().to_owned()
}

fn annotations(node: roxmltree::Node) -> BTreeMap<String, String> {
    node.children()
        .filter(|c| c.has_tag_name("annotation"))
        .map(|a| (attr(a, "name"), attr(a, "value")))
        .collect()
}

fn member(node: roxmltree::Node, default_direction: &str) -> Member {
    let args = node
        .children()
        .filter(|c| c.has_tag_name("arg"))
        .map(|a| {
            let direction = a.attribute("direction").unwrap_or(default_direction);
            (attr(a, "name"), attr(a, "type"), direction.to_owned())
        })
        .collect();
    Member {
        args,
        annotations: annotations(node),
    }
}

fn interface(node: roxmltree::Node) -> Interface {
    let mut iface = Interface {
        annotations: annotations(node),
        ..Interface::default()
    };
    for child in node.children().filter(|c| c.is_element()) {
        let name = attr(child, "name");
        match child.tag_name().name() {
            "method" => {
                iface.methods.insert(name, member(child, "in"));
            }
            "signal" => {
                iface.signals.insert(name, member(child, "out"));
            }
            "property" => {
                let property = Property {
                    ty: attr(child, "type"),
                    access: attr(child, "access"),
                    annotations: annotations(child),
                };
                iface.properties.insert(name, property);
            }
            _ => {}
        }
    }
    iface
}

/// The `org.kimchi.Kimchi1.*` interfaces of an introspection document, by name, with
/// their source text.
fn kimchi_interfaces(xml: &str) -> BTreeMap<String, (Interface, String)> {
    let doc = roxmltree::Document::parse_with_options(
        xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("bad introspection XML ({e}):\n{xml}"));
    doc.root_element()
        .children()
        .filter(|c| c.has_tag_name("interface"))
        .filter(|c| attr(*c, "name").starts_with("org.kimchi.Kimchi1."))
        .map(|c| (attr(c, "name"), (interface(c), xml[c.range()].to_owned())))
        .collect()
}

async fn introspect(conn: &zbus::Connection, path: &str) -> String {
    IntrospectableProxy::builder(conn)
        .destination(BUS_NAME)
        .path(path)
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap_or_else(|e| panic!("Introspect {path}: {e}"))
}

/// A template with every default, created through the bus and deleted on drop.
struct BusTemplate {
    name: String,
    path: String,
}

impl BusTemplate {
    fn create(what: &str) -> BusTemplate {
        let name = unique_name(what);
        // (sassssutsa(uts)) spec: name, no folder, no icon, OS, cpus, memory, cdrom, disks.
        let reply = manager_json(
            "CreateTemplate",
            "(sassssutsa(uts))a{sv}",
            &[&name, "0", "", "", "", "0", "0", "", "0", "0"],
        );
        let path = reply[0]
            .as_str()
            .unwrap_or_else(|| panic!("no object path in the reply {reply}"))
            .to_owned();
        BusTemplate { name, path }
    }
}

impl Drop for BusTemplate {
    fn drop(&mut self) {
        manager_call("DeleteTemplate", "sa{sv}", &[&self.name, "0"]);
    }
}

/// A dir pool under /tmp created through the bus, active, with the volumes the test
/// made in it; volumes, pool and directory are removed on drop.
struct BusPool {
    name: String,
    dir: PathBuf,
    /// The pool's object path, from the CreateStoragePool reply.
    path: String,
    volumes: Vec<String>,
}

impl BusPool {
    fn create(what: &str) -> BusPool {
        let name = unique_name(what);
        let dir = std::env::temp_dir().join(&name);
        let mut pool = BusPool {
            dir: dir.clone(),
            path: String::new(),
            volumes: Vec::new(),
            name,
        };
        // (sssssas) spec: name, type, path, source host, source path, no devices.
        let reply = manager_json(
            "CreateStoragePool",
            "(sssssas)a{sv}",
            &[&pool.name, "dir", dir.to_str().unwrap(), "", "", "0", "0"],
        );
        pool.path = reply[0]
            .as_str()
            .unwrap_or_else(|| panic!("no object path in the reply {reply}"))
            .to_owned();
        manager_json("ActivateStoragePool", "sa{sv}", &[&pool.name, "0"]);
        pool
    }

    /// Creates a 1 MiB raw volume, waiting for its task; returns the task's path.
    fn create_volume(&mut self, name: &str) -> String {
        self.volumes.push(name.to_owned());
        let task = task_from_busctl(&manager_json(
            "CreateStorageVolume",
            "s(stts)a{sv}",
            &[
                &self.name,
                name,
                "1",
                "0",
                "raw",
                "1",
                kimchi_dbus::OPT_WAIT,
                "b",
                "true",
            ],
        ));
        assert_eq!(task.state, TaskState::Finished, "{task:?}");
        task.path.to_string()
    }
}

impl Drop for BusPool {
    fn drop(&mut self) {
        for volume in &self.volumes {
            manager_call("DeleteStorageVolume", "ssa{sv}", &[&self.name, volume, "0"]);
        }
        manager_call("DeactivateStoragePool", "sa{sv}", &[&self.name, "0"]);
        manager_call("DeleteStoragePool", "sa{sv}", &[&self.name, "0"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Compares `dbus/org.kimchi.Kimchi1.xml` with the live daemon; with `KIMCHI_BLESS=1`
/// it rewrites the file from the live daemon instead. The objects introspected carry
/// every kimchi interface: Manager, Sessions, a VM, a template, a storage pool and a
/// task.
#[tokio::test(flavor = "multi_thread")]
async fn checked_in_introspection_matches_the_running_daemon() {
    let vm = TestVm::define("introspect");
    let vm_path = lookup_vm_path(&vm.name);
    let mut pool = BusPool::create("introspect");
    let task_path = pool.create_volume("introspect.img");
    let template = BusTemplate::create("introspect");
    let conn = system_bus().await;
    let mut live = BTreeMap::new();
    for path in [
        MANAGER_PATH,
        SESSIONS_PATH,
        &vm_path,
        &template.path,
        &pool.path,
        &task_path,
    ] {
        live.extend(kimchi_interfaces(&introspect(&conn, path).await));
    }
    for name in [
        MANAGER_INTERFACE,
        VM_INTERFACE,
        TEMPLATE_INTERFACE,
        kimchi_dbus::SESSIONS_INTERFACE,
        STORAGE_POOL_INTERFACE,
        TASK_INTERFACE,
    ] {
        assert!(
            live.contains_key(name),
            "{name} missing from the live daemon"
        );
    }

    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dbus/org.kimchi.Kimchi1.xml");
    if std::env::var("KIMCHI_BLESS").as_deref() == Ok("1") {
        let mut out = String::from(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n",
        );
        for (_, text) in live.values() {
            out.push_str("  ");
            out.push_str(text);
            out.push('\n');
        }
        out.push_str("</node>\n");
        std::fs::write(&file, out).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (run with KIMCHI_BLESS=1)", file.display()));
    let checked_in: BTreeMap<_, _> = kimchi_interfaces(&text)
        .into_iter()
        .map(|(k, (iface, _))| (k, iface))
        .collect();
    let live: BTreeMap<_, _> = live.into_iter().map(|(k, (iface, _))| (k, iface)).collect();
    let mut diffs = Vec::new();
    compare(
        "",
        &checked_in,
        &live,
        &mut diffs,
        |name, file, live, diffs| {
            let prefix = format!("{name}.");
            if file.annotations != live.annotations {
                diffs.push(format!(
                    "{name} annotations: file {:?}, live {:?}",
                    file.annotations, live.annotations
                ));
            }
            compare(&prefix, &file.methods, &live.methods, diffs, report);
            compare(&prefix, &file.signals, &live.signals, diffs, report);
            compare(&prefix, &file.properties, &live.properties, diffs, report);
        },
    );
    assert!(
        diffs.is_empty(),
        "dbus/org.kimchi.Kimchi1.xml differs from the running daemon \
         (re-bless with KIMCHI_BLESS=1 if the change is intended):\n{}",
        diffs.join("\n")
    );
}

/// Walks two maps by name, noting what only one side has and handing pairs to `both`.
fn compare<T>(
    prefix: &str,
    file: &BTreeMap<String, T>,
    live: &BTreeMap<String, T>,
    diffs: &mut Vec<String>,
    both: impl Fn(&str, &T, &T, &mut Vec<String>),
) {
    for name in file
        .keys()
        .chain(live.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (file.get(name), live.get(name)) {
            (Some(f), Some(l)) => both(&format!("{prefix}{name}"), f, l, diffs),
            (Some(_), None) => diffs.push(format!("{prefix}{name}: only in the file")),
            _ => diffs.push(format!("{prefix}{name}: only in the running daemon")),
        }
    }
}

fn report<T: PartialEq + std::fmt::Debug>(name: &str, file: &T, live: &T, diffs: &mut Vec<String>) {
    if file != live {
        diffs.push(format!("{name}: file {file:?}, live {live:?}"));
    }
}

// --- Who may call ----------------------------------------------------------------------

#[test]
fn caller_outside_the_bus_policy_is_denied_by_the_bus() {
    let out = run(Command::new("setpriv").args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "busctl",
        "--system",
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        "ListVMs",
        "a{sv}",
        "0",
    ]));
    assert!(!out.ok, "nobody may not call kimchid: {}", out.stdout);
    // busctl shows org.freedesktop.DBus.Error.AccessDenied as its errno text; a refusal
    // by kimchid itself would carry kimchid's sentence instead.
    assert!(out.stderr.contains("Access denied"), "{}", out.stderr);
}

/// Asserts that the bus itself refused the call (gdbus shows the error's name and the
/// bus daemon's "Rejected send message"), so kimchid never saw it.
#[track_caller]
fn assert_refused_by_the_bus(ran: &Ran, what: &str) {
    assert!(!ran.ok, "{what} was answered: {}", ran.stdout);
    assert!(
        ran.stderr
            .contains("org.freedesktop.DBus.Error.AccessDenied")
            && ran.stderr.contains("Rejected send message"),
        "{what}: {}",
        ran.stderr
    );
}

/// The standard interfaces kimchid's objects answer without a session or polkit,
/// called on the Manager or the root object: (what, path, method, GVariant args).
fn standard_interface_calls() -> [(&'static str, &'static str, &'static str, Vec<String>); 4] {
    let manager = format!("'{MANAGER_INTERFACE}'");
    [
        (
            "Properties.Get",
            MANAGER_PATH,
            "org.freedesktop.DBus.Properties.Get",
            vec![manager.clone(), "'Version'".into()],
        ),
        (
            "Properties.GetAll",
            MANAGER_PATH,
            "org.freedesktop.DBus.Properties.GetAll",
            vec![manager],
        ),
        (
            "ObjectManager.GetManagedObjects",
            ROOT_PATH,
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
            vec![],
        ),
        (
            "Introspectable.Introspect",
            MANAGER_PATH,
            "org.freedesktop.DBus.Introspectable.Introspect",
            vec![],
        ),
    ]
}

#[test]
fn gateway_user_is_refused_properties_object_manager_and_introspection_by_the_bus() {
    for (what, path, method, args) in standard_interface_calls() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = gdbus_call(true, path, method, &args);
        assert_refused_by_the_bus(&ran, &format!("{what} as _kimchi-gw"));
    }
}

#[test]
fn root_still_gets_properties_object_manager_and_introspection() {
    for (what, path, method, args) in standard_interface_calls() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = gdbus_call(false, path, method, &args);
        assert!(ran.ok, "{what} as root: {}", ran.stderr);
        assert!(!ran.stdout.trim().is_empty(), "{what}: empty reply");
    }
    // What root got is the real thing: the Manager's version, its object.
    let version = gdbus_call(
        false,
        MANAGER_PATH,
        "org.freedesktop.DBus.Properties.Get",
        &[&format!("'{MANAGER_INTERFACE}'"), "'Version'"],
    );
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        version.stdout
    );
    let objects = gdbus_call(
        false,
        ROOT_PATH,
        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
        &[],
    );
    assert!(objects.stdout.contains(MANAGER_PATH), "{}", objects.stdout);
}

#[test]
fn gateway_user_gets_capabilities_without_a_session() {
    let call = |as_gateway| {
        gdbus_call(
            as_gateway,
            MANAGER_PATH,
            &format!("{MANAGER_INTERFACE}.GetCapabilities"),
            &["@a{sv} {}"],
        )
    };
    // The same answer root gets, (['http', …], 'yes'|'no'|'unknown'), once the two
    // calls do not straddle a probe of the host.
    let mut last = None;
    let gateway = poll(Duration::from_secs(5), || {
        let gateway = call(true);
        assert!(
            gateway.ok,
            "GetCapabilities as _kimchi-gw: {}",
            gateway.stderr
        );
        let root = call(false);
        assert!(root.ok, "GetCapabilities as root: {}", root.stderr);
        let same = gateway.stdout == root.stdout;
        last = Some((gateway.stdout.clone(), root.stdout));
        same.then_some(gateway)
    })
    .unwrap_or_else(|| panic!("_kimchi-gw and root got different answers: {last:?}"));
    assert!(
        ["'yes'", "'no'", "'unknown'"]
            .iter()
            .any(|word| gateway.stdout.contains(word)),
        "{}",
        gateway.stdout
    );
}

/// The reply decodes as the contract's `Capabilities` (what the gateway reads).
#[tokio::test]
async fn get_capabilities_reply_is_the_contract_type() {
    let manager = ManagerProxy::new(&system_bus().await).await.unwrap();
    let caps = manager
        .get_capabilities(HashMap::new())
        .await
        .expect("GetCapabilities");
    // Protocol names as QEMU's block drivers call them: http, https, ftp, …
    assert!(
        caps.stream_protocols
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase())),
        "{caps:?}"
    );
}

fn options(key: &str, value: &str) -> HashMap<String, OwnedVariant> {
    let mut dict = CallOptions::default().to_dict();
    dict.insert(
        key.to_owned(),
        OwnedVariant::try_from(Variant::from(value)).unwrap(),
    );
    dict
}

#[tokio::test]
async fn forged_session_option_from_root_is_not_authorized() {
    let manager = ManagerProxy::new(&system_bus().await).await.unwrap();
    let err = manager
        .list_vms(options(kimchi_dbus::OPT_SESSION, "forged-token"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAuthorized(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_kimchi_option_is_invalid_argument() {
    let manager = ManagerProxy::new(&system_bus().await).await.unwrap();
    let err = manager
        .list_vms(options("kimchi.no-such-option", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("kimchi.no-such-option")),
        "{err:?}"
    );
}

// --- VMs -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn root_list_vms_includes_a_vm_defined_with_virsh() {
    let vm = TestVm::define("list");
    let path = lookup_vm_path(&vm.name);
    let manager = ManagerProxy::new(&system_bus().await).await.unwrap();
    let vms = manager
        .list_vms(HashMap::new())
        .await
        .expect("root may list");
    let info = vms
        .iter()
        .find(|v| v.name == vm.name)
        .unwrap_or_else(|| panic!("{} not in {vms:?}", vm.name));
    assert_eq!(info.path.as_str(), path);
    assert_eq!(info.path.as_str(), kimchi_dbus::vm_path(&info.uuid));
    assert_eq!(info.state, VmState::Shutoff);
    assert_eq!(info.memory_mib, 64);
    assert_eq!(info.graphics_type, "vnc");
}

#[test]
fn virsh_start_shows_in_the_state_property_promptly() {
    let vm = TestVm::define("start");
    let path = lookup_vm_path(&vm.name);
    assert_eq!(vm_property(&path, "State"), r#"s "shutoff""#);
    vm.start();
    let seen = poll(Duration::from_secs(2), || {
        (vm_property(&path, "State") == r#"s "running""#).then_some(())
    });
    assert!(
        seen.is_some(),
        "State still {}",
        vm_property(&path, "State")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn virsh_destroy_emits_properties_changed_with_the_new_state() {
    let vm = TestVm::define("signal");
    let path = lookup_vm_path(&vm.name);
    vm.start();
    poll(Duration::from_secs(2), || {
        (vm_property(&path, "State") == r#"s "running""#).then_some(())
    })
    .expect("VM running on the bus");

    let conn = system_bus().await;
    let props = PropertiesProxy::builder(&conn)
        .destination(BUS_NAME)
        .path(path.as_str())
        .build()
        .await
        .unwrap();
    let mut changes = props.receive_properties_changed().await.unwrap();
    vm.destroy();
    tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(signal) = changes.next().await {
            let args = signal.args().unwrap();
            let state = args.changed_properties().get("State").cloned();
            if args.interface_name().as_str() == VM_INTERFACE
                && state.and_then(|s| String::try_from(s).ok()).as_deref() == Some("shutoff")
            {
                return;
            }
        }
        panic!("signal stream ended");
    })
    .await
    .expect("PropertiesChanged with State=shutoff within 2 s");
}
