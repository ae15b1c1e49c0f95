//! The engine's rules, exercised against the simulated hypervisor (`sim.rs`): no
//! root, no libvirt daemon, no bus. Each test names one behaviour and checks the
//! exact error kind and sentence a caller would get.

mod hostile_input;
mod in_flight;
mod model;
mod networks;
mod storage;
mod templates;
mod vm_ops;
mod vms;

use std::path::Path;

use kimchi_dbus::{TaskInfo, TaskState, TemplateSpec, VmState};
use tokio::sync::mpsc;

use super::hypervisor::{DomainEvent, HostEvent};
use super::model::Change;
use super::sim::{engine_over, harness, Harness, Sim};
use super::tasks::Wait;
use super::templates::Template;
use crate::error::Error;

/// `result` is `Err(Error::<variant>(message))`, exactly. A table-driven test names
/// its case after the message, as `format!` arguments. Exported so that the unit
/// tests of every module of the crate check errors the same way.
#[macro_export]
macro_rules! assert_error {
    ($result:expr, $variant:ident, $message:expr $(,)?) => {
        $crate::assert_error!($result, $variant, $message, "{}", stringify!($result))
    };
    ($result:expr, $variant:ident, $message:expr, $($case:tt)+) => {
        match $result {
            Err($crate::error::Error::$variant(m)) => assert_eq!(m, $message, $($case)+),
            Err(other) => panic!(
                "expected {}({:?}), got {other:?}: {}",
                stringify!($variant),
                $message,
                format_args!($($case)+)
            ),
            Ok(_) => panic!(
                "expected {}({:?}), got Ok: {}",
                stringify!($variant),
                $message,
                format_args!($($case)+)
            ),
        }
    };
}
pub(crate) use assert_error;

/// Every method of the `Hypervisor` trait, as the sim logs them.
const HYPERVISOR_METHODS: [&str; 45] = [
    "list_domains",
    "domain",
    "define_guest",
    "power",
    "change_domain",
    "set_metadata",
    "nic_addresses",
    "attach_nic",
    "update_nic",
    "detach_nic",
    "attach_drive",
    "change_media",
    "detach_drive",
    "undefine",
    "screenshot",
    "open_console",
    "network_exists",
    "sample_stats",
    "probe_capabilities",
    "list_pools",
    "pool",
    "pool_by_name",
    "define_pool",
    "activate_pool",
    "deactivate_pool",
    "undefine_pool",
    "pool_volumes",
    "volume",
    "check_volume_name_free",
    "check_volume_inside",
    "create_volume",
    "clone_volume",
    "resize_volume",
    "wipe_volume",
    "delete_volume",
    "delete_volume_at",
    "list_networks",
    "network",
    "define_network",
    "activate_network",
    "deactivate_network",
    "undefine_network",
    "set_network_autostart",
    "host_interfaces",
    "host_routes",
];

/// How many hypervisor calls the sim has answered so far, of any method.
fn total_calls(sim: &Sim) -> usize {
    HYPERVISOR_METHODS.iter().map(|m| sim.calls(m)).sum()
}

/// A libvirt failure that no rule remaps.
fn libvirt(message: &str) -> Error {
    Error::Libvirt {
        code: 1,
        domain: 10,
        message: message.into(),
    }
}

/// `result` is the failure `libvirt(message)` made, passed on unchanged.
#[track_caller]
fn assert_libvirt_error<T: std::fmt::Debug>(result: Result<T, Error>, message: &str) {
    match result {
        Err(Error::Libvirt {
            code,
            domain,
            message: m,
        }) => assert_eq!((code, domain, m.as_str()), (1, 10, message)),
        other => panic!("expected libvirt({message:?}), got {other:?}"),
    }
}

/// Everything announced since the last drain.
fn drain(changes: &mut mpsc::UnboundedReceiver<Change>) -> Vec<Change> {
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push(change);
    }
    seen
}

/// A template with every default filled in by the engine.
async fn template(h: &Harness, name: &str) -> Template {
    template_from(h, spec(name)).await
}

/// A spec naming only `name`: the engine fills in the rest.
fn spec(name: &str) -> TemplateSpec {
    TemplateSpec {
        name: name.into(),
        ..TemplateSpec::default()
    }
}

/// A spec naming `name` and `cdrom`: the engine fills in the rest.
fn with_cdrom(name: &str, cdrom: &str) -> TemplateSpec {
    TemplateSpec {
        cdrom: cdrom.into(),
        ..spec(name)
    }
}

/// A template created from `spec`, which the engine accepts.
async fn template_from(h: &Harness, spec: TemplateSpec) -> Template {
    h.engine.templates.create(spec).await.expect("template")
}

/// A fresh harness with template `t`, every default filled in.
async fn with_template() -> Harness {
    let h = harness().await;
    template(&h, "t").await;
    h
}

/// A fresh harness with one guest, `web`, adopted in `state`, and its UUID; what
/// the adoption announced is drained.
async fn with_vm(state: VmState) -> (Harness, String) {
    let mut h = harness().await;
    let uuid = adopt(&h, "web", state).await;
    drain(&mut h.changes);
    (h, uuid)
}

/// A fresh harness with template `t` and VM `web` made from it: in the default pool
/// when `pool` is empty, else in a logical pool of that name, adopted first.
async fn with_new_vm(pool: &str) -> Harness {
    let h = with_template().await;
    if !pool.is_empty() {
        adopt_pool(&h, pool, "logical", true).await;
    }
    new_vm(&h, "t", "web", pool).await;
    h
}

/// A VM created through the engine from `template` in `pool`, its task finished.
async fn new_vm(h: &Harness, template: &str, name: &str, pool: &str) -> TaskInfo {
    let task = h
        .engine
        .vms
        .create(template, name, pool, Wait::Ended)
        .await
        .expect("VM creation starts");
    assert_eq!(task.state, TaskState::Finished, "{}", task.message);
    task
}

/// A guest defined behind kimchid's back, then announced: the model has it.
async fn adopt(h: &Harness, name: &str, state: VmState) -> String {
    let uuid = h.sim.add_domain(name, state);
    h.engine
        .model
        .apply(HostEvent::Domain {
            uuid: uuid.clone(),
            event: DomainEvent::Changed,
        })
        .await;
    uuid
}

/// A pool defined behind kimchid's back, then announced: the model has it.
async fn adopt_pool(h: &Harness, name: &str, pool_type: &str, active: bool) -> String {
    let uuid = h.sim.add_pool(name, pool_type, active);
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.clone() })
        .await;
    uuid
}

/// A minimal bootable ISO 9660 image at `path`: a primary volume descriptor, an El
/// Torito boot record, the terminator and a boot catalog whose default entry boots.
fn write_bootable_iso(path: &Path) {
    const SECTOR: usize = 2048;
    const SECTORS: usize = 20;
    let mut image = vec![0u8; SECTORS * SECTOR];
    let descriptor = |image: &mut [u8], lba: usize, kind: u8| {
        let d = &mut image[lba * SECTOR..(lba + 1) * SECTOR];
        d[0] = kind;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
    };
    descriptor(&mut image, 16, 1);
    {
        let pvd = &mut image[16 * SECTOR..17 * SECTOR];
        pvd[40..72].copy_from_slice(&[b' '; 32]);
        pvd[40..44].copy_from_slice(b"TEST");
        pvd[80..84].copy_from_slice(&(SECTORS as u32).to_le_bytes());
        pvd[128..130].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    }
    descriptor(&mut image, 17, 0);
    {
        let boot = &mut image[17 * SECTOR..18 * SECTOR];
        boot[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
        boot[71..75].copy_from_slice(&19u32.to_le_bytes());
    }
    descriptor(&mut image, 18, 255);
    {
        let catalog = &mut image[19 * SECTOR..20 * SECTOR];
        catalog[0] = 1;
        catalog[30] = 0x55;
        catalog[31] = 0xAA;
        let sum = catalog[..32].chunks_exact(2).fold(0u16, |acc, w| {
            acc.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        catalog[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        catalog[32] = 0x88;
    }
    std::fs::write(path, image).expect("write ISO image");
}

/// A bootable image in a directory of its own (kept while the `TempDir` lives),
/// and its path.
fn bootable_iso() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let iso = dir.path().join("install.iso");
    write_bootable_iso(&iso);
    let iso = iso.to_str().expect("UTF-8 path").to_owned();
    (dir, iso)
}
