//! The VM operations over D-Bus, as root, the way busctl users drive them: a graceful
//! `ShutdownVM` of a real guest that answers ACPI (waited for as a task), `UpdateVM`
//! edits seen in libvirt, the other power methods, NICs and drives, the error names
//! of bad calls, and changes made with virsh behind kimchid's back showing over REST
//! and on the bus.
//!
//! Guests: one [`kimchi_tests::guest`] guest (it boots once), and diskless guests
//! without an OS defined with virsh ([`TestVm`]); all removed by guards.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use common::{definition, dumpxml, expect, manager, no_options, ScratchDir, Web};
use kimchi_dbus::{
    TaskState, VmIface, VmIfaceSpec, VmInfo, VmPatch, VmState, VmStorage, VmStorageSpec, BUS_NAME,
    TASK_INTERFACE,
};
use kimchi_tests::{
    busctl, define_domain, guest, manager_call, manager_call_with, poll, system_bus,
    task_from_busctl, unique_name, virsh, write_iso, Ran, TestVm, DATA_VOLUME_ID,
};
use serde_json::Value;
use zbus::{DBusError, OwnedVariant, Variant};

/// How long a boot of the test guest may take (TCG on a busy 2-core machine).
const BOOT: Duration = Duration::from_secs(180);
/// How long kimchid may take to show a change made with virsh.
const SEEN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// busctl and zbus

/// `busctl --json=short [--timeout=…] call` on the Manager; the reply's `data`,
/// asserting success.
#[track_caller]
fn call_json(timeout_secs: u32, method: &str, signature: &str, args: &[&str]) -> Value {
    let timeout = format!("--timeout={timeout_secs}");
    let ran = manager_call_with(&["--json=short", &timeout], method, signature, args);
    assert!(ran.ok, "{method} {args:?} failed: {}", ran.stderr);
    let reply: Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("{method}: busctl printed no JSON ({e}): {}", ran.stdout));
    reply["data"].clone()
}

/// A reply's one value from busctl's JSON `data`: a struct's fields as the reply's
/// arguments (as zbus sends a returned struct), or the value as the one argument.
fn reply_fields(data: &Value) -> &Value {
    match data.as_array().map(Vec::as_slice) {
        Some([only]) if only.is_array() => only,
        _ => data,
    }
}

/// Reads busctl's JSON `data` of a reply as the contract's type.
macro_rules! reply_value {
    ($data:expr) => {{
        let data: &Value = &$data;
        serde_json::from_value(reply_fields(data).clone())
            .unwrap_or_else(|e| panic!("not the reply's type ({e}): {data}"))
    }};
}

/// A Manager call through busctl that returns a [`VmInfo`].
#[track_caller]
fn vm_call(method: &str, signature: &str, args: &[&str]) -> VmInfo {
    reply_value!(call_json(25, method, signature, args))
}

/// Asserts that busctl's call failed, and that its complaint names `words`.
#[track_caller]
fn assert_busctl_refused(ran: &Ran, words: &[&str]) {
    assert!(!ran.ok, "the call succeeded: {}", ran.stdout);
    for word in words {
        assert!(ran.stderr.contains(word), "{word:?} not in {}", ran.stderr);
    }
}

/// Asserts that a call failed with `org.kimchi.Kimchi1.Error.<name>`; its sentence.
#[track_caller]
fn assert_bus_error<T: Debug>(result: Result<T, kimchi_dbus::Error>, name: &str) -> String {
    let wanted = format!("org.kimchi.Kimchi1.Error.{name}");
    match result {
        Ok(reply) => panic!("expected {wanted}, got the reply {reply:?}"),
        Err(e) => {
            assert_eq!(e.name().as_str(), wanted, "{e:?}");
            let why = e.description().unwrap_or_default().to_owned();
            assert!(!why.trim().is_empty(), "{wanted} without a sentence");
            why
        }
    }
}

/// Waits until kimchid knows the domain `name` (defined with virsh).
#[track_caller]
fn wait_known(name: &str) {
    let mut last = String::new();
    poll(Duration::from_secs(15), || {
        let ran = manager_call("GetVM", "sa{sv}", &[name, "0"]);
        last = ran.stderr;
        ran.ok.then_some(())
    })
    .unwrap_or_else(|| panic!("GetVM {name} kept failing: {last}"));
}

/// `virsh domstate`, e.g. `shut off`.
#[track_caller]
fn domstate(name: &str) -> String {
    virsh(&["domstate", name])
        .expect_ok()
        .stdout
        .trim()
        .to_owned()
}

/// `virsh domblklist --inactive`: target → source (`-` for an empty drive).
#[track_caller]
fn domblklist(name: &str) -> BTreeMap<String, String> {
    let out = virsh(&["domblklist", name, "--inactive"])
        .expect_ok()
        .stdout;
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| {
            let (target, source) = l.trim().split_once(char::is_whitespace)?;
            Some((target.to_owned(), source.trim().to_owned()))
        })
        .collect()
}

/// The MACs of `virsh domiflist --inactive`, lower-case.
#[track_caller]
fn macs(name: &str) -> Vec<String> {
    let out = virsh(&["domiflist", name, "--inactive"]).expect_ok().stdout;
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_lowercase))
        .collect()
}

/// `virsh dominfo`'s Autostart line says enable.
#[track_caller]
fn autostart(name: &str) -> bool {
    let info = virsh(&["dominfo", name]).expect_ok().stdout;
    info.lines()
        .find_map(|l| l.strip_prefix("Autostart:"))
        .unwrap_or_else(|| panic!("no Autostart in {info}"))
        .trim()
        == "enable"
}

// ---------------------------------------------------------------------------------
// 1. A graceful shutdown, waited for

/// The test guest of `kimchi_tests::guest`, defined with virsh; deleted through
/// kimchid, else undefined, on drop.
struct AcpiGuest {
    name: String,
    log: String,
}

impl Drop for AcpiGuest {
    fn drop(&mut self) {
        // kimchid deletes any volume it made for the guest; undefine removes the
        // rest (the domain should kimchid have failed, the serial log).
        let _ = manager_call("DeleteVM", "sa{sv}", &[&self.name, "0"]);
        guest::undefine(&self.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn busctl_shutdown_vm_waits_until_the_acpi_guest_is_off() {
    guest::ensure_built();
    let name = unique_name("opsbus-acpi");
    let log = guest::define(&name, None);
    let guest = AcpiGuest { name, log };
    let name = guest.name.as_str();
    wait_known(name);

    // Emptied if a file is there already, so the log holds this boot only.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&guest.log);
    let started = vm_call("StartVM", "sa{sv}", &[name, "0"]);
    assert_eq!(started.state, VmState::Running, "{started:?}");
    assert!(
        guest::wait_for_marker(&guest.log, guest::READY, 1, BOOT),
        "the guest did not boot: {}",
        std::fs::read_to_string(&guest.log).unwrap_or_default()
    );

    // Waited for: the reply is the finished task, and the guest is off.
    let data = call_json(
        300,
        "ShutdownVM",
        "suba{sv}",
        &[name, "0", "false", "1", kimchi_dbus::OPT_WAIT, "b", "true"],
    );
    let task = task_from_busctl(&data);
    assert_eq!(task.state, TaskState::Finished, "{task:?}");
    assert_eq!(task.target_uri, format!("/vms/{name}"), "{task:?}");
    assert!(task.operation.contains("shutdown"), "{task:?}");
    assert!(
        task.end_usec >= task.start_usec && task.end_usec > 0,
        "{task:?}"
    );
    assert_eq!(domstate(name), "shut off");
    let state = busctl(&[
        "get-property",
        BUS_NAME,
        task.path.as_str(),
        TASK_INTERFACE,
        "State",
    ])
    .expect_ok();
    assert_eq!(state.stdout.trim(), r#"s "finished""#);

    // Off: nothing to shut down, reboot or suspend.
    let conn = system_bus().await;
    let manager = manager(&conn).await;
    let info = manager.get_vm(name, no_options()).await.expect("GetVM");
    assert_eq!(info.state, VmState::Shutoff, "{info:?}");
    let why = assert_bus_error(
        manager.shutdown_vm(name, 0, false, no_options()).await,
        "InvalidState",
    );
    assert!(why.contains(name) && why.contains("not running"), "{why}");
    assert_bus_error(manager.reboot_vm(name, no_options()).await, "InvalidState");
    assert_bus_error(manager.suspend_vm(name, no_options()).await, "InvalidState");
    let ran = manager_call(
        "ShutdownVM",
        "suba{sv}",
        &[name, "0", "false", "1", kimchi_dbus::OPT_WAIT, "b", "true"],
    );
    assert_busctl_refused(&ran, &["not running"]);
    assert_eq!(domstate(name), "shut off");
}

// ---------------------------------------------------------------------------------
// 2. Edits and the other power methods

#[tokio::test(flavor = "multi_thread")]
async fn update_vm_edits_reach_libvirt_and_bad_calls_are_named_errors() {
    let vm = TestVm::define("opsbus-edit");
    let name = vm.name.as_str();
    wait_known(name);

    // The issue's example: two fields, seen in the reply and in libvirt.
    let info = vm_call(
        "UpdateVM",
        "sa{sv}a{sv}",
        &[name, "2", "cpus", "u", "2", "title", "s", "hello", "0"],
    );
    assert_eq!((info.cpus, info.title.as_str()), (2, "hello"), "{info:?}");
    assert!(!info.pending_changes, "{info:?}");
    let def = definition(&dumpxml(name, true));
    assert_eq!(def.vcpus, 2, "{def:?}");
    assert_eq!(def.title.as_deref(), Some("hello"), "{def:?}");

    // Memory, a description and autostart, through zbus.
    let conn = system_bus().await;
    let manager = manager(&conn).await;
    let patch = VmPatch {
        memory_mib: Some(128),
        description: Some("two\nlines".into()),
        autostart: Some(true),
        ..VmPatch::default()
    };
    let info = manager
        .update_vm(name, patch.to_dict(), no_options())
        .await
        .expect("UpdateVM");
    assert_eq!(info.memory_mib, 128, "{info:?}");
    assert_eq!(info.description, "two\nlines", "{info:?}");
    assert!(info.autostart, "{info:?}");
    assert_eq!(info.title, "hello", "unchanged: {info:?}");
    let def = definition(&dumpxml(name, true));
    assert_eq!(def.memory_mib, 128, "{def:?}");
    assert_eq!(def.description.as_deref(), Some("two\nlines"), "{def:?}");
    assert!(autostart(name), "dominfo: Autostart disable");
    assert_eq!(
        manager.get_vm(name, no_options()).await.expect("GetVM"),
        info
    );
    let patch = VmPatch {
        autostart: Some(false),
        ..VmPatch::default()
    };
    manager
        .update_vm(name, patch.to_dict(), no_options())
        .await
        .expect("UpdateVM autostart false");
    assert!(!autostart(name), "dominfo: Autostart enable");

    // Bad calls: named errors, nothing changed.
    let before = dumpxml(name, true);
    let bad_patches = [
        VmPatch {
            cpus: Some(0),
            ..VmPatch::default()
        },
        VmPatch {
            cpus: Some(256),
            ..VmPatch::default()
        },
        VmPatch {
            memory_mib: Some(1),
            ..VmPatch::default()
        },
        VmPatch {
            name: Some("a/b".into()),
            ..VmPatch::default()
        },
        VmPatch {
            title: Some("one\ntwo".into()),
            ..VmPatch::default()
        },
    ];
    for patch in bad_patches {
        assert_bus_error(
            manager.update_vm(name, patch.to_dict(), no_options()).await,
            "InvalidArgument",
        );
        assert_eq!(dumpxml(name, true), before, "{patch:?} changed the domain");
    }
    let mut unknown = VmPatch::default().to_dict();
    unknown.insert(
        "memory".into(),
        OwnedVariant::try_from(Variant::from(256u64)).unwrap(),
    );
    let why = assert_bus_error(
        manager.update_vm(name, unknown, no_options()).await,
        "InvalidArgument",
    );
    assert!(why.contains("memory"), "{why}");
    let ran = manager_call(
        "UpdateVM",
        "sa{sv}a{sv}",
        &[name, "1", "cpus", "s", "2", "0"],
    );
    assert_busctl_refused(&ran, &["cpus"]);
    let ran = manager_call(
        "UpdateVM",
        "sa{sv}a{sv}",
        &[name, "1", "cpus", "u", "0", "0"],
    );
    assert_busctl_refused(&ran, &[]);
    assert_eq!(
        dumpxml(name, true),
        before,
        "a refused busctl call changed it"
    );

    // Power methods and their wrong states.
    assert_bus_error(
        manager.shutdown_vm(name, 0, false, no_options()).await,
        "InvalidState",
    );
    assert_bus_error(manager.resume_vm(name, no_options()).await, "InvalidState");
    assert_bus_error(manager.reset_vm(name, no_options()).await, "InvalidState");
    assert_eq!(
        vm_call("StartVM", "sa{sv}", &[name, "0"]).state,
        VmState::Running
    );
    assert_bus_error(manager.resume_vm(name, no_options()).await, "InvalidState");
    let paused = vm_call("SuspendVM", "sa{sv}", &[name, "0"]);
    assert_eq!(paused.state, VmState::Paused, "{paused:?}");
    assert_eq!(domstate(name), "paused");
    assert_bus_error(manager.suspend_vm(name, no_options()).await, "InvalidState");
    let resumed = vm_call("ResumeVM", "sa{sv}", &[name, "0"]);
    assert_eq!(resumed.state, VmState::Running, "{resumed:?}");
    assert_eq!(domstate(name), "running");
    let reset = vm_call("ResetVM", "sa{sv}", &[name, "0"]);
    assert_eq!(reset.state, VmState::Running, "{reset:?}");
    // Running: a rename is refused; CPUs wait for the next power-on.
    let renamed = unique_name("opsbus-edit");
    let patch = VmPatch {
        name: Some(renamed.clone()),
        ..VmPatch::default()
    };
    assert_bus_error(
        manager.update_vm(name, patch.to_dict(), no_options()).await,
        "InvalidState",
    );
    assert!(!virsh(&["dominfo", &renamed]).ok, "renamed while running");
    let info = vm_call(
        "UpdateVM",
        "sa{sv}a{sv}",
        &[name, "1", "cpus", "u", "1", "0"],
    );
    assert!(info.pending_changes, "{info:?}");
    assert_eq!(
        info.cpus, 2,
        "the guest keeps its 2 CPUs until powered off: {info:?}"
    );
    assert_eq!(
        vm_call("StopVM", "sa{sv}", &[name, "0"]).state,
        VmState::Shutoff
    );
    let info = manager.get_vm(name, no_options()).await.expect("GetVM");
    assert!(!info.pending_changes, "{info:?}");
    assert_eq!(info.cpus, 1, "{info:?}");
}

// ---------------------------------------------------------------------------------
// 3. NICs and drives

#[tokio::test(flavor = "multi_thread")]
async fn nics_and_drives_with_busctl() {
    let vm = TestVm::define("opsbus-dev");
    let name = vm.name.as_str();
    wait_known(name);
    let dir = ScratchDir::new("opsbus-dev");
    let iso = dir.join("media.iso");
    write_iso(DATA_VOLUME_ID, false, &iso);
    let iso = iso.to_str().expect("utf-8 path").to_owned();

    // A NIC: attached, listed, changed, detached.
    let nic: VmIface = reply_value!(call_json(
        25,
        "AttachVMIface",
        "s(sss)a{sv}",
        &[name, "network", "default", "", "0"],
    ));
    assert_eq!(nic.iface_type, "network", "{nic:?}");
    assert_eq!(nic.network, "default", "{nic:?}");
    assert_eq!(nic.model, "virtio", "the default model: {nic:?}");
    assert_eq!(macs(name), [nic.mac.to_lowercase()]);
    let listed: Vec<VmIface> = reply_value!(call_json(25, "ListVMIfaces", "sa{sv}", &[name, "0"]));
    assert_eq!(listed, std::slice::from_ref(&nic));
    let changed: VmIface = reply_value!(call_json(
        25,
        "UpdateVMIface",
        "ssssa{sv}",
        &[name, &nic.mac, "", "e1000", "0"],
    ));
    assert_eq!(changed.model, "e1000", "{changed:?}");
    assert_eq!(changed.network, "default", "unchanged: {changed:?}");
    assert!(
        dumpxml(name, true).contains("<model type='e1000'/>"),
        "{}",
        dumpxml(name, true)
    );
    manager_call("DetachVMIface", "ssa{sv}", &[name, &nic.mac, "0"]).expect_ok();
    assert!(macs(name).is_empty(), "{:?}", macs(name));

    // A CD-ROM: attached, ejected, detached.
    let cdrom: VmStorage = reply_value!(call_json(
        25,
        "AttachVMStorage",
        "s(sssst)a{sv}",
        &[name, "cdrom", &iso, "", "", "0", "0"],
    ));
    assert_eq!(cdrom.storage_type, "cdrom", "{cdrom:?}");
    assert_eq!(cdrom.path, iso, "{cdrom:?}");
    assert_eq!(domblklist(name).get(&cdrom.dev), Some(&iso));
    let ejected: VmStorage = reply_value!(call_json(
        25,
        "UpdateVMStorage",
        "sssa{sv}",
        &[name, &cdrom.dev, "", "0"],
    ));
    assert_eq!(ejected.path, "", "{ejected:?}");
    assert_eq!(
        domblklist(name).get(&cdrom.dev).map(String::as_str),
        Some("-")
    );

    // A new 1 GiB disk made for the VM: deleted when detached.
    let disk: VmStorage = reply_value!(call_json(
        60,
        "AttachVMStorage",
        "s(sssst)a{sv}",
        &[name, "disk", "", "default", "", "1024", "0"],
    ));
    assert_eq!(disk.storage_type, "disk", "{disk:?}");
    assert_eq!(disk.bus, "virtio", "no other disk: virtio: {disk:?}");
    let disk_file = PathBuf::from(&disk.path);
    assert!(disk_file.is_file(), "{disk:?}");
    let listed: Vec<VmStorage> =
        reply_value!(call_json(25, "ListVMStorages", "sa{sv}", &[name, "0"]));
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.contains(&ejected) && listed.contains(&disk),
        "{listed:?}"
    );
    manager_call("DetachVMStorage", "ssa{sv}", &[name, &disk.dev, "0"]).expect_ok();
    manager_call("DetachVMStorage", "ssa{sv}", &[name, &cdrom.dev, "0"]).expect_ok();
    assert!(domblklist(name).is_empty(), "{:?}", domblklist(name));
    assert!(!disk_file.exists(), "{} left behind", disk_file.display());

    // Refusals by name; nothing changed.
    let before = dumpxml(name, true);
    let conn = system_bus().await;
    let manager = manager(&conn).await;
    let spec = |network: &str| VmIfaceSpec {
        iface_type: "network".into(),
        network: network.into(),
        model: String::new(),
    };
    let missing = unique_name("opsbus-no-net");
    let why = assert_bus_error(
        manager
            .attach_vm_iface(name, spec(&missing), no_options())
            .await,
        "InvalidArgument",
    );
    assert!(why.contains(&missing), "{why}");
    let bridge = VmIfaceSpec {
        iface_type: "bridge".into(),
        ..spec("default")
    };
    assert_bus_error(
        manager.attach_vm_iface(name, bridge, no_options()).await,
        "InvalidArgument",
    );
    assert_bus_error(
        manager
            .detach_vm_iface(name, "52:54:00:fe:dc:ba", no_options())
            .await,
        "NotFound",
    );
    let not_iso = VmStorageSpec {
        storage_type: "cdrom".into(),
        path: "/etc/hostname".into(),
        ..VmStorageSpec::default()
    };
    assert_bus_error(
        manager.attach_vm_storage(name, not_iso, no_options()).await,
        "InvalidArgument",
    );
    assert_bus_error(
        manager.detach_vm_storage(name, "sdz", no_options()).await,
        "NotFound",
    );
    assert_eq!(dumpxml(name, true), before, "a refusal changed the domain");
}

// ---------------------------------------------------------------------------------
// 4. Changes made with virsh

#[tokio::test(flavor = "multi_thread")]
async fn changes_made_with_virsh_show_over_rest_and_on_the_bus() {
    let (web, vm) = tokio::task::block_in_place(|| (Web::admin(), TestVm::define("opsbus-virsh")));
    let name = vm.name.as_str();
    let uri = format!("/vms/{name}");
    tokio::task::block_in_place(|| wait_known(name));

    // Polls GET /vms/:name until each key has its value.
    let wait_rest = |expected: &[(&str, Value)], after: &str| {
        tokio::task::block_in_place(|| {
            let mut last = Value::Null;
            let seen = poll(SEEN, || {
                last = expect(web.get(&uri), 200, "get the VM").json();
                expected.iter().all(|(k, v)| last[k] == *v).then_some(())
            });
            assert!(
                seen.is_some(),
                "not {expected:?} within {} s of {after}: {last}",
                SEEN.as_secs()
            );
        })
    };

    virsh(&["desc", name, "--config", "--title", "new-title"]).expect_ok();
    wait_rest(&[("title", "new-title".into())], "virsh desc --title");
    virsh(&["desc", name, "--config", "described with virsh"]).expect_ok();
    wait_rest(
        &[("description", "described with virsh".into())],
        "virsh desc",
    );
    // An edited definition (virsh edit, or define) is announced by libvirt. (`virsh
    // setvcpus --config` and `setmem --config` are not: kimchid sees those at its
    // periodic resync.)
    let edited = dumpxml(name, true)
        .replace(
            "<vcpu placement='static'>1</vcpu>",
            "<vcpu placement='static'>2</vcpu>",
        )
        .replace(
            "<memory unit='KiB'>65536</memory>",
            "<memory unit='KiB'>131072</memory>",
        )
        .replace(
            "<currentMemory unit='KiB'>65536</currentMemory>",
            "<currentMemory unit='KiB'>131072</currentMemory>",
        );
    assert!(
        edited.contains("'static'>2</vcpu>") && edited.contains("131072</memory>"),
        "the definition is not as this test expects: {edited}"
    );
    define_domain(&edited);
    wait_rest(
        &[("cpus", 2.into()), ("memory", 128.into())],
        "virsh define of an edited definition",
    );

    // The bus says the same.
    let manager = manager(&system_bus().await).await;
    let info = manager.get_vm(name, no_options()).await.expect("GetVM");
    assert_eq!(info.title, "new-title", "{info:?}");
    assert_eq!(info.description, "described with virsh", "{info:?}");
    assert_eq!(info.cpus, 2, "{info:?}");
    assert_eq!(info.memory_mib, 128, "{info:?}");
    assert!(!info.pending_changes, "{info:?}");
}
