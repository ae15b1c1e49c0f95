use std::sync::Arc;

use kimchi_dbus::VmInfo;
use zbus::message::Header;
use zbus::{interface, OwnedFd};

use super::guard::{Guard, Object};
use super::Options;
use crate::engine::Engine;

/// One exported VM; its properties read the model, so they are never stale.
pub struct Vm {
    uuid: String,
    engine: Arc<Engine>,
    guard: Arc<Guard>,
}

impl Vm {
    pub fn new(uuid: String, engine: Arc<Engine>, guard: Arc<Guard>) -> Self {
        Vm {
            uuid,
            engine,
            guard,
        }
    }

    fn read<T: Default>(&self, f: impl FnOnce(VmInfo) -> T) -> T {
        self.engine
            .vms
            .by_uuid(&self.uuid)
            .map(f)
            .unwrap_or_default()
    }
}

#[interface(name = "org.kimchi.Kimchi1.VM")]
impl Vm {
    /// A socket carrying the guest's VNC stream (from `virDomainOpenGraphicsFD`): a
    /// console needs no VNC TCP port.
    async fn open_console(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedFd, kimchi_dbus::Error> {
        let name = self.read(|vm| vm.name);
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        let fd = self.engine.vms.open_console(&self.uuid).await?;
        Ok(OwnedFd::from(fd))
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.read(|vm| vm.name)
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }

    /// running, paused, shutoff, … (libvirt's state as a word).
    #[zbus(property)]
    fn state(&self) -> String {
        self.read(|vm| vm.state.to_string())
    }

    /// Memory assigned to the guest, MiB.
    #[zbus(property)]
    fn memory(&self) -> u64 {
        self.read(|vm| vm.memory_mib)
    }

    /// `vnc`, or empty when the guest has no VNC display.
    #[zbus(property)]
    fn graphics_type(&self) -> String {
        self.read(|vm| vm.graphics_type)
    }

    /// The icon of the template the VM was made from, or empty.
    #[zbus(property)]
    fn icon(&self) -> String {
        self.read(|vm| vm.icon)
    }

    /// Virtual CPUs the guest has now.
    #[zbus(property, name = "CPUs")]
    fn cpus(&self) -> u32 {
        self.read(|vm| vm.cpus)
    }

    #[zbus(property)]
    fn autostart(&self) -> bool {
        self.read(|vm| vm.autostart)
    }

    #[zbus(property)]
    fn title(&self) -> String {
        self.read(|vm| vm.title)
    }

    #[zbus(property)]
    fn description(&self) -> String {
        self.read(|vm| vm.description)
    }

    /// The stored definition differs from the running guest; the next power-on
    /// applies it.
    #[zbus(property)]
    fn pending_changes(&self) -> bool {
        self.read(|vm| vm.pending_changes)
    }

    /// CPU %, network and disk KB/s with their recent peaks; changes every few
    /// seconds, so it is read, not announced.
    #[zbus(property(emits_changed_signal = "false"))]
    fn stats(&self) -> kimchi_dbus::VmStats {
        self.engine.model.vm_stats(&self.uuid)
    }
}

/// What `PropertiesChanged` reports when the VM changes (stats change too often).
pub const ANNOUNCED: &[&str] = &[
    "State",
    "Name",
    "Memory",
    "GraphicsType",
    "Icon",
    "CPUs",
    "Autostart",
    "Title",
    "Description",
    "PendingChanges",
];
