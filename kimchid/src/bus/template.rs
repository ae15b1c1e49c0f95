use std::sync::Arc;

use kimchi_dbus::TemplateDisk;
use zbus::interface;

use crate::engine::templates::{Template as Stored, Templates};

/// One exported template, at a path made from its name; a rename moves it.
pub struct Template {
    name: String,
    templates: Arc<Templates>,
}

impl Template {
    pub fn new(name: String, templates: Arc<Templates>) -> Self {
        Template { name, templates }
    }

    fn read<T: Default>(&self, f: impl FnOnce(Stored) -> T) -> T {
        self.templates.get(&self.name).map(f).unwrap_or_default()
    }
}

#[interface(name = "org.kimchi.Kimchi1.Template")]
impl Template {
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn folder(&self) -> Vec<String> {
        self.read(|t| t.spec.folder)
    }

    #[zbus(property)]
    fn icon(&self) -> String {
        self.read(|t| t.spec.icon)
    }

    #[zbus(property)]
    fn os_distro(&self) -> String {
        self.read(|t| t.spec.os_distro)
    }

    #[zbus(property)]
    fn os_version(&self) -> String {
        self.read(|t| t.spec.os_version)
    }

    #[zbus(property)]
    fn cpus(&self) -> u32 {
        self.read(|t| t.spec.cpus)
    }

    /// MiB.
    #[zbus(property)]
    fn memory(&self) -> u64 {
        self.read(|t| t.spec.memory_mib)
    }

    #[zbus(property)]
    fn cdrom(&self) -> String {
        self.read(|t| t.spec.cdrom)
    }

    /// (index, size in GiB, volume to copy) per disk.
    #[zbus(property)]
    fn disks(&self) -> Vec<TemplateDisk> {
        self.read(|t| t.spec.disks)
    }

    /// virtio or ide, chosen for the OS.
    #[zbus(property)]
    fn disk_bus(&self) -> String {
        self.read(|t| t.disk_bus)
    }

    /// virtio or e1000, chosen for the OS.
    #[zbus(property)]
    fn nic_model(&self) -> String {
        self.read(|t| t.nic_model)
    }
}

/// What `PropertiesChanged` reports when the template changes.
pub const ANNOUNCED: &[&str] = &[
    "Folder",
    "Icon",
    "OsDistro",
    "OsVersion",
    "Cpus",
    "Memory",
    "Cdrom",
    "Disks",
    "DiskBus",
    "NicModel",
];
