use std::sync::Arc;

use kimchi_dbus::{iso_pool_path, pool_path, PoolInfo, ISO_POOL};
use zbus::object_server::ObjectServer;
use zbus::{interface, OwnedObjectPath};

use crate::libvirt::PoolRecord;
use crate::model::Model;

const MIB: u64 = 1024 * 1024;

/// One exported storage pool; properties read the model.
pub struct StoragePool {
    uuid: String,
    model: Arc<Model>,
}

impl StoragePool {
    pub fn new(uuid: String, model: Arc<Model>) -> Self {
        StoragePool { uuid, model }
    }

    fn read<T: Default>(&self, f: impl FnOnce(PoolRecord) -> T) -> T {
        self.model
            .pool_by_uuid(&self.uuid)
            .map(f)
            .unwrap_or_default()
    }
}

#[interface(name = "org.kimchi.Kimchi1.StoragePool")]
impl StoragePool {
    #[zbus(property)]
    fn name(&self) -> String {
        self.read(|p| p.name)
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }

    /// active, inactive, building, degraded or inaccessible.
    #[zbus(property)]
    fn state(&self) -> String {
        self.read(|p| p.state.to_owned())
    }

    #[zbus(property)]
    fn pool_type(&self) -> String {
        self.read(|p| p.pool_type)
    }

    /// The pool's directory on the host.
    #[zbus(property)]
    fn path(&self) -> String {
        self.read(|p| p.target_path)
    }

    /// Bytes.
    #[zbus(property)]
    fn capacity(&self) -> u64 {
        self.read(|p| p.capacity)
    }

    /// Bytes.
    #[zbus(property)]
    fn allocation(&self) -> u64 {
        self.read(|p| p.allocation)
    }

    /// Bytes.
    #[zbus(property)]
    fn available(&self) -> u64 {
        self.read(|p| p.available)
    }

    #[zbus(property)]
    fn volume_count(&self) -> u32 {
        self.read(|p| p.nr_volumes)
    }
}

pub fn info(p: &PoolRecord) -> PoolInfo {
    PoolInfo {
        path: OwnedObjectPath::try_from(pool_path(&p.uuid)).expect("UUIDs make valid paths"),
        name: p.name.clone(),
        state: p.state.to_owned(),
        target_path: p.target_path.clone(),
        pool_type: p.pool_type.clone(),
        capacity_mib: p.capacity / MIB,
        allocated_mib: p.allocation / MIB,
        available_mib: p.available / MIB,
        nr_volumes: p.nr_volumes,
    }
}

/// The read-only view of every ISO image of every active pool.
pub fn iso_pool_info(nr_volumes: u32) -> PoolInfo {
    PoolInfo {
        path: OwnedObjectPath::try_from(iso_pool_path()).expect("static path is valid"),
        name: ISO_POOL.to_owned(),
        state: "active".to_owned(),
        target_path: String::new(),
        pool_type: "kimchi-iso".to_owned(),
        capacity_mib: 0,
        allocated_mib: 0,
        available_mib: 0,
        nr_volumes,
    }
}

pub async fn announce(server: &ObjectServer, uuid: &str) -> zbus::Result<()> {
    let iface = server.interface::<_, StoragePool>(pool_path(uuid)).await?;
    let emitter = iface.signal_emitter();
    let pool = iface.get().await;
    pool.state_changed(emitter).await?;
    pool.capacity_changed(emitter).await?;
    pool.allocation_changed(emitter).await?;
    pool.available_changed(emitter).await?;
    pool.volume_count_changed(emitter).await
}
