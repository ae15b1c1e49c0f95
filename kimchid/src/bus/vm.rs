use kimchi_dbus::{vm_path, VmInfo};
use zbus::message::Header;
use zbus::object_server::ObjectServer;
use zbus::{interface, OwnedFd, OwnedObjectPath};

use super::{authorize, Options, Services};
use crate::authority::Action;
use crate::libvirt::DomainRecord;
use crate::model::Model;

/// One exported VM; its properties read the model, so they are never stale.
pub struct Vm {
    uuid: String,
    services: Services,
}

impl Vm {
    pub fn new(uuid: String, services: Services) -> Self {
        Vm { uuid, services }
    }

    fn record(&self) -> Option<DomainRecord> {
        self.services.model.vm_by_uuid(&self.uuid)
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
        let name = self.record().map(|r| r.name).unwrap_or_default();
        authorize(
            &self.services.authority,
            &hdr,
            &options,
            Action::VmConsole,
            Some(("kimchi.vm.name", &name)),
        )
        .await?;
        let fd = self.services.vms.open_console(&self.uuid).await?;
        Ok(OwnedFd::from(fd))
    }

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

    /// The icon of the template the VM was made from, or empty.
    #[zbus(property)]
    fn icon(&self) -> String {
        self.record().map(|r| r.icon).unwrap_or_default()
    }

    /// CPU %, network and disk KB/s with their recent peaks; changes every few
    /// seconds, so it is read, not announced.
    #[zbus(property(emits_changed_signal = "false"))]
    fn stats(&self) -> kimchi_dbus::VmStats {
        self.services.model.vm_stats(&self.uuid)
    }
}

pub fn info(model: &Model, r: &DomainRecord) -> VmInfo {
    VmInfo {
        path: OwnedObjectPath::try_from(vm_path(&r.uuid)).expect("UUIDs make valid paths"),
        name: r.name.clone(),
        uuid: r.uuid.clone(),
        state: r.state.to_owned(),
        memory_mib: r.memory_mib,
        graphics_type: r.graphics_type.clone(),
        icon: r.icon.clone(),
        stats: model.vm_stats(&r.uuid),
    }
}

pub async fn announce(server: &ObjectServer, uuid: &str) -> zbus::Result<()> {
    let iface = server.interface::<_, Vm>(vm_path(uuid)).await?;
    let emitter = iface.signal_emitter();
    let vm = iface.get().await;
    vm.state_changed(emitter).await?;
    vm.name_changed(emitter).await?;
    vm.memory_changed(emitter).await?;
    vm.graphics_type_changed(emitter).await?;
    vm.icon_changed(emitter).await
}
