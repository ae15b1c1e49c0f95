//! VMs: power rules, the checks made before a creation task starts, name
//! generation and reservation, what a failed creation leaves behind, deletion,
//! screenshots and consoles.

use kimchi_dbus::{TaskState, TemplateDisk, TemplateSpec, VmState};

use super::{adopt, adopt_pool, assert_error, libvirt, new_vm, template, write_bootable_iso};
use crate::engine::hypervisor::{
    DiskBus, DomainEvent, GuestDefinition, GuestDisk, HostEvent, Hypervisor,
};
use crate::engine::sim::{harness, Sim, SCREEN};
use crate::engine::tasks::Wait;
use crate::engine::vms::{create_guest, NewDisk};
use crate::error::Error;

// ---- power ----

#[derive(Clone, Copy, Debug)]
enum Power {
    Start,
    Stop,
}

/// `action` asked of the engine for the VM named `name`.
async fn power(h: &Harness, action: Power, name: &str) -> Result<VmInfo> {
    match action {
        Power::Start => h.engine.vms.start(name).await,
        Power::Stop => h.engine.vms.stop(name).await,
    }
}

#[tokio::test]
async fn a_power_action_the_state_allows_reaches_the_new_state() {
    for (action, from, to) in [
        (Power::Start, VmState::Shutoff, VmState::Running),
        (Power::Start, VmState::Crashed, VmState::Running),
        (Power::Stop, VmState::Running, VmState::Shutoff),
        (Power::Stop, VmState::Paused, VmState::Shutoff),
    ] {
        let (h, _) = with_vm(from).await;
        let vm = power(&h, action, "web").await.unwrap();
        assert_eq!(vm.state, to, "{action:?} from {from:?}");
        let now = h.engine.vms.get("web").unwrap().state;
        assert_eq!(now, to, "{action:?} from {from:?}, in the model");
    }
}

#[tokio::test]
async fn a_power_action_the_state_forbids_is_invalid_state_naming_the_state() {
    for (action, from, message) in [
        (
            Power::Start,
            VmState::Running,
            "VM 'web' is already running",
        ),
        (Power::Start, VmState::Paused, "VM 'web' is already paused"),
        (Power::Stop, VmState::Shutoff, "VM 'web' is not running"),
    ] {
        let (h, _) = with_vm(from).await;
        let refused = power(&h, action, "web").await;
        assert_error!(refused, InvalidState, message, "{action:?} from {from:?}");
        assert_eq!(h.sim.calls("power"), 0, "{action:?} from {from:?}");
    }
}

/// The guest changed state behind kimchid's back, so the model let the action
/// through and libvirt refused it: the sentence is kimchid's, for the real state.
#[tokio::test]
async fn a_power_action_libvirt_refuses_after_a_change_behind_our_back_names_the_real_state() {
    for (action, from, real, message) in [
        (
            Power::Start,
            VmState::Shutoff,
            VmState::Running,
            "VM 'web' is already running",
        ),
        (
            Power::Stop,
            VmState::Running,
            VmState::Shutoff,
            "VM 'web' is not running",
        ),
    ] {
        let (h, uuid) = with_vm(from).await;
        h.sim.set_state(&uuid, real);
        let refused = power(&h, action, "web").await;
        assert_error!(refused, InvalidState, message, "{action:?} from {from:?}");
        assert_eq!(h.sim.calls("power"), 1, "{action:?} asked libvirt");
        let now = h.engine.vms.get("web").unwrap().state;
        assert_eq!(now, real, "{action:?}: the model has the real state");
    }
}

/// A refusal for a reason other than the guest's state keeps libvirt's reason:
/// kimchid never replaces it with a guess.
#[tokio::test]
async fn a_power_action_libvirt_refuses_for_another_reason_gives_libvirts_reason() {
    for (action, from, reason) in [
        (
            Power::Start,
            VmState::Shutoff,
            "Requested operation is not valid: network 'default' is not active",
        ),
        (
            Power::Stop,
            VmState::Running,
            "Requested operation is not valid: domain is locked",
        ),
    ] {
        let (h, _) = with_vm(from).await;
        h.sim.fail_next("power", Error::InvalidState(reason.into()));
        assert_error!(
            power(&h, action, "web").await,
            InvalidState,
            reason,
            "{action:?}"
        );
    }
}

#[tokio::test]
async fn a_power_action_on_an_unknown_vm_is_not_found() {
    let h = harness().await;
    for action in [Power::Start, Power::Stop] {
        let refused = power(&h, action, "ghost").await;
        assert_error!(refused, NotFound, "no VM named 'ghost'", "{action:?}");
    }
    assert_eq!(h.sim.calls("power"), 0);
}

#[tokio::test]
async fn other_libvirt_failures_of_a_power_action_pass_through_unchanged() {
    let h = harness().await;
    adopt(&h, "web", VmState::Shutoff).await;
    h.sim
        .fail_next("power", libvirt("internal error: qemu died"));
    match h.engine.vms.start("web").await {
        Err(Error::Libvirt {
            code,
            domain,
            message,
        }) => assert_eq!(
            (code, domain, message.as_str()),
            (1, 10, "internal error: qemu died")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Shutoff);
}

// ---- creation: checks before the task ----

#[tokio::test]
async fn creation_from_an_unknown_template_is_not_found() {
    let h = harness().await;
    assert_error!(
        h.engine.vms.create("nope", "web", "", Wait::Ended).await,
        NotFound,
        "no template named 'nope'"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_in_the_iso_view_is_invalid_argument() {
    let h = harness().await;
    template(&h, "t").await;
    assert_error!(
        h.engine
            .vms
            .create("t", "web", "kimchi_isos", Wait::Ended)
            .await,
        InvalidArgument,
        "kimchi_isos is a read-only view and cannot hold VM disks"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_in_an_unknown_pool_is_not_found() {
    let h = harness().await;
    template(&h, "t").await;
    assert_error!(
        h.engine.vms.create("t", "web", "nope", Wait::Ended).await,
        NotFound,
        "no storage pool named 'nope'"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_in_an_inactive_pool_is_invalid_state() {
    let h = harness().await;
    template(&h, "t").await;
    adopt_pool(&h, "cold", "dir", false).await;
    assert_error!(
        h.engine.vms.create("t", "web", "cold", Wait::Ended).await,
        InvalidState,
        "storage pool 'cold' is not active; activate it first"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_whose_disk_name_is_taken_is_already_exists_and_starts_no_task() {
    let h = harness().await;
    template(&h, "t").await;
    h.sim.add_volume("default", "web-0.img", "qcow2", 1);
    assert_error!(
        h.engine.vms.create("t", "web", "", Wait::Ended).await,
        AlreadyExists,
        "storage volume 'web-0.img' already exists in pool 'default'"
    );
    assert!(h.engine.tasks.list().is_empty());
    assert_eq!(h.sim.calls("create_volume"), 0);
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

#[tokio::test]
async fn creation_copying_a_volume_the_pool_lacks_is_invalid_argument() {
    let h = harness().await;
    h.engine
        .templates
        .create(TemplateSpec {
            name: "t".into(),
            disks: vec![TemplateDisk {
                index: 0,
                size_gb: 0,
                volume: "base.img".into(),
            }],
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    assert_error!(
        h.engine.vms.create("t", "web", "", Wait::Ended).await,
        InvalidArgument,
        "the template copies volume 'base.img', which pool 'default' does not have"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_copying_a_volume_the_pool_has_clones_it() {
    let h = harness().await;
    h.sim.add_volume("default", "base.img", "qcow2", 2048);
    h.engine
        .templates
        .create(TemplateSpec {
            name: "t".into(),
            disks: vec![TemplateDisk {
                index: 0,
                size_gb: 0,
                volume: "base.img".into(),
            }],
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    new_vm(&h, "t", "web", "").await;
    assert_eq!(
        (h.sim.calls("clone_volume"), h.sim.calls("create_volume")),
        (1, 0)
    );
    assert_eq!(h.sim.volume_names("default"), ["base.img", "web-0.img"]);
}

#[tokio::test]
async fn creation_with_a_name_a_vm_has_is_already_exists() {
    let h = harness().await;
    template(&h, "t").await;
    adopt(&h, "web", VmState::Shutoff).await;
    assert_error!(
        h.engine.vms.create("t", "web", "", Wait::Ended).await,
        AlreadyExists,
        "VM 'web' already exists"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_with_a_path_in_the_name_is_invalid_argument() {
    let h = harness().await;
    template(&h, "t").await;
    assert_error!(
        h.engine.vms.create("t", "a/b", "", Wait::Ended).await,
        InvalidArgument,
        "invalid VM name 'a/b': it contains '/'"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_with_markup_in_the_name_is_invalid_argument() {
    let h = harness().await;
    template(&h, "t").await;
    assert_error!(
        h.engine.vms.create("t", "<x>", "", Wait::Ended).await,
        InvalidArgument,
        "invalid VM name '<x>': it contains '<'"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn creation_from_a_template_whose_cdrom_vanished_is_invalid_argument() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("install.iso");
    write_bootable_iso(&iso);
    let iso = iso.to_str().unwrap().to_owned();
    h.engine
        .templates
        .create(TemplateSpec {
            name: "t".into(),
            cdrom: iso.clone(),
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    std::fs::remove_file(&iso).unwrap();
    assert_error!(
        h.engine.vms.create("t", "web", "", Wait::Ended).await,
        InvalidArgument,
        format!("the template's cdrom '{iso}' no longer exists")
    );
    assert!(h.engine.tasks.list().is_empty());
    // The name it would have had is free again.
    template(&h, "u").await;
    new_vm(&h, "u", "web", "").await;
}

// ---- creation: what the task makes ----

#[tokio::test]
async fn creation_makes_the_disks_and_the_guest_in_a_task_targeting_the_vm() {
    let h = harness().await;
    template(&h, "t").await;
    let task = new_vm(&h, "t", "web", "").await;
    assert_eq!(task.operation, "vm.create");
    assert_eq!(task.target_uri, "/vms/web");
    assert_eq!(task.message, "created VM 'web'");
    let vm = h.engine.model.vm_by_name("web").unwrap();
    assert_eq!(vm.state, VmState::Shutoff);
    assert_eq!(vm.disk_paths, ["/sim/default/web-0.img"]);
    assert_eq!(vm.created_volumes, ["/sim/default/web-0.img"]);
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

#[tokio::test]
async fn creation_attaches_the_templates_cdrom_without_claiming_it() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("install.iso");
    write_bootable_iso(&iso);
    let iso = iso.to_str().unwrap().to_owned();
    h.engine
        .templates
        .create(TemplateSpec {
            name: "t".into(),
            cdrom: iso.clone(),
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    new_vm(&h, "t", "web", "").await;
    let vm = h.engine.model.vm_by_name("web").unwrap();
    assert_eq!(vm.disk_paths, ["/sim/default/web-0.img".to_owned(), iso]);
    assert_eq!(vm.created_volumes, ["/sim/default/web-0.img"]);
}

#[tokio::test]
async fn disks_of_a_vm_in_a_directory_pool_are_qcow2() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "web", "").await;
    let vol = h.engine.volumes.get("default", "web-0.img").await.unwrap();
    assert_eq!(
        (vol.format.as_str(), vol.capacity_mib),
        ("qcow2", 10 * 1024)
    );
}

#[tokio::test]
async fn disks_of_a_vm_in_a_logical_pool_are_raw() {
    let h = harness().await;
    template(&h, "t").await;
    adopt_pool(&h, "lvm", "logical", true).await;
    new_vm(&h, "t", "web", "lvm").await;
    let vol = h.engine.volumes.get("lvm", "web-0.img").await.unwrap();
    assert_eq!(vol.format, "raw");
    assert!(h.sim.volume_names("default").is_empty());
}

#[tokio::test]
async fn an_empty_name_is_generated_from_the_template() {
    let h = harness().await;
    template(&h, "t").await;
    let task = new_vm(&h, "t", "", "").await;
    assert_eq!(task.target_uri, "/vms/t-vm-1");
    assert!(h.sim.has_domain("t-vm-1"));
}

#[tokio::test]
async fn a_generated_name_skips_names_vms_have() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "", "").await;
    let task = new_vm(&h, "t", "", "").await;
    assert_eq!(task.target_uri, "/vms/t-vm-2");
    assert!(h.engine.vms.get("t-vm-1").is_ok());
    assert!(h.engine.vms.get("t-vm-2").is_ok());
}

#[tokio::test]
async fn concurrent_creations_never_get_the_same_generated_name() {
    let h = harness().await;
    template(&h, "t").await;
    // On the current-thread runtime the first task cannot run before the second
    // creation reserves its name: only the reservation keeps the names apart.
    let a = h.engine.vms.create("t", "", "", Wait::No).await.unwrap();
    let b = h.engine.vms.create("t", "", "", Wait::No).await.unwrap();
    assert_eq!(a.state, TaskState::Running);
    assert_eq!(a.target_uri, "/vms/t-vm-1");
    assert_eq!(b.target_uri, "/vms/t-vm-2");
    for id in [a.id, b.id] {
        h.engine.tasks.wait(id).await;
        let t = h.engine.tasks.info(id).unwrap();
        assert_eq!(t.state, TaskState::Finished, "{}", t.message);
    }
    assert!(h.sim.has_domain("t-vm-1") && h.sim.has_domain("t-vm-2"));
}

#[tokio::test]
async fn a_name_being_created_is_already_exists_for_a_second_request() {
    let h = harness().await;
    template(&h, "t").await;
    let first = h.engine.vms.create("t", "web", "", Wait::No).await.unwrap();
    assert_error!(
        h.engine.vms.create("t", "web", "", Wait::No).await,
        AlreadyExists,
        "VM 'web' already exists"
    );
    h.engine.tasks.wait(first.id).await;
    assert_eq!(
        h.engine.tasks.info(first.id).unwrap().state,
        TaskState::Finished
    );
}

#[tokio::test]
async fn a_failed_creation_releases_its_generated_name() {
    let h = harness().await;
    template(&h, "t").await;
    h.sim.fail_next("define_guest", libvirt("cannot define"));
    let failed = h.engine.vms.create("t", "", "", Wait::Ended).await.unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.target_uri, "/vms/t-vm-1");
    let next = new_vm(&h, "t", "", "").await;
    assert_eq!(next.target_uri, "/vms/t-vm-1");
}

#[tokio::test]
async fn a_failed_creation_task_is_failed_with_the_errors_message_and_leaves_nothing() {
    let h = harness().await;
    template(&h, "t").await;
    h.sim.fail_next("define_guest", libvirt("XML error: bad"));
    let task = h
        .engine
        .vms
        .create("t", "web", "", Wait::Ended)
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.message, "libvirt: XML error: bad [code 1, domain 10]");
    assert_eq!(task.target_uri, "/vms/web");
    assert_ne!(task.end_usec, 0);
    assert!(h.sim.volume_names("default").is_empty());
    assert!(!h.sim.has_domain("web"));
    assert_error!(h.engine.vms.get("web"), NotFound, "no VM named 'web'");
}

// ---- creation: rollback decisions of `create_guest` ----

fn definition(name: &str) -> GuestDefinition {
    GuestDefinition {
        name: name.into(),
        kvm: true,
        memory_mib: 1024,
        cpus: 1,
        disk_bus: DiskBus::Virtio,
        disks: Vec::new(),
        cdrom: None,
        network: None,
        nic_model: "virtio".into(),
        icon: String::new(),
        created_volumes: Vec::new(),
    }
}

fn new_disk(vm: &str, index: u32) -> NewDisk {
    NewDisk {
        index,
        volume: format!("{vm}-{index}.img"),
        size_mib: 1024,
        source: String::new(),
    }
}

#[test]
fn a_failed_define_deletes_every_disk_created() {
    let sim = Sim::new();
    sim.fail_next("define_guest", libvirt("cannot define"));
    let disks = [new_disk("web", 0), new_disk("web", 1)];
    let mut def = definition("web");
    let err = create_guest(&*sim, "default", "qcow2", &disks, &mut def).unwrap_err();
    assert!(matches!(&err, Error::Libvirt { message, .. } if message == "cannot define"));
    assert!(sim.volume_names("default").is_empty());
    assert!(!sim.has_domain("web"));
    assert_eq!(sim.calls("delete_volume_at"), 2);
}

#[test]
fn a_failed_second_disk_deletes_the_first_and_only_what_was_created() {
    let sim = Sim::new();
    // The second disk's name is taken by a file that is not ours to remove.
    sim.add_volume("default", "web-1.img", "raw", 1);
    let disks = [new_disk("web", 0), new_disk("web", 1)];
    let mut def = definition("web");
    let err = create_guest(&*sim, "default", "qcow2", &disks, &mut def).unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists(m) if m == "storage volume 'web-1.img' already exists in pool 'default'"),
        "{err:?}"
    );
    assert_eq!(sim.volume_names("default"), ["web-1.img"]);
    assert_eq!(sim.calls("define_guest"), 0);
    assert!(!sim.has_domain("web"));
}

#[test]
fn a_failed_copy_deletes_the_disks_made_before_it() {
    let sim = Sim::new();
    sim.add_volume("default", "base.img", "qcow2", 1);
    sim.fail_next("clone_volume", libvirt("copy failed"));
    let disks = [
        new_disk("web", 0),
        NewDisk {
            source: "base.img".into(),
            ..new_disk("web", 1)
        },
    ];
    let mut def = definition("web");
    let err = create_guest(&*sim, "default", "qcow2", &disks, &mut def).unwrap_err();
    assert!(matches!(&err, Error::Libvirt { message, .. } if message == "copy failed"));
    assert_eq!(sim.volume_names("default"), ["base.img"]);
}

#[test]
fn a_successful_creation_records_the_created_volumes_in_the_domain() {
    let sim = Sim::new();
    let disks = [new_disk("web", 0), new_disk("web", 1)];
    let mut def = definition("web");
    let record = create_guest(&*sim, "default", "qcow2", &disks, &mut def).unwrap();
    let paths = ["/sim/default/web-0.img", "/sim/default/web-1.img"];
    assert_eq!(record.created_volumes, paths);
    assert_eq!(record.disk_paths, paths);
    assert_eq!(
        def.disks,
        [
            GuestDisk {
                index: 0,
                path: paths[0].into(),
                format: "qcow2".into()
            },
            GuestDisk {
                index: 1,
                path: paths[1].into(),
                format: "qcow2".into()
            },
        ]
    );
    assert_eq!(sim.calls("delete_volume_at"), 0);
}

// ---- deletion ----

#[tokio::test]
async fn delete_removes_the_vm_and_the_disks_kimchid_created() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "web", "").await;
    h.engine.vms.delete("web").await.unwrap();
    assert!(!h.sim.has_domain("web"));
    assert!(h.sim.volume_names("default").is_empty());
    assert_error!(h.engine.vms.get("web"), NotFound, "no VM named 'web'");
}

#[tokio::test]
async fn delete_keeps_disks_attached_by_other_means() {
    let h = harness().await;
    h.sim.add_volume("default", "web-0.img", "qcow2", 1);
    h.sim.add_volume("default", "data.img", "raw", 1);
    let mut def = definition("web");
    for (index, name) in [(0, "web-0.img"), (1, "data.img")] {
        def.disks.push(GuestDisk {
            index,
            path: format!("/sim/default/{name}"),
            format: "raw".into(),
        });
    }
    def.created_volumes = vec!["/sim/default/web-0.img".into()];
    let record = h.sim.define_guest(&def).unwrap();
    h.engine
        .model
        .apply(HostEvent::Domain {
            uuid: record.uuid,
            event: DomainEvent::Changed,
        })
        .await;
    h.engine.vms.delete("web").await.unwrap();
    assert!(!h.sim.has_domain("web"));
    assert_eq!(h.sim.volume_names("default"), ["data.img"]);
}

#[tokio::test]
async fn delete_of_an_unknown_vm_is_not_found() {
    let h = harness().await;
    assert_error!(
        h.engine.vms.delete("ghost").await,
        NotFound,
        "no VM named 'ghost'"
    );
    assert_eq!(h.sim.calls("undefine"), 0);
}

#[tokio::test]
async fn delete_with_a_disk_that_cannot_be_deleted_is_internal_naming_it_and_the_vm_is_gone() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "web", "").await;
    h.sim
        .fail_next("delete_volume_at", libvirt("cannot unlink file"));
    assert_error!(
        h.engine.vms.delete("web").await,
        Internal,
        "VM 'web' was deleted, but not all of its disks: /sim/default/web-0.img: \
         libvirt: cannot unlink file [code 1, domain 10]"
    );
    assert!(!h.sim.has_domain("web"));
    assert_error!(h.engine.vms.get("web"), NotFound, "no VM named 'web'");
}

#[tokio::test]
async fn delete_that_cannot_undefine_keeps_the_vm_and_its_disks() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "web", "").await;
    h.sim.fail_next("undefine", libvirt("cannot undefine"));
    match h.engine.vms.delete("web").await {
        Err(Error::Libvirt { message, .. }) => assert_eq!(message, "cannot undefine"),
        other => panic!("{other:?}"),
    }
    assert!(h.engine.vms.get("web").is_ok());
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

// ---- screenshots and consoles ----

#[tokio::test]
async fn screenshot_of_a_vm_that_is_not_running_is_not_found() {
    let h = harness().await;
    adopt(&h, "web", VmState::Shutoff).await;
    assert_error!(
        h.engine.vms.screenshot("web").await,
        NotFound,
        "VM 'web' is not running, so it has no screen"
    );
    assert_eq!(h.sim.calls("screenshot"), 0);
}

#[tokio::test]
async fn two_screenshots_within_five_seconds_take_one_capture() {
    let h = harness().await;
    adopt(&h, "web", VmState::Running).await;
    let first = h.engine.vms.screenshot("web").await.unwrap();
    let second = h.engine.vms.screenshot("web").await.unwrap();
    assert_eq!(first.as_slice(), SCREEN);
    assert_eq!(second.as_slice(), SCREEN);
    assert_eq!(h.sim.calls("screenshot"), 1);
}

#[tokio::test]
async fn console_of_a_vm_that_is_not_running_is_invalid_state() {
    let h = harness().await;
    let uuid = adopt(&h, "web", VmState::Shutoff).await;
    assert_error!(
        h.engine.vms.open_console(&uuid).await,
        InvalidState,
        "VM 'web' is not running; start it first"
    );
    assert_eq!(h.sim.calls("open_console"), 0);
}

#[tokio::test]
async fn console_of_an_unknown_uuid_is_not_found() {
    let h = harness().await;
    assert_error!(
        h.engine.vms.open_console("0000").await,
        NotFound,
        "no VM with UUID 0000"
    );
}

#[tokio::test]
async fn console_of_a_running_vm_without_vnc_is_invalid_state() {
    let h = harness().await;
    let uuid = adopt(&h, "web", VmState::Running).await;
    // The sim's guests all have VNC; the model is what the rule reads.
    let mut record = h.engine.model.vm_by_uuid(&uuid).unwrap();
    record.graphics_type = String::new();
    h.engine.model.upsert(record);
    assert_error!(
        h.engine.vms.open_console(&uuid).await,
        InvalidState,
        "VM 'web' has no VNC display to connect to"
    );
    assert_eq!(h.sim.calls("open_console"), 0);
}

#[tokio::test]
async fn console_of_a_running_vm_with_vnc_opens_a_socket() {
    let h = harness().await;
    let uuid = adopt(&h, "web", VmState::Running).await;
    h.engine.vms.open_console(&uuid).await.unwrap();
    assert_eq!(h.sim.calls("open_console"), 1);
}
