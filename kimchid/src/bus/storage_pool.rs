use std::sync::Arc;

use zbus::interface;

use crate::engine::hypervisor::PoolRecord;
use crate::engine::model::Model;

/// One exported storage pool; properties read the model (sizes in bytes, exact).
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
        self.read(|p| p.state.to_string())
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

/// What `PropertiesChanged` reports when the pool changes.
pub const ANNOUNCED: &[&str] = &[
    "State",
    "Capacity",
    "Allocation",
    "Available",
    "VolumeCount",
];
