use std::sync::Arc;

use kimchi_dbus::{vm_path, VmInfo};
use zbus::object_server::ObjectServer;
use zbus::{interface, OwnedObjectPath};

use crate::libvirt::DomainRecord;
use crate::model::Model;

/// One exported VM; its properties read the model, so they are never stale.
pub struct Vm {
    uuid: String,
    model: Arc<Model>,
}

impl Vm {
    pub fn new(uuid: String, model: Arc<Model>) -> Self {
        Vm { uuid, model }
    }

    fn record(&self) -> Option<DomainRecord> {
        self.model.vm_by_uuid(&self.uuid)
    }
}

#[interface(name = "org.kimchi.Kimchi1.VM")]
impl Vm {
    #[zbus(property)]
    fn name(&self) -> String {
        self.record().map(|r| r.name).unwrap_or_default()
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }

    /// running, paused, shutoff, … (libvirt's state as a word).
    #[zbus(property)]
    fn state(&self) -> String {
        self.record()
            .map(|r| r.state.to_owned())
            .unwrap_or_default()
    }

    /// Memory assigned to the guest, MiB.
    #[zbus(property)]
    fn memory(&self) -> u64 {
        self.record().map(|r| r.memory_mib).unwrap_or_default()
    }

    /// `vnc`, or empty when the guest has no VNC display.
    #[zbus(property)]
    fn graphics_type(&self) -> String {
        self.record().map(|r| r.graphics_type).unwrap_or_default()
    }
}

pub fn info(r: &DomainRecord) -> VmInfo {
    VmInfo {
        path: OwnedObjectPath::try_from(vm_path(&r.uuid)).expect("UUIDs make valid paths"),
        name: r.name.clone(),
        uuid: r.uuid.clone(),
        state: r.state.to_owned(),
        memory_mib: r.memory_mib,
        graphics_type: r.graphics_type.clone(),
    }
}

pub async fn announce(server: &ObjectServer, uuid: &str) -> zbus::Result<()> {
    let iface = server.interface::<_, Vm>(vm_path(uuid)).await?;
    let emitter = iface.signal_emitter();
    let vm = iface.get().await;
    vm.state_changed(emitter).await?;
    vm.name_changed(emitter).await?;
    vm.memory_changed(emitter).await?;
    vm.graphics_type_changed(emitter).await
}
