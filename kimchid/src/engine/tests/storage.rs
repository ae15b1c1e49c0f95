//! Storage: pools (beyond the definition checks tested in `storage_pools.rs`),
//! volumes and their busy marks, and the `kimchi_isos` view.

use kimchi_dbus::{PoolSpec, PoolState, TaskInfo, TaskState, VolumeSpec, MIB};

use super::{adopt_pool, assert_error, libvirt, total_calls, with_new_vm};
use crate::engine::hypervisor::{HostEvent, Hypervisor, PoolDefinition};
use crate::engine::sim::{harness, Harness, SIM_POOL_BYTES};
use crate::engine::storage_pools::MAX_POOL_NAME_BYTES;
use crate::engine::storage_volumes::QCOW2_MAX_BYTES;
use crate::engine::tasks::Wait;
use crate::error::{Error, Result};

fn dir_pool(name: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        pool_type: "dir".into(),
        path: format!("/srv/{name}"),
        source_host: String::new(),
        source_path: String::new(),
        source_devices: Vec::new(),
    }
}

fn volume(name: &str, capacity_mib: u64, format: &str) -> VolumeSpec {
    VolumeSpec {
        name: name.into(),
        capacity_mib,
        allocation_mib: 0,
        format: format.into(),
    }
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| name(i).to_owned()).collect()
}

/// The names of the pools the engine lists, in its order.
fn pool_names(h: &Harness) -> Vec<String> {
    names(&h.engine.pools.list(), |p| &p.name)
}

/// How many volumes the model counts in `pool`.
fn counted(h: &Harness, pool: &str) -> u32 {
    h.engine.model.pool_by_name(pool).unwrap().nr_volumes
}

/// How many images the `kimchi_isos` view counts, as the pool list shows it.
fn iso_view_count(h: &Harness) -> u32 {
    h.engine.pools.list().last().unwrap().nr_volumes
}

/// A fresh harness whose `default` pool holds volume `name`, unknown to the model.
async fn with_volume(name: &str, format: &str, capacity_mib: u64) -> Harness {
    let h = harness().await;
    h.sim.add_volume("default", name, format, capacity_mib);
    h
}

/// What a caller may ask of a pool.
#[derive(Clone, Copy, Debug)]
enum PoolChange {
    Activate,
    Deactivate,
    Delete,
}

/// `change` asked of the engine for pool `name`.
async fn change_pool(h: &Harness, change: PoolChange, name: &str) -> Result<()> {
    let pools = &h.engine.pools;
    match change {
        PoolChange::Activate => pools.activate(name).await.map(drop),
        PoolChange::Deactivate => pools.deactivate(name).await.map(drop),
        PoolChange::Delete => pools.delete(name).await,
    }
}

const POOL_CHANGES: [PoolChange; 3] = [
    PoolChange::Activate,
    PoolChange::Deactivate,
    PoolChange::Delete,
];

/// What a caller may ask of a volume; a creation makes a raw volume of 1 MiB.
#[derive(Clone, Copy, Debug, PartialEq)]
enum VolumeChange {
    Create,
    Wipe,
    Resize(u64),
    Delete,
}

/// Every change, creation first.
const VOLUME_CHANGES: [VolumeChange; 4] = [
    VolumeChange::Create,
    VolumeChange::Wipe,
    VolumeChange::Resize(20),
    VolumeChange::Delete,
];

/// `change` asked of the engine for volume `name` of `pool`, its task awaited.
async fn change_volume(h: &Harness, pool: &str, name: &str, change: VolumeChange) -> Result<()> {
    let volumes = &h.engine.volumes;
    match change {
        VolumeChange::Create => volumes
            .create(pool, volume(name, 1, "raw"), Wait::Ended)
            .await
            .map(drop),
        VolumeChange::Wipe => volumes.wipe(pool, name, Wait::Ended).await.map(drop),
        VolumeChange::Resize(mib) => volumes.resize(pool, name, mib, Wait::Ended).await.map(drop),
        VolumeChange::Delete => volumes.delete(pool, name).await,
    }
}

/// The creation of `spec` in `pool`, its task awaited.
async fn create_volume(h: &Harness, pool: &str, spec: VolumeSpec) -> Result<TaskInfo> {
    h.engine.volumes.create(pool, spec, Wait::Ended).await
}

/// How many changes of a volume's content the sim has made: creations, copies,
/// resizes, wipes and deletions.
fn volume_writes(h: &Harness) -> usize {
    [
        "wipe_volume",
        "resize_volume",
        "create_volume",
        "clone_volume",
        "delete_volume_at",
        "delete_volume",
    ]
    .iter()
    .map(|m| h.sim.calls(m))
    .sum()
}

// ---- pools ----

#[tokio::test]
async fn a_created_pool_is_inactive_and_listed_before_the_iso_view() {
    let h = harness().await;
    let pool = h.engine.pools.create(dir_pool("p1")).await.unwrap();
    assert_eq!(pool.name, "p1");
    assert_eq!(pool.state, PoolState::Inactive);
    assert_eq!(pool.pool_type, "dir");
    assert_eq!(
        (pool.capacity_mib, pool.available_mib, pool.nr_volumes),
        (0, 0, 0)
    );
    assert_eq!(pool_names(&h), ["default", "p1", "kimchi_isos"]);
    assert_eq!(h.engine.pools.list()[1], pool);
}

#[tokio::test]
async fn creating_a_pool_with_a_taken_name_is_already_exists() {
    let h = harness().await;
    h.engine.pools.create(dir_pool("p1")).await.unwrap();
    assert_error!(
        h.engine.pools.create(dir_pool("p1")).await,
        AlreadyExists,
        "a storage pool named 'p1' already exists"
    );
    assert_eq!(h.sim.calls("define_pool"), 1);
}

#[tokio::test]
async fn activate_then_deactivate_round_trips_in_the_model() {
    let h = harness().await;
    h.engine.pools.create(dir_pool("p1")).await.unwrap();
    let active = h.engine.pools.activate("p1").await.unwrap();
    assert_eq!(active.state, PoolState::Active);
    assert_eq!(active.capacity_mib, 100 * 1024);
    assert_eq!(h.engine.pools.list()[1], active);
    let inactive = h.engine.pools.deactivate("p1").await.unwrap();
    assert_eq!(inactive.state, PoolState::Inactive);
    assert_eq!(inactive.capacity_mib, 0);
    assert_eq!(h.engine.pools.list()[1], inactive);
}

/// Activating is libvirt's refusal passed on; deleting is kimchid's own check.
#[tokio::test]
async fn a_pool_change_an_active_pool_forbids_is_invalid_state_and_keeps_it() {
    let h = harness().await;
    for (change, message) in [
        (
            PoolChange::Activate,
            "storage pool 'default' is already active",
        ),
        (
            PoolChange::Delete,
            "storage pool 'default' is active; deactivate it before deleting it",
        ),
    ] {
        let refused = change_pool(&h, change, "default").await;
        assert_error!(refused, InvalidState, message, "{change:?}");
        assert_eq!(pool_names(&h), ["default", "kimchi_isos"], "{change:?}");
    }
}

#[tokio::test]
async fn deleting_an_inactive_pool_removes_it_from_the_list() {
    let h = harness().await;
    h.engine.pools.create(dir_pool("p1")).await.unwrap();
    h.engine.pools.delete("p1").await.unwrap();
    assert_eq!(pool_names(&h), ["default", "kimchi_isos"]);
    assert_error!(
        h.engine.pools.get("p1").await,
        NotFound,
        "no storage pool named 'p1'"
    );
}

#[tokio::test]
async fn changes_to_an_unknown_pool_or_volume_are_not_found() {
    let h = harness().await;
    for change in POOL_CHANGES {
        let refused = change_pool(&h, change, "nope").await;
        assert_error!(
            refused,
            NotFound,
            "no storage pool named 'nope'",
            "{change:?}"
        );
    }
    for change in &VOLUME_CHANGES[1..] {
        let refused = change_volume(&h, "default", "nope", *change).await;
        let message = "no storage volume 'nope' in pool 'default'";
        assert_error!(refused, NotFound, message, "{change:?}");
    }
}

#[tokio::test]
async fn changes_to_the_iso_view_or_its_images_are_not_supported() {
    let h = with_volume("a.iso", "iso", 10).await;
    let read_only = "kimchi_isos is a read-only view";
    for change in POOL_CHANGES {
        let refused = change_pool(&h, change, "kimchi_isos").await;
        assert_error!(refused, NotSupported, read_only, "{change:?}");
    }
    for change in VOLUME_CHANGES {
        let refused = change_volume(&h, "kimchi_isos", "default:a.iso", change).await;
        assert_error!(refused, NotSupported, read_only, "{change:?}");
    }
    assert_eq!(h.sim.volume_names("default"), ["a.iso"]);
}

// ---- volume creation ----

#[tokio::test]
async fn a_created_volume_is_listed_and_counted_in_its_pool() {
    let h = harness().await;
    let task = create_volume(&h, "default", volume("v1", 100, "qcow2"))
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Finished, "{}", task.message);
    assert_eq!(task.operation, "storagevolume.create");
    assert_eq!(task.target_uri, "/storagepools/default/storagevolumes/v1");
    assert_eq!(task.message, "created /sim/default/v1");
    let listed = h.engine.volumes.list("default").await.unwrap();
    assert_eq!(names(&listed, |v| &v.name), ["v1"]);
    assert_eq!(
        (listed[0].capacity_mib, listed[0].format.as_str()),
        (100, "qcow2")
    );
    assert_eq!(counted(&h, "default"), 1);
    assert_eq!(h.engine.pools.list()[0].nr_volumes, 1);
}

#[tokio::test]
async fn a_volume_spec_the_rules_refuse_is_invalid_argument_before_any_task() {
    let h = harness().await;
    let too_large = u64::MAX / MIB;
    for (spec, message) in [
        (
            volume("v1", 100, "vmdk"),
            "volume format must be one of [\"qcow2\", \"raw\"], not 'vmdk'".to_owned(),
        ),
        (
            volume("v1", 0, "raw"),
            format!("capacity must be between 1 and {too_large} MiB, not 0"),
        ),
        (
            volume("../v1", 1, "raw"),
            "invalid volume name '../v1': it contains '/'".to_owned(),
        ),
        (
            VolumeSpec {
                allocation_mib: 101,
                ..volume("v1", 100, "raw")
            },
            "allocation (101 MiB) is larger than the capacity (100 MiB)".to_owned(),
        ),
    ] {
        let case = format!("{spec:?}");
        let refused = create_volume(&h, "default", spec).await;
        assert_error!(refused, InvalidArgument, message, "{case}");
    }
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn a_preallocated_volume_is_created_with_its_allocation() {
    let h = harness().await;
    let spec = VolumeSpec {
        allocation_mib: 60,
        ..volume("pre", 100, "raw")
    };
    let task = create_volume(&h, "default", spec).await.unwrap();
    assert_eq!(task.state, TaskState::Finished, "{task:?}");
    let vol = h.engine.volumes.get("default", "pre").await.unwrap();
    assert_eq!((vol.capacity_mib, vol.allocation_mib), (100, 60));
}

#[tokio::test]
async fn a_volume_in_an_inactive_pool_is_invalid_state() {
    let h = harness().await;
    adopt_pool(&h, "cold", "dir", false).await;
    assert_error!(
        create_volume(&h, "cold", volume("v1", 1, "raw")).await,
        InvalidState,
        "storage pool 'cold' is not active; activate it first"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn a_volume_with_a_taken_name_is_already_exists_before_any_task() {
    let h = with_volume("v1", "raw", 1).await;
    assert_error!(
        create_volume(&h, "default", volume("v1", 1, "raw")).await,
        AlreadyExists,
        "storage volume 'v1' already exists in pool 'default'"
    );
    assert!(h.engine.tasks.list().is_empty());
    // The refused request left no busy mark.
    drop(h.engine.volumes.claim("default", "v1").unwrap());
}

#[tokio::test]
async fn a_failed_volume_task_is_failed_with_libvirts_message_and_frees_the_volume() {
    let h = harness().await;
    h.sim
        .fail_next("create_volume", libvirt("cannot allocate 100 MiB"));
    let task = create_volume(&h, "default", volume("v1", 100, "raw"))
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(
        task.message,
        "libvirt: cannot allocate 100 MiB [code 1, domain 10]"
    );
    assert!(h.sim.volume_names("default").is_empty());
    drop(h.engine.volumes.claim("default", "v1").unwrap());
    let retried = create_volume(&h, "default", volume("v1", 100, "raw"))
        .await
        .unwrap();
    assert_eq!(retried.state, TaskState::Finished, "{}", retried.message);
}

// ---- busy volumes ----

const BUSY: &str = "volume 'v1' in pool 'default' has an operation in progress";

#[tokio::test]
async fn changing_a_busy_volume_is_busy_and_touches_nothing() {
    for change in VOLUME_CHANGES {
        let h = harness().await;
        if change != VolumeChange::Create {
            h.sim.add_volume("default", "v1", "raw", 10);
        }
        let before = h.sim.volume_names("default");
        let _guard = h.engine.volumes.claim("default", "v1").unwrap();
        let refused = change_volume(&h, "default", "v1", change).await;
        assert_error!(refused, Busy, BUSY, "{change:?}");
        assert!(h.engine.tasks.list().is_empty(), "{change:?}");
        assert_eq!(volume_writes(&h), 0, "{change:?}");
        assert_eq!(h.sim.volume_names("default"), before, "{change:?}");
    }
}

#[tokio::test]
async fn claiming_a_claimed_volume_is_busy() {
    let h = harness().await;
    let _guard = h.engine.volumes.claim("default", "v1").unwrap();
    assert_error!(h.engine.volumes.claim("default", "v1"), Busy, BUSY);
}

#[tokio::test]
async fn dropping_the_guard_frees_the_volume() {
    let h = with_volume("v1", "raw", 10).await;
    let guard = h.engine.volumes.claim("default", "v1").unwrap();
    drop(guard);
    h.engine.volumes.delete("default", "v1").await.unwrap();
    assert!(h.sim.volume_names("default").is_empty());
}

#[tokio::test]
async fn a_busy_mark_is_per_pool_and_name() {
    let h = harness().await;
    adopt_pool(&h, "other", "dir", true).await;
    h.sim.add_volume("other", "v1", "raw", 10);
    let _guard = h.engine.volumes.claim("default", "v1").unwrap();
    h.engine.volumes.delete("other", "v1").await.unwrap();
}

/// A pool does not go away under a volume task, nor does a task start on a pool
/// going away.
#[tokio::test]
async fn a_pool_with_a_busy_volume_is_not_deactivated_or_deleted_and_the_reverse() {
    let h = harness().await;
    adopt_pool(&h, "other", "dir", true).await;
    h.sim.add_volume("other", "v1", "raw", 10);
    let guard = h.engine.volumes.claim("other", "v1").unwrap();
    let busy = "volume 'v1' in pool 'other' has an operation in progress";
    assert_error!(h.engine.pools.deactivate("other").await, Busy, busy);
    assert_error!(h.engine.pools.delete("other").await, Busy, busy);
    assert_eq!(
        h.sim.calls("deactivate_pool") + h.sim.calls("undefine_pool"),
        0
    );
    // Another pool's volumes do not count.
    let _elsewhere = h.engine.volumes.claim("default", "v1").unwrap();
    drop(guard);
    h.engine.pools.deactivate("other").await.unwrap();

    let pool_busy = h.engine.pools.claim_pool("other").unwrap();
    assert_error!(
        h.engine.volumes.claim("other", "v1"),
        Busy,
        "storage pool 'other' is being deactivated or deleted"
    );
    drop(pool_busy);
    drop(h.engine.volumes.claim("other", "v1").unwrap());
}

// ---- volume operations ----

#[tokio::test]
async fn wiping_an_unused_volume_finishes() {
    let h = with_volume("v1", "qcow2", 10).await;
    let task = h
        .engine
        .volumes
        .wipe("default", "v1", Wait::Ended)
        .await
        .unwrap();
    assert_eq!(
        (task.state, task.message.as_str(), task.operation.as_str()),
        (TaskState::Finished, "wiped", "storagevolume.wipe")
    );
    assert_eq!(h.sim.calls("wipe_volume"), 1);
}

/// Growing any unused volume, and shrinking an unused raw one.
#[tokio::test]
async fn resizing_an_unused_volume_the_format_allows_sets_its_capacity() {
    for (format, from, to) in [("qcow2", 10, 20), ("raw", 100, 50)] {
        let h = with_volume("v1", format, from).await;
        let task = h
            .engine
            .volumes
            .resize("default", "v1", to, Wait::Ended)
            .await
            .unwrap();
        let case = format!("{format} from {from} to {to} MiB");
        let resized = format!("resized to {to} MiB");
        assert_eq!(
            (task.state, task.message),
            (TaskState::Finished, resized),
            "{case}"
        );
        let vol = h.engine.volumes.get("default", "v1").await.unwrap();
        assert_eq!(vol.capacity_mib, to, "{case}");
    }
}

#[tokio::test]
async fn shrinking_a_qcow2_volume_is_invalid_state() {
    let h = with_volume("v1", "qcow2", 100).await;
    assert_error!(
        change_volume(&h, "default", "v1", VolumeChange::Resize(50)).await,
        InvalidState,
        "cannot shrink qcow2 volume 'v1': only raw volumes can shrink"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn wiping_or_deleting_a_volume_a_vm_uses_is_invalid_state() {
    let h = with_new_vm("").await;
    let writes = volume_writes(&h);
    for change in [VolumeChange::Wipe, VolumeChange::Delete] {
        let refused = change_volume(&h, "default", "web-0.img", change).await;
        let message = "volume 'web-0.img' is used by a virtual machine";
        assert_error!(refused, InvalidState, message, "{change:?}");
    }
    assert_eq!(volume_writes(&h), writes);
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

#[tokio::test]
async fn shrinking_a_raw_volume_a_vm_uses_is_invalid_state() {
    // A logical pool gives the VM a raw disk, which could otherwise shrink.
    let h = with_new_vm("lvm").await;
    assert_error!(
        change_volume(&h, "lvm", "web-0.img", VolumeChange::Resize(1024)).await,
        InvalidState,
        "cannot shrink volume 'web-0.img': a virtual machine uses it"
    );
    assert_eq!(h.sim.calls("resize_volume"), 0);
}

#[tokio::test]
async fn growing_a_volume_a_vm_uses_is_allowed() {
    let h = with_new_vm("").await;
    let task = h
        .engine
        .volumes
        .resize("default", "web-0.img", 20 * 1024, Wait::Ended)
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Finished, "{}", task.message);
}

#[tokio::test]
async fn deleting_a_volume_updates_its_pools_count() {
    let h = with_volume("v1", "raw", 10).await;
    h.engine.volumes.list("default").await.unwrap();
    assert_eq!(counted(&h, "default"), 1);
    h.engine.volumes.delete("default", "v1").await.unwrap();
    assert_eq!(counted(&h, "default"), 0);
}

// ---- the kimchi_isos view ----

#[tokio::test]
async fn listing_pools_counts_known_iso_images_without_asking_libvirt() {
    let h = with_volume("a.iso", "iso", 10).await;
    h.sim.add_volume("default", "disk.img", "qcow2", 10);
    h.engine.volumes.list("default").await.unwrap();
    let before = total_calls(&h.sim);
    let pools = h.engine.pools.list();
    assert_eq!(total_calls(&h.sim), before);
    let isos = pools.last().unwrap();
    assert_eq!(isos.name, "kimchi_isos");
    assert_eq!(isos.state, PoolState::Active);
    assert_eq!(isos.nr_volumes, 1);
}

#[tokio::test]
async fn iso_view_names_images_by_pool_and_file() {
    let h = with_volume("a.iso", "iso", 10).await;
    h.sim.add_volume("default", "disk.img", "qcow2", 10);
    adopt_pool(&h, "media", "dir", true).await;
    h.sim.add_volume("media", "b.iso", "iso", 10);
    let listed = h.engine.volumes.list("kimchi_isos").await.unwrap();
    assert_eq!(
        names(&listed, |v| &v.name),
        ["default:a.iso", "media:b.iso"]
    );
    assert_eq!(listed[0].pool, "default");
    assert_eq!(listed[0].file_path, "/sim/default/a.iso");
    assert!(listed[0].iso);
    assert_eq!(iso_view_count(&h), 2);
}

#[tokio::test]
async fn an_iso_view_image_is_found_by_its_view_name() {
    let h = with_volume("a.iso", "iso", 10).await;
    let found = h.engine.volumes.get("kimchi_isos", "default:a.iso").await;
    assert_eq!(found.unwrap().file_path, "/sim/default/a.iso");
    assert_error!(
        h.engine.volumes.get("kimchi_isos", "a.iso").await,
        NotFound,
        "no ISO image 'a.iso' in kimchi_isos"
    );
}

#[tokio::test]
async fn deactivating_a_pool_drops_its_images_from_the_iso_view() {
    let h = with_volume("a.iso", "iso", 10).await;
    h.engine.volumes.list("default").await.unwrap();
    assert_eq!(iso_view_count(&h), 1);
    h.engine.pools.deactivate("default").await.unwrap();
    assert_eq!(iso_view_count(&h), 0);
    let listed = h.engine.volumes.list("kimchi_isos").await.unwrap();
    assert!(listed.is_empty());
}

#[tokio::test]
async fn deleting_an_image_drops_it_from_the_iso_view_and_creating_a_disk_adds_none() {
    let h = with_volume("a.iso", "iso", 10).await;
    h.engine.volumes.list("default").await.unwrap();
    assert_eq!(iso_view_count(&h), 1);
    let task = create_volume(&h, "default", volume("disk.img", 10, "qcow2")).await;
    assert_eq!(task.unwrap().state, TaskState::Finished);
    assert_eq!((iso_view_count(&h), counted(&h, "default")), (1, 2));
    h.engine.volumes.delete("default", "a.iso").await.unwrap();
    assert_eq!((iso_view_count(&h), counted(&h, "default")), (0, 1));
}

#[tokio::test]
async fn the_iso_view_as_a_pool_is_answered_without_libvirt() {
    let h = harness().await;
    let before = total_calls(&h.sim);
    let view = h.engine.pools.get("kimchi_isos").await.unwrap();
    assert_eq!(total_calls(&h.sim), before);
    assert_eq!(
        (view.name.as_str(), view.pool_type.as_str()),
        ("kimchi_isos", "kimchi-iso")
    );
}

// ---- hostile pool requests ----

fn netfs_pool(name: &str, export: &str) -> PoolSpec {
    PoolSpec {
        pool_type: "netfs".into(),
        source_host: "filer.example".into(),
        source_path: export.into(),
        ..dir_pool(name)
    }
}

fn logical_pool(name: &str, device: &str) -> PoolSpec {
    PoolSpec {
        pool_type: "logical".into(),
        path: String::new(),
        source_devices: vec![device.into()],
        ..dir_pool(name)
    }
}

/// A pool defined behind kimchid's back (as `virsh pool-define` would), announced.
async fn define_behind(h: &Harness, def: PoolDefinition) {
    let uuid = h.sim.define_pool(&def).unwrap().uuid;
    h.engine.model.apply(HostEvent::Pool { uuid }).await;
}

#[tokio::test]
async fn a_pool_on_a_source_another_pool_uses_is_already_exists_naming_that_pool() {
    let h = harness().await;
    define_behind(
        &h,
        PoolDefinition::Netfs {
            name: "nfs".into(),
            path: "/srv/nfs".into(),
            host: "filer.example".into(),
            source_path: "/export/vms".into(),
        },
    )
    .await;
    define_behind(
        &h,
        PoolDefinition::Logical {
            name: "vg0".into(),
            devices: vec!["/dev/loop7".into()],
        },
    )
    .await;
    let on_default = |path: &str| PoolSpec {
        path: path.into(),
        ..dir_pool("p1")
    };
    for (spec, message) in [
        (
            on_default("/sim/default"),
            "storage pool 'default' already uses the path '/sim/default'",
        ),
        (
            on_default("//sim/default/"),
            "storage pool 'default' already uses the path '//sim/default/'",
        ),
        (
            on_default("/srv/nfs"),
            "storage pool 'nfs' already uses the path '/srv/nfs'",
        ),
        (
            netfs_pool("p1", "/export/vms/"),
            "storage pool 'nfs' already uses the export filer.example:/export/vms/",
        ),
        (
            logical_pool("p1", "/dev/loop7"),
            "storage pool 'vg0' already uses the source device '/dev/loop7'",
        ),
    ] {
        let case = format!("{spec:?}");
        let refused = h.engine.pools.create(spec).await;
        assert_error!(refused, AlreadyExists, message, "{case}");
    }
    assert_eq!(
        h.sim.calls("define_pool"),
        2,
        "only the two pools behind its back"
    );
    assert_eq!(pool_names(&h), ["default", "nfs", "vg0", "kimchi_isos"]);
}

/// A conflict defined behind kimchid's back between its check and libvirt's is
/// libvirt's refusal, passed on as the conflict it is.
#[tokio::test]
async fn a_source_conflict_libvirt_finds_is_already_exists_and_leaves_nothing() {
    let h = harness().await;
    let message = "operation failed: Storage source conflict with pool: 'other'";
    h.sim
        .fail_next("define_pool", Error::AlreadyExists(message.into()));
    assert_error!(
        h.engine.pools.create(dir_pool("p1")).await,
        AlreadyExists,
        message
    );
    assert_eq!(pool_names(&h), ["default", "kimchi_isos"]);
    // The refused name is free again.
    h.engine.pools.create(dir_pool("p1")).await.unwrap();
}

#[tokio::test]
async fn concurrent_creations_of_one_pool_name_define_it_once_and_refuse_the_rest() {
    let h = harness().await;
    let creations: Vec<_> = (0..8)
        .map(|i| {
            let engine = h.engine.clone();
            let spec = PoolSpec {
                path: format!("/srv/p1-{i}"),
                ..dir_pool("p1")
            };
            tokio::spawn(async move { engine.pools.create(spec).await })
        })
        .collect();
    let mut created = 0;
    for creation in creations {
        match creation.await.unwrap() {
            Ok(pool) => {
                assert_eq!(pool.name, "p1");
                created += 1;
            }
            Err(Error::AlreadyExists(m)) => assert!(
                m == "a storage pool named 'p1' is being created"
                    || m == "a storage pool named 'p1' already exists",
                "{m}"
            ),
            Err(other) => panic!("expected AlreadyExists, got {other:?}"),
        }
    }
    assert_eq!((created, h.sim.calls("define_pool")), (1, 1));
    assert_eq!(pool_names(&h), ["default", "p1", "kimchi_isos"]);
}

#[tokio::test]
async fn pool_names_up_to_the_limit_are_defined_and_longer_ones_refused() {
    let h = harness().await;
    let longest = "p".repeat(MAX_POOL_NAME_BYTES);
    h.engine.pools.create(dir_pool(&longest)).await.unwrap();
    let message = format!(
        "invalid storage pool name '{}…': longer than {MAX_POOL_NAME_BYTES} bytes",
        "q".repeat(crate::excerpt::EXCERPT_CHARS)
    );
    for length in [MAX_POOL_NAME_BYTES + 1, 255, 4096] {
        let refused = h.engine.pools.create(dir_pool(&"q".repeat(length))).await;
        assert_error!(refused, InvalidArgument, message, "{length} bytes");
    }
    assert_eq!(h.sim.calls("define_pool"), 1);
}

/// The host is asked what it has: a file where a directory should be, a path
/// under a file, a device that does not exist or is not a block device.
#[tokio::test]
async fn a_pool_on_what_the_host_cannot_use_is_invalid_argument_before_libvirt() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let file = file.to_str().unwrap().to_owned();
    let missing = dir.path().join("missing").to_str().unwrap().to_owned();
    let on = |path: &str| PoolSpec {
        path: path.into(),
        ..dir_pool("p1")
    };
    for (spec, message) in [
        (on(&file), format!("path '{file}' is not a directory")),
        (
            on(&format!("{file}/pool")),
            format!("path '{file}/pool' cannot hold a pool: Not a directory (os error 20)"),
        ),
        (
            logical_pool("p1", &missing),
            format!("source device '{missing}' does not exist"),
        ),
        (
            logical_pool("p1", &file),
            format!("source device '{file}' is not a block device"),
        ),
    ] {
        let case = format!("{spec:?}");
        let refused = h.engine.pools.create(spec).await;
        assert_error!(refused, InvalidArgument, message, "{case}");
    }
    assert_eq!(h.sim.calls("define_pool"), 0);
    assert_eq!(pool_names(&h), ["default", "kimchi_isos"]);
    // A directory that does not exist yet is fine: activation builds it.
    let later = dir.path().join("later").to_str().unwrap().to_owned();
    h.engine.pools.create(on(&later)).await.unwrap();
}

/// The adapter says why libvirt could not start a pool (a device gone, a path
/// replaced by a file) as a conflict; the pool stays defined and inactive.
#[tokio::test]
async fn a_pool_libvirt_cannot_start_is_invalid_state_and_stays_inactive() {
    let h = harness().await;
    h.engine.pools.create(dir_pool("p1")).await.unwrap();
    let message = "storage pool 'p1' cannot be activated: cannot open directory \
                   '/srv/p1': Not a directory";
    h.sim
        .fail_next("activate_pool", Error::InvalidState(message.into()));
    assert_error!(h.engine.pools.activate("p1").await, InvalidState, message);
    let pool = h.engine.pools.list().remove(1);
    assert_eq!(
        (pool.name.as_str(), pool.state),
        ("p1", PoolState::Inactive)
    );
}

// ---- hostile volume requests ----

#[tokio::test]
async fn a_volume_larger_than_its_format_or_pool_allows_is_invalid_argument_before_any_task() {
    let h = harness().await;
    let pool_mib = SIM_POOL_BYTES / MIB;
    let qcow2_mib = QCOW2_MAX_BYTES / MIB;
    let past_i64 = u64::MAX / MIB;
    for (spec, message) in [
        (
            volume("v1", qcow2_mib + 1, "qcow2"),
            format!(
                "capacity of a qcow2 volume must be at most {qcow2_mib} MiB, not {}",
                qcow2_mib + 1
            ),
        ),
        (
            volume("v1", pool_mib + 1, "raw"),
            format!(
                "capacity ({} MiB) is more than storage pool 'default' can hold ({pool_mib} MiB)",
                pool_mib + 1
            ),
        ),
        (
            volume("v1", past_i64, "raw"),
            format!(
                "capacity ({past_i64} MiB) is more than storage pool 'default' can hold \
                 ({pool_mib} MiB)"
            ),
        ),
    ] {
        let case = format!("{spec:?}");
        let refused = create_volume(&h, "default", spec).await;
        assert_error!(refused, InvalidArgument, message, "{case}");
    }
    assert!(h.engine.tasks.list().is_empty());
    assert_eq!(volume_writes(&h), 0);
}

#[tokio::test]
async fn an_allocation_beyond_the_pools_free_space_is_invalid_argument_before_any_task() {
    let h = harness().await;
    let pool_mib = SIM_POOL_BYTES / MIB;
    let most = VolumeSpec {
        allocation_mib: pool_mib - 1024,
        ..volume("most", pool_mib - 1024, "raw")
    };
    let task = create_volume(&h, "default", most).await.unwrap();
    assert_eq!(task.state, TaskState::Finished, "{}", task.message);
    let writes = volume_writes(&h);
    let more = VolumeSpec {
        allocation_mib: 1025,
        ..volume("more", 2048, "raw")
    };
    assert_error!(
        create_volume(&h, "default", more).await,
        InvalidArgument,
        "allocation (1025 MiB) is more than the 1024 MiB free in storage pool 'default'"
    );
    assert_eq!(h.engine.tasks.list().len(), 1);
    assert_eq!(volume_writes(&h), writes);
    // A thin volume larger than the free space (not than the pool) is fine.
    let thin = create_volume(&h, "default", volume("thin", 2048, "qcow2")).await;
    assert_eq!(thin.unwrap().state, TaskState::Finished);
}

#[tokio::test]
async fn a_resize_past_the_format_or_pool_or_u64_is_invalid_argument_before_any_task() {
    let h = with_volume("v1", "qcow2", 10).await;
    h.sim.add_volume("default", "r1", "raw", 10);
    let pool_mib = SIM_POOL_BYTES / MIB;
    let qcow2_mib = QCOW2_MAX_BYTES / MIB;
    let u64_mib = u64::MAX / MIB;
    for (name, mib, message) in [
        (
            "v1",
            qcow2_mib + 1,
            format!(
                "size of a qcow2 volume must be at most {qcow2_mib} MiB, not {}",
                qcow2_mib + 1
            ),
        ),
        (
            "r1",
            pool_mib + 1,
            format!(
                "size ({} MiB) is more than storage pool 'default' can hold ({pool_mib} MiB)",
                pool_mib + 1
            ),
        ),
        (
            "r1",
            u64_mib,
            format!(
                "size ({u64_mib} MiB) is more than storage pool 'default' can hold \
                 ({pool_mib} MiB)"
            ),
        ),
        (
            "r1",
            u64_mib + 1,
            format!(
                "size must be between 1 and {u64_mib} MiB, not {}",
                u64_mib + 1
            ),
        ),
    ] {
        let refused = change_volume(&h, "default", name, VolumeChange::Resize(mib)).await;
        assert_error!(refused, InvalidArgument, message, "{name} to {mib} MiB");
        // The refusal left no busy mark.
        drop(h.engine.volumes.claim("default", name).unwrap());
    }
    assert!(h.engine.tasks.list().is_empty());
    assert_eq!(volume_writes(&h), 0);
}

/// libvirt lists a directory in a dir pool as a volume of type `dir`: it stays
/// listed, and every change of it is refused, touching nothing.
#[tokio::test]
async fn a_directory_in_a_pool_is_listed_and_its_changes_are_invalid_state() {
    let h = harness().await;
    h.sim.add_dir("default", "sub");
    let listed = h.engine.volumes.list("default").await.unwrap();
    assert_eq!(names(&listed, |v| &v.name), ["sub"]);
    assert_eq!(listed[0].vol_type, "dir");
    let message = "'sub' in pool 'default' is a directory, not a volume file; kimchi \
                   changes only regular files";
    for change in &VOLUME_CHANGES[1..] {
        let refused = change_volume(&h, "default", "sub", *change).await;
        assert_error!(refused, InvalidState, message, "{change:?}");
    }
    assert!(h.engine.tasks.list().is_empty());
    assert_eq!(volume_writes(&h), 0);
    assert_eq!(h.sim.volume_names("default"), ["sub"]);
    drop(h.engine.volumes.claim("default", "sub").unwrap());
}

/// The volume is claimed before it is looked up: concurrent wipes run one and
/// refuse the others as busy (none of them fails to find the volume), and the
/// volume stays listed.
#[tokio::test]
async fn concurrent_wipes_of_one_volume_run_one_and_refuse_the_rest_as_busy() {
    let h = with_volume("v1", "qcow2", 10).await;
    let wipes: Vec<_> = (0..8)
        .map(|_| {
            let engine = h.engine.clone();
            tokio::spawn(async move { engine.volumes.wipe("default", "v1", Wait::Ended).await })
        })
        .collect();
    let mut wiped = 0;
    for wipe in wipes {
        match wipe.await.unwrap() {
            Ok(task) => {
                assert_eq!(task.state, TaskState::Finished, "{}", task.message);
                wiped += 1;
            }
            Err(Error::Busy(m)) => assert_eq!(m, BUSY),
            Err(other) => panic!("expected Busy, got {other:?}"),
        }
    }
    assert_eq!((wiped, h.sim.calls("wipe_volume")), (1, 1));
    let listed = h.engine.volumes.list("default").await.unwrap();
    assert_eq!(names(&listed, |v| &v.name), ["v1"]);
    assert_eq!(listed[0].format, "qcow2");
}
