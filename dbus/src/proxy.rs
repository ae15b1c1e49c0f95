//! Client side of the contract: the gateway and the tests call kimchid through these.

use std::collections::HashMap;

use zbus::{proxy, OwnedVariant};

use crate::{
    Error, PoolInfo, PoolSpec, ScreenshotSupport, SessionInfo, TaskInfo, VmInfo, VolumeInfo,
    VolumeSpec,
};

type Options = HashMap<String, OwnedVariant>;

#[proxy(
    interface = "org.kimchi.Kimchi1.Manager",
    default_service = "org.kimchi.Kimchi1",
    default_path = "/org/kimchi/Kimchi1/Manager"
)]
pub trait Manager {
    /// All defined VMs (action `org.kimchi.read`).
    #[zbus(name = "ListVMs")]
    fn list_vms(&self, options: Options) -> Result<Vec<VmInfo>, Error>;

    /// One VM by name (action `org.kimchi.read`).
    #[zbus(name = "GetVM")]
    fn get_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// The object path of the VM with this name or UUID (action `org.kimchi.read`).
    #[zbus(name = "LookupVM")]
    fn lookup_vm(&self, name: &str, options: Options) -> Result<zbus::OwnedObjectPath, Error>;

    /// All storage pools, `kimchi_isos` last (action `org.kimchi.read`).
    fn list_storage_pools(&self, options: Options) -> Result<Vec<PoolInfo>, Error>;

    fn get_storage_pool(&self, name: &str, options: Options) -> Result<PoolInfo, Error>;

    /// Defines a pool, inactive (action `org.kimchi.storage.pool-manage`).
    fn create_storage_pool(&self, spec: PoolSpec, options: Options) -> Result<PoolInfo, Error>;

    /// Starts a pool, building its directory first when missing.
    fn activate_storage_pool(&self, name: &str, options: Options) -> Result<PoolInfo, Error>;

    fn deactivate_storage_pool(&self, name: &str, options: Options) -> Result<PoolInfo, Error>;

    /// Undefines an inactive pool; its files stay.
    fn delete_storage_pool(&self, name: &str, options: Options) -> Result<(), Error>;

    /// The pool's volumes, refreshed from disk first (action `org.kimchi.read`).
    fn list_storage_volumes(&self, pool: &str, options: Options) -> Result<Vec<VolumeInfo>, Error>;

    fn get_storage_volume(
        &self,
        pool: &str,
        name: &str,
        options: Options,
    ) -> Result<VolumeInfo, Error>;

    /// Starts a task creating the volume (action `org.kimchi.storage.volume-manage`).
    fn create_storage_volume(
        &self,
        pool: &str,
        spec: VolumeSpec,
        options: Options,
    ) -> Result<zbus::OwnedObjectPath, Error>;

    /// Starts a task growing the volume to `size_mib`.
    fn resize_storage_volume(
        &self,
        pool: &str,
        name: &str,
        size_mib: u64,
        options: Options,
    ) -> Result<zbus::OwnedObjectPath, Error>;

    /// Starts a task overwriting the volume with zeros.
    fn wipe_storage_volume(
        &self,
        pool: &str,
        name: &str,
        options: Options,
    ) -> Result<zbus::OwnedObjectPath, Error>;

    fn delete_storage_volume(&self, pool: &str, name: &str, options: Options) -> Result<(), Error>;

    /// Tasks that run or ended recently (action `org.kimchi.read`).
    fn list_tasks(&self, options: Options) -> Result<Vec<TaskInfo>, Error>;

    fn get_task(&self, id: u32, options: Options) -> Result<TaskInfo, Error>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn libvirt_uri(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn libvirt_connected(&self) -> zbus::Result<bool>;

    /// Network protocols QEMU on this host can stream an ISO from.
    #[zbus(property)]
    fn stream_protocols(&self) -> zbus::Result<Vec<String>>;

    #[zbus(property)]
    fn screenshot(&self) -> zbus::Result<ScreenshotSupport>;
}

#[proxy(
    interface = "org.kimchi.Kimchi1.Sessions",
    default_service = "org.kimchi.Kimchi1",
    default_path = "/org/kimchi/Kimchi1/Sessions"
)]
pub trait Sessions {
    /// Checks the password with PAM (service `kimchi`) and mints an opaque token.
    fn login(
        &self,
        user: &str,
        password: &str,
        options: Options,
    ) -> Result<(String, SessionInfo), Error>;

    fn logout(&self, token: &str, options: Options) -> Result<(), Error>;
}

#[proxy(
    interface = "org.kimchi.Kimchi1.Task",
    default_service = "org.kimchi.Kimchi1"
)]
pub trait Task {
    /// Sent once when the task ends.
    #[zbus(signal)]
    fn completed(&self, success: bool, message: String) -> zbus::Result<()>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn message(&self) -> zbus::Result<String>;
}
