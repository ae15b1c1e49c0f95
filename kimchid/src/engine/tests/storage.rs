//! Storage: pools (beyond the definition checks tested in `storage_pools.rs`),
//! volumes and their busy marks, and the `kimchi_isos` view.

use kimchi_dbus::{PoolSpec, PoolState, TaskState, VolumeSpec, MIB};

use super::{adopt_pool, assert_error, libvirt, new_vm, template, total_calls};
use crate::engine::sim::harness;
use crate::engine::tasks::Wait;
use crate::error::Error;

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
        format: format.into(),
    }
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| name(i).to_owned()).collect()
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
    let listed = h.engine.pools.list();
    assert_eq!(
        names(&listed, |p| &p.name),
        ["default", "p1", "kimchi_isos"]
    );
    assert_eq!(listed[1], pool);
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

#[tokio::test]
async fn activating_an_active_pool_passes_libvirts_refusal_on() {
    let h = harness().await;
    assert_error!(
        h.engine.pools.activate("default").await,
        InvalidState,
        "storage pool 'default' is already active"
    );
}

#[tokio::test]
async fn deleting_an_active_pool_is_invalid_state_and_keeps_it() {
    let h = harness().await;
    assert_error!(
        h.engine.pools.delete("default").await,
        InvalidState,
        "storage pool 'default' is active; deactivate it before deleting it"
    );
    assert_eq!(
        names(&h.engine.pools.list(), |p| &p.name),
        ["default", "kimchi_isos"]
    );
}

#[tokio::test]
async fn deleting_an_inactive_pool_removes_it_from_the_list() {
    let h = harness().await;
    h.engine.pools.create(dir_pool("p1")).await.unwrap();
    h.engine.pools.delete("p1").await.unwrap();
    assert_eq!(
        names(&h.engine.pools.list(), |p| &p.name),
        ["default", "kimchi_isos"]
    );
    assert_error!(
        h.engine.pools.get("p1").await,
        NotFound,
        "no storage pool named 'p1'"
    );
}

#[tokio::test]
async fn changes_to_an_unknown_pool_are_not_found() {
    let h = harness().await;
    assert_error!(
        h.engine.pools.activate("nope").await,
        NotFound,
        "no storage pool named 'nope'"
    );
}

#[tokio::test]
async fn pool_changes_to_the_iso_view_are_not_supported() {
    let h = harness().await;
    let refused = "kimchi_isos is a read-only view";
    assert_error!(
        h.engine.pools.activate("kimchi_isos").await,
        NotSupported,
        refused
    );
    assert_error!(
        h.engine.pools.deactivate("kimchi_isos").await,
        NotSupported,
        refused
    );
    assert_error!(
        h.engine.pools.delete("kimchi_isos").await,
        NotSupported,
        refused
    );
}

#[tokio::test]
async fn volume_changes_in_the_iso_view_are_not_supported() {
    let h = harness().await;
    h.sim.add_volume("default", "a.iso", "iso", 10);
    let refused = "kimchi_isos is a read-only view";
    assert_error!(
        h.engine
            .volumes
            .create("kimchi_isos", volume("v", 1, "raw"), Wait::Ended)
            .await,
        NotSupported,
        refused
    );
    assert_error!(
        h.engine
            .volumes
            .wipe("kimchi_isos", "default:a.iso", Wait::Ended)
            .await,
        NotSupported,
        refused
    );
    assert_error!(
        h.engine
            .volumes
            .resize("kimchi_isos", "default:a.iso", 20, Wait::Ended)
            .await,
        NotSupported,
        refused
    );
    assert_error!(
        h.engine
            .volumes
            .delete("kimchi_isos", "default:a.iso")
            .await,
        NotSupported,
        refused
    );
    assert_eq!(h.sim.volume_names("default"), ["a.iso"]);
}

// ---- volume creation ----

#[tokio::test]
async fn a_created_volume_is_listed_and_counted_in_its_pool() {
    let h = harness().await;
    let task = h
        .engine
        .volumes
        .create("default", volume("v1", 100, "qcow2"), Wait::Ended)
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
    assert_eq!(
        h.engine.model.pool_by_name("default").unwrap().nr_volumes,
        1
    );
    assert_eq!(h.engine.pools.list()[0].nr_volumes, 1);
}

#[tokio::test]
async fn a_volume_of_unknown_format_is_invalid_argument() {
    let h = harness().await;
    assert_error!(
        h.engine
            .volumes
            .create("default", volume("v1", 100, "vmdk"), Wait::Ended)
            .await,
        InvalidArgument,
        "volume format must be one of [\"qcow2\", \"raw\"], not 'vmdk'"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn a_volume_of_no_capacity_is_invalid_argument() {
    let h = harness().await;
    assert_error!(
        h.engine
            .volumes
            .create("default", volume("v1", 0, "raw"), Wait::Ended)
            .await,
        InvalidArgument,
        format!(
            "capacity must be between 1 and {} MiB, not 0",
            u64::MAX / MIB
        )
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn a_volume_with_a_path_for_a_name_is_invalid_argument() {
    let h = harness().await;
    assert_error!(
        h.engine
            .volumes
            .create("default", volume("../v1", 1, "raw"), Wait::Ended)
            .await,
        InvalidArgument,
        "invalid volume name '../v1': it contains '/'"
    );
}

#[tokio::test]
async fn a_volume_in_an_inactive_pool_is_invalid_state() {
    let h = harness().await;
    adopt_pool(&h, "cold", "dir", false).await;
    assert_error!(
        h.engine
            .volumes
            .create("cold", volume("v1", 1, "raw"), Wait::Ended)
            .await,
        InvalidState,
        "storage pool 'cold' is not active; activate it first"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn a_volume_with_a_taken_name_is_already_exists_before_any_task() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "raw", 1);
    assert_error!(
        h.engine
            .volumes
            .create("default", volume("v1", 1, "raw"), Wait::Ended)
            .await,
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
    let task = h
        .engine
        .volumes
        .create("default", volume("v1", 100, "raw"), Wait::Ended)
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(
        task.message,
        "libvirt: cannot allocate 100 MiB [code 1, domain 10]"
    );
    assert!(h.sim.volume_names("default").is_empty());
    drop(h.engine.volumes.claim("default", "v1").unwrap());
    let retried = h
        .engine
        .volumes
        .create("default", volume("v1", 100, "raw"), Wait::Ended)
        .await
        .unwrap();
    assert_eq!(retried.state, TaskState::Finished, "{}", retried.message);
}

// ---- busy volumes ----

const BUSY: &str = "volume 'v1' in pool 'default' has an operation in progress";

#[tokio::test]
async fn creating_a_busy_volume_is_busy() {
    let h = harness().await;
    let _guard = h.engine.volumes.claim("default", "v1").unwrap();
    assert_error!(
        h.engine
            .volumes
            .create("default", volume("v1", 1, "raw"), Wait::Ended)
            .await,
        Busy,
        BUSY
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn wiping_a_busy_volume_is_busy() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "raw", 10);
    let _guard = h.engine.volumes.claim("default", "v1").unwrap();
    assert_error!(
        h.engine.volumes.wipe("default", "v1", Wait::Ended).await,
        Busy,
        BUSY
    );
    assert_eq!(h.sim.calls("wipe_volume"), 0);
}

#[tokio::test]
async fn resizing_a_busy_volume_is_busy() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "raw", 10);
    let _guard = h.engine.volumes.claim("default", "v1").unwrap();
    assert_error!(
        h.engine
            .volumes
            .resize("default", "v1", 20, Wait::Ended)
            .await,
        Busy,
        BUSY
    );
    assert_eq!(h.sim.calls("resize_volume"), 0);
}

#[tokio::test]
async fn deleting_a_busy_volume_is_busy() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "raw", 10);
    let _guard = h.engine.volumes.claim("default", "v1").unwrap();
    assert_error!(h.engine.volumes.delete("default", "v1").await, Busy, BUSY);
    assert_eq!(h.sim.volume_names("default"), ["v1"]);
}

#[tokio::test]
async fn claiming_a_claimed_volume_is_busy() {
    let h = harness().await;
    let _guard = h.engine.volumes.claim("default", "v1").unwrap();
    match h.engine.volumes.claim("default", "v1") {
        Err(Error::Busy(m)) => assert_eq!(m, BUSY),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("claimed twice"),
    }
}

#[tokio::test]
async fn dropping_the_guard_frees_the_volume() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "raw", 10);
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

// ---- volume operations ----

#[tokio::test]
async fn wiping_an_unused_volume_finishes() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "qcow2", 10);
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

#[tokio::test]
async fn growing_a_volume_resizes_it() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "qcow2", 10);
    let task = h
        .engine
        .volumes
        .resize("default", "v1", 20, Wait::Ended)
        .await
        .unwrap();
    assert_eq!(
        (task.state, task.message.as_str()),
        (TaskState::Finished, "resized to 20 MiB")
    );
    let vol = h.engine.volumes.get("default", "v1").await.unwrap();
    assert_eq!(vol.capacity_mib, 20);
}

#[tokio::test]
async fn shrinking_an_unused_raw_volume_resizes_it() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "raw", 100);
    let task = h
        .engine
        .volumes
        .resize("default", "v1", 50, Wait::Ended)
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Finished, "{}", task.message);
    let vol = h.engine.volumes.get("default", "v1").await.unwrap();
    assert_eq!(vol.capacity_mib, 50);
}

#[tokio::test]
async fn shrinking_a_qcow2_volume_is_invalid_state() {
    let h = harness().await;
    h.sim.add_volume("default", "v1", "qcow2", 100);
    assert_error!(
        h.engine
            .volumes
            .resize("default", "v1", 50, Wait::Ended)
            .await,
        InvalidState,
        "cannot shrink qcow2 volume 'v1': only raw volumes can shrink"
    );
    assert!(h.engine.tasks.list().is_empty());
}

#[tokio::test]
async fn an_operation_on_an_unknown_volume_is_not_found() {
    let h = harness().await;
    assert_error!(
        h.engine.volumes.wipe("default", "nope", Wait::Ended).await,
        NotFound,
        "no storage volume 'nope' in pool 'default'"
    );
}

#[tokio::test]
async fn wiping_a_volume_a_vm_uses_is_invalid_state() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "web", "").await;
    assert_error!(
        h.engine
            .volumes
            .wipe("default", "web-0.img", Wait::Ended)
            .await,
        InvalidState,
        "volume 'web-0.img' is used by a virtual machine"
    );
    assert_eq!(h.sim.calls("wipe_volume"), 0);
}

#[tokio::test]
async fn deleting_a_volume_a_vm_uses_is_invalid_state() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "web", "").await;
    assert_error!(
        h.engine.volumes.delete("default", "web-0.img").await,
        InvalidState,
        "volume 'web-0.img' is used by a virtual machine"
    );
    assert_eq!(h.sim.volume_names("default"), ["web-0.img"]);
}

#[tokio::test]
async fn shrinking_a_raw_volume_a_vm_uses_is_invalid_state() {
    let h = harness().await;
    template(&h, "t").await;
    // A logical pool gives the VM a raw disk, which could otherwise shrink.
    adopt_pool(&h, "lvm", "logical", true).await;
    new_vm(&h, "t", "web", "lvm").await;
    assert_error!(
        h.engine
            .volumes
            .resize("lvm", "web-0.img", 1024, Wait::Ended)
            .await,
        InvalidState,
        "cannot shrink volume 'web-0.img': a virtual machine uses it"
    );
    assert_eq!(h.sim.calls("resize_volume"), 0);
}

#[tokio::test]
async fn growing_a_volume_a_vm_uses_is_allowed() {
    let h = harness().await;
    template(&h, "t").await;
    new_vm(&h, "t", "web", "").await;
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
    let h = harness().await;
    h.sim.add_volume("default", "v1", "raw", 10);
    h.engine.volumes.list("default").await.unwrap();
    assert_eq!(
        h.engine.model.pool_by_name("default").unwrap().nr_volumes,
        1
    );
    h.engine.volumes.delete("default", "v1").await.unwrap();
    assert_eq!(
        h.engine.model.pool_by_name("default").unwrap().nr_volumes,
        0
    );
}

// ---- the kimchi_isos view ----

#[tokio::test]
async fn listing_pools_counts_known_iso_images_without_asking_libvirt() {
    let h = harness().await;
    h.sim.add_volume("default", "a.iso", "iso", 10);
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
    let h = harness().await;
    h.sim.add_volume("default", "a.iso", "iso", 10);
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
    assert_eq!(h.engine.pools.list().last().unwrap().nr_volumes, 2);
}

#[tokio::test]
async fn an_iso_view_image_is_found_by_its_view_name() {
    let h = harness().await;
    h.sim.add_volume("default", "a.iso", "iso", 10);
    let vol = h
        .engine
        .volumes
        .get("kimchi_isos", "default:a.iso")
        .await
        .unwrap();
    assert_eq!(vol.file_path, "/sim/default/a.iso");
    assert_error!(
        h.engine.volumes.get("kimchi_isos", "a.iso").await,
        NotFound,
        "no ISO image 'a.iso' in kimchi_isos"
    );
}

#[tokio::test]
async fn deactivating_a_pool_drops_its_images_from_the_iso_view() {
    let h = harness().await;
    h.sim.add_volume("default", "a.iso", "iso", 10);
    h.engine.volumes.list("default").await.unwrap();
    assert_eq!(h.engine.pools.list().last().unwrap().nr_volumes, 1);
    h.engine.pools.deactivate("default").await.unwrap();
    assert_eq!(h.engine.pools.list().last().unwrap().nr_volumes, 0);
    assert!(h
        .engine
        .volumes
        .list("kimchi_isos")
        .await
        .unwrap()
        .is_empty());
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
