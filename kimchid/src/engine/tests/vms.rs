//! VMs: power rules, the checks made before a creation task starts, name
//! generation and reservation, what a failed creation leaves behind, deletion,
//! screenshots and consoles.

use kimchi_dbus::{TaskInfo, TaskState, TemplateDisk, TemplateSpec, VmInfo, VmState};

use super::{
    adopt, adopt_pool, assert_error, assert_libvirt_error, bootable_iso, libvirt, new_vm, spec,
    template, template_from, total_calls, with_cdrom, with_new_vm, with_template, with_vm,
};
use crate::engine::hypervisor::{
    DiskBus, DomainEvent, DomainRecord, GuestDefinition, GuestDisk, HostEvent, Hypervisor, Power,
};
use crate::engine::sim::{harness, Harness, Sim, SCREEN};
use crate::engine::tasks::Wait;
use crate::engine::vms::{create_guest, NewDisk};
use crate::error::{Error, Result};

// ---- listing ----

#[tokio::test]
async fn vms_are_listed_by_name_ignoring_case() {
    let h = harness().await;
    for name in ["web", "Zeta", "alpha", "Émile", "Beta", "db"] {
        adopt(&h, name, VmState::Shutoff).await;
    }
    let names: Vec<String> = h.engine.vms.list().into_iter().map(|vm| vm.name).collect();
    assert_eq!(names, ["alpha", "Beta", "db", "web", "Zeta", "Émile"]);
}

// ---- power ----

/// `action` asked of the engine for the VM named `name`.
async fn power(h: &Harness, action: Power, name: &str) -> Result<VmInfo> {
    h.engine.vms.power(name, action).await
}

#[tokio::test]
async fn a_power_action_the_state_allows_reaches_the_new_state() {
    for (action, from, to) in [
        (Power::On, VmState::Shutoff, VmState::Running),
        (Power::On, VmState::Crashed, VmState::Running),
        (Power::Off, VmState::Running, VmState::Shutoff),
        (Power::Off, VmState::Paused, VmState::Shutoff),
    ] {
        let (h, _) = with_vm(from).await;
        let vm = power(&h, action, "web").await.unwrap();
        let model = h.engine.vms.get("web").unwrap();
        let case = format!("{action:?} from {from:?}");
        assert_eq!((vm.state, model.state), (to, to), "{case}");
    }
}

/// Where the model shows the guest's state, kimchid refuses without asking libvirt.
/// Where the guest changed behind kimchid's back, the model lets the action through
/// and libvirt refuses it: the sentence is still kimchid's, for the real state, and
/// the model learns that state.
#[tokio::test]
async fn a_power_action_the_real_state_forbids_is_invalid_state_naming_that_state() {
    for (action, seen, real, asked, message) in [
        (
            Power::On,
            VmState::Running,
            VmState::Running,
            0,
            "VM 'web' is already running",
        ),
        (
            Power::On,
            VmState::Paused,
            VmState::Paused,
            0,
            "VM 'web' is already paused",
        ),
        (
            Power::Off,
            VmState::Shutoff,
            VmState::Shutoff,
            0,
            "VM 'web' is not running",
        ),
        (
            Power::On,
            VmState::Shutoff,
            VmState::Running,
            1,
            "VM 'web' is already running",
        ),
        (
            Power::Off,
            VmState::Running,
            VmState::Shutoff,
            1,
            "VM 'web' is not running",
        ),
    ] {
        let (h, uuid) = with_vm(seen).await;
        h.sim.set_state(&uuid, real);
        let case = format!("{action:?} of a {real:?} VM seen as {seen:?}");
        let refused = power(&h, action, "web").await;
        assert_error!(refused, InvalidState, message, "{case}");
        assert_eq!(h.sim.calls("power"), asked, "{case}: libvirt asked");
        let now = h.engine.vms.get("web").unwrap().state;
        assert_eq!(now, real, "{case}: the state in the model");
    }
}

/// A refusal for a reason other than the guest's state keeps libvirt's reason:
/// kimchid never replaces it with a guess.
#[tokio::test]
async fn a_power_action_libvirt_refuses_for_another_reason_gives_libvirts_reason() {
    for (action, from, reason) in [
        (
            Power::On,
            VmState::Shutoff,
            "Requested operation is not valid: network 'default' is not active",
        ),
        (
            Power::Off,
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
async fn actions_on_an_unknown_vm_are_not_found_without_asking_libvirt() {
    let h = harness().await;
    let before = total_calls(&h.sim);
    for action in [Power::On, Power::Off] {
        let refused = power(&h, action, "ghost").await;
        assert_error!(refused, NotFound, "no VM named 'ghost'", "{action:?}");
    }
    let deleted = h.engine.vms.delete("ghost").await;
    assert_error!(deleted, NotFound, "no VM named 'ghost'", "delete");
    let console = h.engine.vms.open_console("0000").await;
    assert_error!(console, NotFound, "no VM with UUID 0000", "console");
    assert_eq!(total_calls(&h.sim), before);
}

#[tokio::test]
async fn other_libvirt_failures_of_a_power_action_pass_through_unchanged() {
    let (h, _) = with_vm(VmState::Shutoff).await;
    h.sim
        .fail_next("power", libvirt("internal error: qemu died"));
    assert_libvirt_error(
        power(&h, Power::On, "web").await,
        "internal error: qemu died",
    );
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Shutoff);
}

// ---- creation: checks before the task ----

/// Creation of VM `name` from `template` in `pool`, which must start no task.
async fn create_without_a_task(
    h: &Harness,
    template: &str,
    name: &str,
    pool: &str,
) -> Result<TaskInfo> {
    let result = h.engine.vms.create(template, name, pool, Wait::Ended).await;
    assert!(
        h.engine.tasks.list().is_empty(),
        "a task started: {result:?}"
    );
    result
}

/// Template `copy` with one disk, a copy of `volume`.
fn copying(volume: &str) -> TemplateSpec {
    let disk = TemplateDisk {
        index: 0,
        size_gb: 0,
        volume: volume.into(),
    };
    TemplateSpec {
        disks: vec![disk],
        ..spec("copy")
    }
}

#[tokio::test]
async fn creation_from_an_unknown_template_or_in_an_unknown_pool_is_not_found() {
    let h = with_template().await;
    for (template, pool, message) in [
        ("nope", "", "no template named 'nope'"),
        ("t", "nope", "no storage pool named 'nope'"),
    ] {
        let refused = create_without_a_task(&h, template, "web", pool).await;
        assert_error!(refused, NotFound, message, "{template:?} in {pool:?}");
    }
}

#[tokio::test]
async fn creation_with_arguments_that_cannot_work_is_invalid_argument() {
    let h = with_template().await;
    template_from(&h, copying("base.img")).await;
    for (case, template, name, pool, message) in [
        (
            "into the ISO view",
            "t",
            "web",
            "kimchi_isos",
            "kimchi_isos is a read-only view and cannot hold VM disks",
        ),
        (
            "a path in the name",
            "t",
            "a/b",
            "",
            "invalid VM name 'a/b': it contains '/'",
        ),
        (
            "markup in the name",
            "t",
            "<x>",
            "",
            "invalid VM name '<x>': it contains '<'",
        ),
        (
            "a copy of a volume the pool lacks",
            "copy",
            "web",
            "",
            "the template copies volume 'base.img', which pool 'default' does not have",
        ),
    ] {
        let refused = create_without_a_task(&h, template, name, pool).await;
        assert_error!(refused, InvalidArgument, message, "{case}");
    }
}

#[tokio::test]
async fn creation_in_an_inactive_pool_is_invalid_state() {
    let h = with_template().await;
    adopt_pool(&h, "cold", "dir", false).await;
    assert_error!(
        create_without_a_task(&h, "t", "web", "cold").await,
        InvalidState,
        "storage pool 'cold' is not active; activate it first"
    );
}

#[tokio::test]
async fn creation_with_a_name_a_vm_or_a_disk_has_is_already_exists_and_makes_nothing() {
    let h = with_template().await;
    adopt(&h, "web", VmState::Shutoff).await;
    h.sim.add_volume("default", "db-0.img", "qcow2", 1);
    for (name, message) in [
        ("web", "VM 'web' already exists"),
        (
            "db",
            "storage volume 'db-0.img' already exists in pool 'default'",
        ),
    ] {
        let refused = create_without_a_task(&h, "t", name, "").await;
        assert_error!(refused, AlreadyExists, message, "name {name:?}");
    }
    assert_eq!(h.sim.calls("create_volume"), 0);
    assert_eq!(h.sim.volume_names("default"), ["db-0.img"]);
}

#[tokio::test]
async fn creation_copying_a_volume_the_pool_has_clones_it() {
    let h = harness().await;
    h.sim.add_volume("default", "base.img", "qcow2", 2048);
    template_from(&h, copying("base.img")).await;
    new_vm(&h, "copy", "web", "").await;
    let calls = (h.sim.calls("clone_volume"), h.sim.calls("create_volume"));
    assert_eq!(calls, (1, 0));
    assert_eq!(h.sim.volume_names("default"), ["base.img", "web-0.img"]);
}

#[tokio::test]
async fn creation_from_a_template_whose_cdrom_vanished_is_invalid_argument() {
    let h = harness().await;
    let (_dir, iso) = bootable_iso();
    template_from(&h, with_cdrom("t", &iso)).await;
    std::fs::remove_file(&iso).unwrap();
    assert_error!(
        create_without_a_task(&h, "t", "web", "").await,
        InvalidArgument,
        format!("the template's cdrom '{iso}' no longer exists")
    );
    // The name it would have had is free again.
    template(&h, "u").await;
    new_vm(&h, "u", "web", "").await;
}

// ---- creation: what the task makes ----

#[tokio::test]
async fn creation_makes_the_disks_and_the_guest_in_a_task_targeting_the_vm() {
    let h = with_template().await;
    let task = new_vm(&h, "t", "web", "").await;
    assert_eq!(task.operation, "vm.create");
    assert_eq!(task.target_uri, "/vms/web");
    assert_eq!(task.message, "created VM 'web'");
    let vm = h.engine.model.vm_by_name("web").unwrap();
    assert_eq!(vm.state, VmState::Shutoff);
    assert_eq!(
        vm.disk_paths().collect::<Vec<_>>(),
        ["/sim/default/web-0.img"]
    );
    assert_eq!(vm.created_volumes, ["/sim/default/web-0.img"]);
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

#[tokio::test]
async fn creation_attaches_the_templates_cdrom_without_claiming_it() {
    let h = harness().await;
    let (_dir, iso) = bootable_iso();
    template_from(&h, with_cdrom("t", &iso)).await;
    new_vm(&h, "t", "web", "").await;
    let vm = h.engine.model.vm_by_name("web").unwrap();
    assert_eq!(
        vm.disk_paths().collect::<Vec<_>>(),
        ["/sim/default/web-0.img", iso.as_str()]
    );
    assert_eq!(vm.created_volumes, ["/sim/default/web-0.img"]);
}

#[tokio::test]
async fn disks_of_a_vm_in_a_directory_pool_are_qcow2() {
    let h = with_new_vm("").await;
    let vol = h.engine.volumes.get("default", "web-0.img").await.unwrap();
    assert_eq!(
        (vol.format.as_str(), vol.capacity_mib),
        ("qcow2", 10 * 1024)
    );
}

#[tokio::test]
async fn disks_of_a_vm_in_a_logical_pool_are_raw() {
    let h = with_new_vm("lvm").await;
    let vol = h.engine.volumes.get("lvm", "web-0.img").await.unwrap();
    assert_eq!(vol.format, "raw");
    assert!(h.sim.volume_names("default").is_empty());
}

#[tokio::test]
async fn an_empty_name_is_generated_from_the_template() {
    let h = with_template().await;
    let task = new_vm(&h, "t", "", "").await;
    assert_eq!(task.target_uri, "/vms/t-vm-1");
    assert!(h.sim.has_domain("t-vm-1"));
}

#[tokio::test]
async fn a_generated_name_skips_names_vms_have() {
    let h = with_template().await;
    new_vm(&h, "t", "", "").await;
    let task = new_vm(&h, "t", "", "").await;
    assert_eq!(task.target_uri, "/vms/t-vm-2");
    assert!(h.engine.vms.get("t-vm-1").is_ok());
    assert!(h.engine.vms.get("t-vm-2").is_ok());
}

#[tokio::test]
async fn concurrent_creations_never_get_the_same_generated_name() {
    let h = with_template().await;
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
    let h = with_template().await;
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
    let h = with_template().await;
    h.sim.fail_next("define_guest", libvirt("cannot define"));
    let failed = h.engine.vms.create("t", "", "", Wait::Ended).await.unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.target_uri, "/vms/t-vm-1");
    let next = new_vm(&h, "t", "", "").await;
    assert_eq!(next.target_uri, "/vms/t-vm-1");
}

#[tokio::test]
async fn a_failed_creation_task_is_failed_with_the_errors_message_and_leaves_nothing() {
    let h = with_template().await;
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
        uuid: format!("00000000-0000-4000-8000-{:012}", name.len()),
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

/// `create_guest` of VM `web` with `disks` in pool `default` of `sim`, and the
/// definition as it left it.
fn create_web(sim: &Sim, disks: &[NewDisk]) -> (Result<DomainRecord>, GuestDefinition) {
    let mut def = definition("web");
    let result = create_guest(sim, "default", "qcow2", disks, &mut def);
    (result, def)
}

#[test]
fn a_failed_define_deletes_every_disk_created() {
    let sim = Sim::new();
    sim.fail_next("define_guest", libvirt("cannot define"));
    let (result, _) = create_web(&sim, &[new_disk("web", 0), new_disk("web", 1)]);
    assert_libvirt_error(result, "cannot define");
    assert!(sim.volume_names("default").is_empty());
    assert!(!sim.has_domain("web"));
    assert_eq!(sim.calls("delete_volume_at"), 2);
}

#[test]
fn a_failed_second_disk_deletes_the_first_and_only_what_was_created() {
    let sim = Sim::new();
    // The second disk's name is taken by a file that is not ours to remove.
    sim.add_volume("default", "web-1.img", "raw", 1);
    let (result, _) = create_web(&sim, &[new_disk("web", 0), new_disk("web", 1)]);
    assert_error!(
        result,
        AlreadyExists,
        "storage volume 'web-1.img' already exists in pool 'default'"
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
    let copy = NewDisk {
        source: "base.img".into(),
        ..new_disk("web", 1)
    };
    let (result, _) = create_web(&sim, &[new_disk("web", 0), copy]);
    assert_libvirt_error(result, "copy failed");
    assert_eq!(sim.volume_names("default"), ["base.img"]);
}

#[test]
fn a_successful_creation_records_the_created_volumes_in_the_domain() {
    let sim = Sim::new();
    let (result, def) = create_web(&sim, &[new_disk("web", 0), new_disk("web", 1)]);
    let record = result.unwrap();
    let paths = ["/sim/default/web-0.img", "/sim/default/web-1.img"];
    assert_eq!(record.created_volumes, paths);
    assert_eq!(record.disk_paths().collect::<Vec<_>>(), paths);
    let disk = |index: u32| GuestDisk {
        index,
        path: paths[index as usize].into(),
        format: "qcow2".into(),
    };
    assert_eq!(def.disks, [disk(0), disk(1)]);
    assert_eq!(sim.calls("delete_volume_at"), 0);
}

// ---- deletion ----

#[tokio::test]
async fn delete_removes_the_vm_and_the_disks_kimchid_created() {
    let h = with_new_vm("").await;
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
async fn delete_with_a_disk_that_cannot_be_deleted_is_internal_naming_it_and_the_vm_is_gone() {
    let h = with_new_vm("").await;
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
    let h = with_new_vm("").await;
    h.sim.fail_next("undefine", libvirt("cannot undefine"));
    assert_libvirt_error(h.engine.vms.delete("web").await, "cannot undefine");
    assert!(h.engine.vms.get("web").is_ok());
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

// ---- screenshots and consoles ----

#[tokio::test]
async fn screenshot_of_a_vm_that_is_not_running_is_not_found() {
    let (h, _) = with_vm(VmState::Shutoff).await;
    assert_error!(
        h.engine.vms.screenshot("web").await,
        NotFound,
        "VM 'web' is not running, so it has no screen"
    );
    assert_eq!(h.sim.calls("screenshot"), 0);
}

#[tokio::test]
async fn two_screenshots_within_five_seconds_take_one_capture() {
    let (h, _) = with_vm(VmState::Running).await;
    let first = h.engine.vms.screenshot("web").await.unwrap();
    let second = h.engine.vms.screenshot("web").await.unwrap();
    assert_eq!(first.as_slice(), SCREEN);
    assert_eq!(second.as_slice(), SCREEN);
    assert_eq!(h.sim.calls("screenshot"), 1);
}

#[tokio::test]
async fn console_of_a_vm_not_running_or_without_vnc_is_invalid_state() {
    for (state, graphics, message) in [
        (
            VmState::Shutoff,
            "vnc",
            "VM 'web' is not running; start it first",
        ),
        (
            VmState::Running,
            "",
            "VM 'web' has no VNC display to connect to",
        ),
    ] {
        let (h, uuid) = with_vm(state).await;
        // The sim's guests all have VNC; the model is what the rule reads.
        let mut record = h.engine.model.vm_by_uuid(&uuid).unwrap();
        record.graphics_type = graphics.into();
        h.engine.model.upsert(record);
        let refused = h.engine.vms.open_console(&uuid).await;
        assert_error!(refused, InvalidState, message, "{state:?}, {graphics:?}");
        assert_eq!(h.sim.calls("open_console"), 0, "{state:?}");
    }
}

/// The guest stopped after the model last looked: libvirt's "monitor must not be
/// NULL" becomes the state it is in; other refusals keep libvirt's reason.
#[tokio::test]
async fn a_console_libvirt_cannot_open_names_the_state_the_vm_is_in_now() {
    let monitor_gone = || Error::Libvirt {
        code: 8,
        domain: 10,
        message: "invalid argument: monitor must not be NULL".into(),
    };
    let (h, uuid) = with_vm(VmState::Running).await;
    h.sim.set_state(&uuid, VmState::Shutoff);
    h.sim.fail_next("open_console", monitor_gone());
    let refused = h.engine.vms.open_console(&uuid).await;
    assert_error!(
        refused,
        InvalidState,
        "VM 'web' is not running; start it first"
    );
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Shutoff);

    let (h, uuid) = with_vm(VmState::Running).await;
    h.sim.fail_next("open_console", monitor_gone());
    let refused = h.engine.vms.open_console(&uuid).await;
    assert!(
        matches!(refused, Err(Error::Libvirt { code: 8, .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn console_of_a_running_vm_with_vnc_opens_a_socket() {
    let (h, uuid) = with_vm(VmState::Running).await;
    h.engine.vms.open_console(&uuid).await.unwrap();
    assert_eq!(h.sim.calls("open_console"), 1);
}
