//! What a host administrator does to existing VMs: the power actions beyond start and
//! stop with their wrong-state sentences, graceful shutdown as a task, edits checked
//! before anything changes, NICs and drives.

use kimchi_dbus::{TaskState, VmIfaceSpec, VmPatch, VmState, VmStorageSpec};

use super::{adopt, assert_error, bootable_iso, libvirt, with_new_vm, with_vm};
use crate::engine::hypervisor::{HostEvent, Power};
use crate::engine::sim::Harness;
use crate::engine::tasks::Wait;

// ---- power ----

#[tokio::test]
async fn each_power_action_reaches_its_state() {
    for (action, from, to) in [
        (Power::Suspend, VmState::Running, VmState::Paused),
        (Power::Resume, VmState::Paused, VmState::Running),
        (Power::Reset, VmState::Running, VmState::Running),
        (Power::Reset, VmState::Paused, VmState::Paused),
        (Power::Reboot, VmState::Running, VmState::Running),
    ] {
        let (h, _) = with_vm(from).await;
        let vm = h.engine.vms.power("web", action).await.unwrap();
        assert_eq!(vm.state, to, "{action:?} from {from:?}");
    }
}

#[tokio::test]
async fn a_power_action_the_state_forbids_says_why_without_asking_libvirt() {
    for (action, state, message) in [
        (Power::Suspend, VmState::Shutoff, "VM 'web' is not running"),
        (
            Power::Suspend,
            VmState::Paused,
            "VM 'web' is already paused",
        ),
        (Power::Resume, VmState::Running, "VM 'web' is not paused"),
        (Power::Resume, VmState::Shutoff, "VM 'web' is not paused"),
        (Power::Reboot, VmState::Shutoff, "VM 'web' is not running"),
        (
            Power::Reboot,
            VmState::Paused,
            "VM 'web' is paused; resume it first",
        ),
        (Power::Reset, VmState::Shutoff, "VM 'web' is not running"),
        (Power::Shutdown, VmState::Shutoff, "VM 'web' is not running"),
    ] {
        let (h, _) = with_vm(state).await;
        let before = h.sim.calls("power");
        let result = h.engine.vms.power("web", action).await;
        assert_error!(result, InvalidState, message, "{action:?} in {state:?}");
        assert_eq!(h.sim.calls("power"), before);
    }
}

async fn shutdown(h: &Harness, timeout: u32, force: bool) -> kimchi_dbus::TaskInfo {
    h.engine
        .vms
        .shutdown("web", timeout, force, Wait::Ended)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_shutdown_ends_when_the_guest_is_off() {
    let (h, _) = with_vm(VmState::Running).await;
    let task = shutdown(&h, 5, false).await;
    assert_eq!(
        (task.state, task.message.as_str()),
        (TaskState::Finished, "VM 'web' shut down")
    );
    assert_eq!(task.operation, "vm.shutdown");
    assert_eq!(task.target_uri, "/vms/web");
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Shutoff);
}

#[tokio::test]
async fn a_guest_ignoring_the_shutdown_keeps_running_unless_forced() {
    let (h, uuid) = with_vm(VmState::Running).await;
    h.sim.ignore_acpi(&uuid);
    let task = shutdown(&h, 1, false).await;
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(
        task.message,
        "VM 'web' did not shut down within 1 s; it is still running"
    );
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Running);

    let task = shutdown(&h, 1, true).await;
    assert_eq!(task.state, TaskState::Finished);
    assert_eq!(
        task.message,
        "VM 'web' did not shut down within 1 s and was powered off"
    );
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Shutoff);
}

#[tokio::test]
async fn a_shutdown_is_checked_before_its_task_starts() {
    let (h, _) = with_vm(VmState::Running).await;
    let result = h.engine.vms.shutdown("web", 3601, false, Wait::Ended).await;
    assert_error!(
        result,
        InvalidArgument,
        "a shutdown waits at most 3600 s, not 3601"
    );
    let result = h.engine.vms.shutdown("nope", 0, false, Wait::Ended).await;
    assert_error!(result, NotFound, "no VM named 'nope'");
    assert!(h.engine.tasks.list().is_empty());
}

// ---- edits ----

fn patch() -> VmPatch {
    VmPatch::default()
}

#[tokio::test]
async fn an_edit_changes_what_it_names() {
    let (h, _) = with_vm(VmState::Shutoff).await;
    let vm = h
        .engine
        .vms
        .update(
            "web",
            VmPatch {
                cpus: Some(4),
                memory_mib: Some(2048),
                autostart: Some(true),
                title: Some("Web".into()),
                description: Some("line 1\nline 2\tend".into()),
                ..patch()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (vm.cpus, vm.memory_mib, vm.autostart, vm.title.as_str()),
        (4, 2048, true, "Web")
    );
    assert_eq!(vm.description, "line 1\nline 2\tend");
    assert!(!vm.pending_changes);
}

#[tokio::test]
async fn cpus_and_memory_of_a_running_guest_wait_for_its_next_power_on() {
    let (h, _) = with_vm(VmState::Running).await;
    let vm = h
        .engine
        .vms
        .update(
            "web",
            VmPatch {
                cpus: Some(2),
                ..patch()
            },
        )
        .await
        .unwrap();
    assert!(vm.pending_changes);
    assert_eq!(vm.cpus, 1);
}

#[tokio::test]
async fn a_rename_needs_a_shut_off_vm_and_a_free_valid_name() {
    let (h, _) = with_vm(VmState::Running).await;
    adopt(&h, "other", VmState::Shutoff).await;
    let rename = |name: &str| VmPatch {
        name: Some(name.into()),
        ..patch()
    };
    let result = h.engine.vms.update("web", rename("new")).await;
    assert_error!(
        result,
        InvalidState,
        "VM 'web' is running; only a shut-off VM can be renamed"
    );
    let result = h.engine.vms.update("other", rename("web")).await;
    assert_error!(result, AlreadyExists, "VM 'web' already exists");
    let result = h.engine.vms.update("other", rename("a/b")).await;
    assert_error!(
        result,
        InvalidArgument,
        "invalid VM name 'a/b': it contains '/'"
    );
    let vm = h
        .engine
        .vms
        .update("other", rename("renamed"))
        .await
        .unwrap();
    assert_eq!(vm.name, "renamed");
    assert_error!(h.engine.vms.get("other"), NotFound, "no VM named 'other'");
}

#[tokio::test]
async fn a_bad_edit_is_refused_whole_and_changes_nothing() {
    for (bad, message) in [
        (
            VmPatch {
                cpus: Some(0),
                ..patch()
            },
            "cpus must be 1 to 255, not 0",
        ),
        (
            VmPatch {
                cpus: Some(256),
                ..patch()
            },
            "cpus must be 1 to 255, not 256",
        ),
        (
            VmPatch {
                memory_mib: Some(63),
                ..patch()
            },
            "memory must be at least 64 MiB, not 63",
        ),
        (
            VmPatch {
                memory_mib: Some(1 << 30),
                ..patch()
            },
            "memory of 1073741824 MiB is more than the host's 8192 MiB",
        ),
        (
            VmPatch {
                title: Some("two\nlines".into()),
                ..patch()
            },
            "title contains the control character U+000A",
        ),
        (
            VmPatch {
                title: Some("x".repeat(257)),
                ..patch()
            },
            "title is longer than 256 characters",
        ),
        (
            VmPatch {
                description: Some("bell\u{7}".into()),
                ..patch()
            },
            "description contains the control character U+0007",
        ),
    ] {
        let (h, _) = with_vm(VmState::Shutoff).await;
        let with_good = VmPatch {
            autostart: Some(true),
            ..bad
        };
        let result = h.engine.vms.update("web", with_good).await;
        assert_error!(result, InvalidArgument, message, "{message}");
        assert_eq!(h.sim.calls("change_domain"), 0, "{message}");
    }
}

// ---- NICs ----

fn nic(network: &str, model: &str) -> VmIfaceSpec {
    VmIfaceSpec {
        iface_type: "network".into(),
        network: network.into(),
        model: model.into(),
    }
}

#[tokio::test]
async fn a_new_nic_gets_a_fresh_mac_and_the_model_of_the_others() {
    let (h, uuid) = with_vm(VmState::Running).await;
    let first = h.sim.attach(&uuid, "default");
    h.engine
        .model
        .apply(HostEvent::Domain {
            uuid: uuid.clone(),
            event: crate::engine::hypervisor::DomainEvent::Changed,
        })
        .await;
    let added = h
        .engine
        .vms
        .attach_iface("web", nic("default", ""))
        .await
        .unwrap();
    assert_eq!(added.model, "virtio");
    assert_ne!(added.mac, first);
    assert!(added.mac.starts_with("52:54:00:"), "{}", added.mac);
    let listed = h.engine.vms.ifaces("web").await.unwrap();
    let macs: Vec<_> = listed.iter().map(|i| i.mac.as_str()).collect();
    assert_eq!(macs, [first.as_str(), added.mac.as_str()]);
    // A running guest's NICs show their DHCP leases.
    assert_eq!(listed[1].ips, ["192.168.122.11"]);
}

#[tokio::test]
async fn a_nic_refers_to_a_network_that_exists_and_runs() {
    let (h, _) = with_vm(VmState::Running).await;
    let uuid = h.sim.add_network("lab", "10.1.2.0/24", false);
    h.engine.model.apply(HostEvent::Network { uuid }).await;
    for (spec, message) in [
        (nic("nope", ""), "there is no network named 'nope'"),
        (nic("default", "tulip"), "unknown NIC model 'tulip'; use one of virtio, e1000, e1000e, rtl8139, ne2k_pci, pcnet, i82551, i82557b, i82559er"),
        (
            VmIfaceSpec {
                iface_type: "bridge".into(),
                ..nic("default", "")
            },
            "interface type 'bridge' cannot be attached; use 'network'",
        ),
    ] {
        let result = h.engine.vms.attach_iface("web", spec).await;
        assert_error!(result, InvalidArgument, message);
    }
    let result = h.engine.vms.attach_iface("web", nic("lab", "")).await;
    assert_error!(
        result,
        InvalidState,
        "network 'lab' is not active; activate it first"
    );
    assert_eq!(h.sim.calls("attach_nic"), 0);
}

#[tokio::test]
async fn a_nic_is_changed_or_removed_by_its_mac() {
    let (h, _) = with_vm(VmState::Shutoff).await;
    let added = h
        .engine
        .vms
        .attach_iface("web", nic("default", "e1000"))
        .await
        .unwrap();
    let upper = added.mac.to_ascii_uppercase();
    let changed = h
        .engine
        .vms
        .update_iface("web", &upper, "", "rtl8139")
        .await
        .unwrap();
    assert_eq!(changed.model, "rtl8139");
    let result = h
        .engine
        .vms
        .update_iface("web", "52:54:00:ff:ff:ff", "", "")
        .await;
    assert_error!(
        result,
        NotFound,
        "VM 'web' has no network interface with MAC 52:54:00:ff:ff:ff"
    );
    h.engine.vms.detach_iface("web", &added.mac).await.unwrap();
    assert!(h.engine.vms.ifaces("web").await.unwrap().is_empty());
}

// ---- drives ----

fn disk(pool: &str, volume: &str, size_mib: u64) -> VmStorageSpec {
    VmStorageSpec {
        storage_type: "disk".into(),
        pool: pool.into(),
        volume: volume.into(),
        size_mib,
        ..VmStorageSpec::default()
    }
}

pub(super) fn cdrom(path: &str) -> VmStorageSpec {
    VmStorageSpec {
        storage_type: "cdrom".into(),
        path: path.into(),
        ..VmStorageSpec::default()
    }
}

#[tokio::test]
async fn a_new_disk_is_made_for_the_vm_and_deleted_with_its_drive() {
    let h = with_new_vm("").await;
    let added = h
        .engine
        .vms
        .attach_storage("web", disk("default", "", 1024))
        .await
        .unwrap();
    assert_eq!(
        (added.dev.as_str(), added.bus.as_str(), added.path.as_str()),
        // Templates of unknown OSes get IDE disks: a new disk joins them.
        ("hdb", "ide", "/sim/default/web-disk0.img")
    );
    let vm = h.engine.model.vm_by_name("web").unwrap();
    assert!(vm.created_volumes.contains(&added.path));
    h.engine.vms.detach_storage("web", "hdb").await.unwrap();
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
    let vm = h.engine.model.vm_by_name("web").unwrap();
    assert_eq!(vm.created_volumes, ["/sim/default/web-0.img"]);
}

#[tokio::test]
async fn a_failed_attach_removes_the_disk_it_made() {
    let h = with_new_vm("").await;
    h.sim.fail_next("attach_drive", libvirt("no free PCI slot"));
    let result = h
        .engine
        .vms
        .attach_storage("web", disk("default", "", 1024))
        .await;
    super::assert_libvirt_error(result, "no free PCI slot");
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

#[tokio::test]
async fn an_existing_volume_is_attached_once_and_kept_on_detach() {
    let h = with_new_vm("").await;
    h.sim.add_volume("default", "data.img", "qcow2", 10);
    adopt(&h, "other", VmState::Shutoff).await;
    let added = h
        .engine
        .vms
        .attach_storage("web", disk("default", "data.img", 0))
        .await
        .unwrap();
    let result = h
        .engine
        .vms
        .attach_storage("other", disk("default", "data.img", 0))
        .await;
    assert_error!(
        result,
        InvalidState,
        "volume 'data.img' of pool 'default' is already used by VM 'web'"
    );
    h.engine
        .vms
        .detach_storage("web", &added.dev)
        .await
        .unwrap();
    assert_eq!(h.sim.volume_names("default"), ["data.img", "web-0.img"]);
    let result = h
        .engine
        .vms
        .attach_storage("web", disk("default", "nope.img", 0))
        .await;
    assert_error!(
        result,
        InvalidArgument,
        "storage pool 'default' has no volume 'nope.img'"
    );
    let result = h
        .engine
        .vms
        .attach_storage("web", disk("nope", "x", 0))
        .await;
    assert_error!(
        result,
        InvalidArgument,
        "there is no storage pool named 'nope'"
    );
}

#[tokio::test]
async fn a_cdrom_holds_iso_images_only_and_changes_media() {
    let (h, _) = with_vm(VmState::Shutoff).await;
    let (_dir, iso) = bootable_iso();
    let added = h
        .engine
        .vms
        .attach_storage("web", cdrom(&iso))
        .await
        .unwrap();
    assert_eq!((added.dev.as_str(), added.bus.as_str()), ("hda", "ide"));
    let ejected = h.engine.vms.update_storage("web", "hda", "").await.unwrap();
    assert_eq!(ejected.path, "");
    let result = h
        .engine
        .vms
        .attach_storage("web", cdrom("/etc/hostname"))
        .await;
    let message = "cdrom '/etc/hostname' is not an ISO 9660 image: file too short for a primary volume descriptor";
    assert_error!(result, InvalidArgument, message);
    let result = h
        .engine
        .vms
        .attach_storage("web", cdrom("/nonexistent.iso"))
        .await;
    assert_error!(
        result,
        InvalidArgument,
        "cdrom '/nonexistent.iso' does not exist"
    );
    let result = h.engine.vms.update_storage("web", "hdz", &iso).await;
    assert_error!(result, NotFound, "VM 'web' has no drive hdz");
}

#[tokio::test]
async fn only_a_cdrom_changes_media() {
    let h = with_new_vm("").await;
    let (_dir, iso) = bootable_iso();
    let result = h.engine.vms.update_storage("web", "hda", &iso).await;
    assert_error!(
        result,
        InvalidState,
        "hda of VM 'web' is a disk; only a CD-ROM's medium can be changed"
    );
}
