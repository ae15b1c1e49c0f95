//! Crash safety: operations that change storage are written down while they run,
//! and what a killed kimchid (or a libvirtd that died under it) left half-made is
//! undone — at the next start, from the journal — before the task ends, failed.
//! A kill is what it leaves: a journal record and a half-made state in the sim.

use super::*;
use crate::engine::journal::{Entry, Journal, Operation};
use crate::engine::sim::harness_with;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// What the journal in `dir` holds now.
fn written_down(dir: &Path) -> Vec<Entry> {
    Journal::open(dir).unwrap().1
}

/// The state directory a killed kimchid left: a journal holding `entries`.
fn left_by_a_kill(entries: &[Entry]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path()).unwrap();
    for entry in entries {
        journal.write(entry).unwrap();
    }
    dir
}

fn entry(task: u32, operation: Operation) -> Entry {
    Entry {
        task,
        started_usec: 1_750_000_000_000_000,
        operation,
    }
}

async fn ended(h: &Harness, id: u32) -> TaskInfo {
    h.engine.tasks.wait(id).await;
    h.engine.tasks.info(id).unwrap()
}

#[tokio::test]
async fn a_creation_is_written_down_while_it_runs_and_crossed_out_when_it_ends() {
    let h = with_template().await;
    let mut held = h.sim.hold_next("define_guest");
    let task = h.engine.vms.create("t", "web", "", Wait::No).await.unwrap();
    held.arrived().await;
    let running = written_down(h.state_dir.path());
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].task, task.id);
    match &running[0].operation {
        Operation::VmCreate {
            name,
            pool,
            volumes,
            uuid,
        } => {
            assert_eq!((name.as_str(), pool.as_str()), ("web", "default"));
            assert_eq!(volumes, &["web-0.img"]);
            assert_eq!(uuid.len(), 36);
        }
        other => panic!("expected a VM creation, got {other:?}"),
    }
    drop(held);
    assert_eq!(ended(&h, task.id).await.state, TaskState::Finished);
    assert!(written_down(h.state_dir.path()).is_empty());
}

#[tokio::test]
async fn what_a_killed_kimchid_left_is_undone_at_the_next_start_and_its_tasks_fail() {
    let sim = Sim::new();
    let uuid = sim.add_domain("web", VmState::Shutoff);
    sim.add_volume("default", "web-0.img", "qcow2", 1024);
    sim.add_volume("default", "new.qcow2", "qcow2", 10);
    // Zeroed halfway: libvirt now sees a raw file.
    sim.add_volume("default", "data.qcow2", "raw", 3);
    let dir = left_by_a_kill(&[
        entry(
            7,
            Operation::VmCreate {
                name: "web".into(),
                uuid,
                pool: "default".into(),
                volumes: vec!["web-0.img".into(), "web-1.img".into()],
            },
        ),
        entry(
            8,
            Operation::VolumeWipe {
                pool: "default".into(),
                name: "data.qcow2".into(),
                format: "qcow2".into(),
                capacity: GIB,
            },
        ),
        entry(
            9,
            Operation::VolumeCreate {
                pool: "default".into(),
                name: "new.qcow2".into(),
            },
        ),
    ]);
    let h = harness_with(sim, dir).await;

    let vm = ended(&h, 7).await;
    assert_eq!(
        (vm.state, vm.operation.as_str(), vm.target_uri.as_str()),
        (TaskState::Failed, "vm.create", "/vms/web")
    );
    assert_eq!(
        vm.message,
        "kimchid stopped before this task ended; removed the definition of VM 'web', \
         removed its disk 'web-0.img'"
    );
    assert_eq!(vm.start_usec, 1_750_000_000_000_000);
    let wipe = ended(&h, 8).await;
    assert_eq!(
        wipe.message,
        "kimchid stopped before this task ended; wiped the volume 'data.qcow2' again from \
         the start"
    );
    let create = ended(&h, 9).await;
    assert_eq!(
        (create.state, create.message.as_str()),
        (
            TaskState::Failed,
            "kimchid stopped before this task ended; removed the volume 'new.qcow2'"
        )
    );

    assert!(!h.sim.has_domain("web"));
    assert_eq!(h.sim.volume_names("default"), ["data.qcow2"]);
    let data = h.engine.volumes.get("default", "data.qcow2").await.unwrap();
    assert_eq!(
        (data.format.as_str(), data.capacity_mib),
        ("qcow2", GIB / MIB)
    );
    assert!(written_down(h.state_dir.path()).is_empty());
    // Ids a previous run gave out are not given out again.
    let next = h
        .engine
        .volumes
        .create("default", volume_spec("later.qcow2"), Wait::Ended)
        .await
        .unwrap();
    assert_eq!(next.id, 10);
}

#[tokio::test]
async fn what_an_operation_held_stays_held_until_it_is_undone() {
    let sim = Sim::new();
    let uuid = sim.add_domain("web", VmState::Shutoff);
    sim.add_volume("default", "web-0.img", "qcow2", 1024);
    let dir = left_by_a_kill(&[entry(
        3,
        Operation::VmCreate {
            name: "web".into(),
            uuid,
            pool: "default".into(),
            volumes: vec!["web-0.img".into()],
        },
    )]);
    let held = sim.hold_next("undefine");
    let h = harness_with(sim, dir).await;
    template(&h, "t").await;
    assert_eq!(h.engine.tasks.info(3).unwrap().state, TaskState::Running);
    assert_error!(
        h.engine.vms.create("t", "web", "", Wait::No).await,
        AlreadyExists,
        "VM 'web' already exists"
    );
    assert_error!(
        h.engine
            .volumes
            .create("default", volume_spec("web-0.img"), Wait::No)
            .await,
        Busy,
        "volume 'web-0.img' in pool 'default' has an operation in progress"
    );
    drop(held);
    assert_eq!(ended(&h, 3).await.state, TaskState::Failed);
    let again = h
        .engine
        .vms
        .create("t", "web", "", Wait::Ended)
        .await
        .unwrap();
    assert_eq!(again.state, TaskState::Finished, "{}", again.message);
}

#[tokio::test]
async fn undoing_waits_while_libvirt_refuses_then_removes_the_volume() {
    let sim = Sim::new();
    sim.add_volume("default", "new.qcow2", "qcow2", 10);
    sim.fail_next(
        "delete_volume",
        Error::InvalidState("volume 'new.qcow2' is still being allocated.".into()),
    );
    let dir = left_by_a_kill(&[entry(
        1,
        Operation::VolumeCreate {
            pool: "default".into(),
            name: "new.qcow2".into(),
        },
    )]);
    let h = harness_with(sim, dir).await;
    let task = ended(&h, 1).await;
    assert_eq!(
        task.message,
        "kimchid stopped before this task ended; removed the volume 'new.qcow2'"
    );
    assert_eq!(h.sim.calls("delete_volume"), 2);
    assert!(h.sim.volume_names("default").is_empty());
}

#[tokio::test]
async fn a_creation_whose_own_cleanup_failed_is_undone_before_its_task_ends() {
    let h = with_template().await;
    h.sim.fail_next("define_guest", libvirt("cannot define"));
    // libvirtd went away: the creation could not remove its disk itself.
    h.sim.fail_next(
        "delete_volume_at",
        Error::LibvirtUnavailable("qemu:///system".into()),
    );
    let task = h
        .engine
        .vms
        .create("t", "web", "", Wait::Ended)
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(
        task.message,
        "libvirt: cannot define [code 1, domain 10]; removed its disk 'web-0.img'"
    );
    assert!(h.sim.volume_names("default").is_empty());
    assert!(written_down(h.state_dir.path()).is_empty());
}

#[tokio::test]
async fn a_name_someone_else_took_meanwhile_is_not_undone() {
    let h = harness().await;
    let mut held = h.sim.hold_next("create_volume");
    let task = h
        .engine
        .volumes
        .create("default", volume_spec("x.qcow2"), Wait::No)
        .await
        .unwrap();
    held.arrived().await;
    // Made with virsh between kimchid's check and its creation.
    h.sim.add_volume("default", "x.qcow2", "raw", 1);
    drop(held);
    let task = ended(&h, task.id).await;
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(h.sim.volume_names("default"), ["x.qcow2"]);
    assert_eq!(h.sim.calls("delete_volume"), 0);
    assert!(written_down(h.state_dir.path()).is_empty());
}

fn volume_spec(name: &str) -> kimchi_dbus::VolumeSpec {
    kimchi_dbus::VolumeSpec {
        name: name.into(),
        capacity_mib: 10,
        allocation_mib: 0,
        format: "qcow2".into(),
    }
}
