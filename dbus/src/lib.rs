//! The D-Bus contract of kimchid, compiled by both sides: the daemon serves it, the
//! gateway and the tests call it. Names, option keys and errors live here once.

mod dict;
mod error;
mod link;
mod network_patch;
mod options;
mod proxy;
mod states;
mod template_patch;
mod types;
mod vm_patch;

pub use error::Error;
pub use link::link_connection;
pub use network_patch::NetworkPatch;
pub use options::{
    CallOptions, OPT_NO_USER_INTERACTION, OPT_REQUEST_ID, OPT_SESSION, OPT_WAIT, OPT_WAIT_TIMEOUT,
};
pub use proxy::{ManagerProxy, SessionsProxy, VmProxy};
pub use states::{NetworkState, PoolState, TaskState, VmState};
pub use template_patch::TemplatePatch;
pub use types::{
    Capabilities, InterfaceInfo, NetworkInfo, NetworkSpec, PoolInfo, PoolSpec, ScreenshotSupport,
    SessionInfo, TaskInfo, TemplateDisk, TemplateInfo, TemplateSpec, VmIface, VmIfaceSpec, VmInfo,
    VmStats, VmStorage, VmStorageSpec, VolumeInfo, VolumeSpec,
};
pub use vm_patch::VmPatch;

/// Sizes cross the bus in MiB; kimchid converts with this.
pub const MIB: u64 = 1024 * 1024;

/// The longest `ShutdownVM` may be asked to wait for a guest, seconds (0 asks for
/// kimchid's default).
pub const MAX_SHUTDOWN_TIMEOUT_SECS: u32 = 3600;

/// Well-known bus name owned by kimchid.
pub const BUS_NAME: &str = "org.kimchi.Kimchi1";
/// Root of the object tree; the ObjectManager lives here.
pub const ROOT_PATH: &str = "/org/kimchi/Kimchi1";
pub const MANAGER_PATH: &str = "/org/kimchi/Kimchi1/Manager";
pub const SESSIONS_PATH: &str = "/org/kimchi/Kimchi1/Sessions";

pub const MANAGER_INTERFACE: &str = "org.kimchi.Kimchi1.Manager";
pub const SESSIONS_INTERFACE: &str = "org.kimchi.Kimchi1.Sessions";
pub const VM_INTERFACE: &str = "org.kimchi.Kimchi1.VM";
pub const TEMPLATE_INTERFACE: &str = "org.kimchi.Kimchi1.Template";
pub const STORAGE_POOL_INTERFACE: &str = "org.kimchi.Kimchi1.StoragePool";
pub const TASK_INTERFACE: &str = "org.kimchi.Kimchi1.Task";
pub const NETWORK_INTERFACE: &str = "org.kimchi.Kimchi1.Network";

/// The reserved name of the read-only pool that lists every ISO of every active pool.
pub const ISO_POOL: &str = "kimchi_isos";

/// Object path of a VM, keyed by its UUID (which never changes, unlike its name).
pub fn vm_path(uuid: &str) -> String {
    format!("{ROOT_PATH}/vm/_{}", uuid.replace('-', "_"))
}

/// Object path of a storage pool, keyed by its UUID.
pub fn pool_path(uuid: &str) -> String {
    format!("{ROOT_PATH}/storagepool/_{}", uuid.replace('-', "_"))
}

/// Object path of a virtual network, keyed by its UUID.
pub fn network_path(uuid: &str) -> String {
    format!("{ROOT_PATH}/network/_{}", uuid.replace('-', "_"))
}

/// Object path of a template, keyed by its name (templates have no UUID): every
/// byte outside `[A-Za-z0-9]` becomes `_` and two hex digits, as systemd escapes.
pub fn template_path(name: &str) -> String {
    let mut path = format!("{ROOT_PATH}/template/");
    if name.is_empty() {
        path.push('_');
    }
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

/// Object path of the virtual ISO pool, which has no libvirt UUID.
pub fn iso_pool_path() -> String {
    format!("{ROOT_PATH}/storagepool/{ISO_POOL}")
}

pub fn task_path(id: u32) -> String {
    format!("{ROOT_PATH}/task/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_paths_escape_everything_but_alphanumerics() {
        assert_eq!(template_path("web"), "/org/kimchi/Kimchi1/template/web");
        assert_eq!(
            template_path("a b/é_"),
            "/org/kimchi/Kimchi1/template/a_20b_2f_c3_a9_5f"
        );
        assert_ne!(template_path("a_20"), template_path("a "));
        zbus::ObjectPath::try_from(template_path("").as_str()).unwrap();
        zbus::ObjectPath::try_from(template_path("a b/é_").as_str()).unwrap();
    }

    #[test]
    fn vm_path_is_a_valid_object_path() {
        let p = vm_path("0d5e9e6a-3c1b-4a8e-9d7e-2f9f5f5f5f5f");
        assert_eq!(
            p,
            "/org/kimchi/Kimchi1/vm/_0d5e9e6a_3c1b_4a8e_9d7e_2f9f5f5f5f5f"
        );
        zbus::ObjectPath::try_from(p.as_str()).unwrap();
    }
}
