use std::sync::Arc;

use kimchi_dbus::{Error as BusError, ScreenshotSupport, VmInfo, MANAGER_PATH};
use zbus::message::Header;
use zbus::object_server::ObjectServer;
use zbus::{interface, OwnedObjectPath};

use super::{authorize, vm, Options};
use crate::authority::{Action, Authority};
use crate::model::Model;

pub struct Manager {
    model: Arc<Model>,
    authority: Arc<Authority>,
}

impl Manager {
    pub fn new(model: Arc<Model>, authority: Arc<Authority>) -> Self {
        Manager { model, authority }
    }
}

#[interface(name = "org.kimchi.Kimchi1.Manager")]
impl Manager {
    #[zbus(name = "ListVMs")]
    async fn list_vms(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<VmInfo>, BusError> {
        authorize(&self.authority, &hdr, &options, Action::Read, None).await?;
        Ok(self.model.vms().iter().map(vm::info).collect())
    }

    #[zbus(name = "GetVM")]
    async fn get_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        authorize(
            &self.authority,
            &hdr,
            &options,
            Action::Read,
            Some(("kimchi.vm.name", &name)),
        )
        .await?;
        Ok(vm::info(&self.model.vm_by_name(&name)?))
    }

    /// The object path of the VM with this name or UUID.
    #[zbus(name = "LookupVM")]
    async fn lookup_vm(
        &self,
        name_or_uuid: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        authorize(
            &self.authority,
            &hdr,
            &options,
            Action::Read,
            Some(("kimchi.vm.name", &name_or_uuid)),
        )
        .await?;
        let record = match self.model.vm_by_uuid(&name_or_uuid) {
            Some(r) => r,
            None => self.model.vm_by_name(&name_or_uuid)?,
        };
        Ok(vm::info(&record).path)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn libvirt_uri(&self) -> String {
        self.model.libvirt_uri().to_owned()
    }

    #[zbus(property)]
    fn libvirt_connected(&self) -> bool {
        self.model.host().libvirt_connected
    }

    /// Network protocols QEMU on this host can stream an ISO from (probed once).
    #[zbus(property)]
    fn stream_protocols(&self) -> Vec<String> {
        self.model.host().stream_protocols
    }

    /// Whether libvirt screenshots work here: unknown until probed, then yes or no.
    #[zbus(property)]
    fn screenshot(&self) -> ScreenshotSupport {
        self.model.host().screenshot
    }
}

pub async fn announce(server: &ObjectServer) -> zbus::Result<()> {
    let iface = server.interface::<_, Manager>(MANAGER_PATH).await?;
    let emitter = iface.signal_emitter();
    let manager = iface.get().await;
    manager.libvirt_connected_changed(emitter).await?;
    manager.stream_protocols_changed(emitter).await?;
    manager.screenshot_changed(emitter).await
}
