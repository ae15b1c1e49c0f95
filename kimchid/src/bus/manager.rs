use std::sync::Arc;

use kimchi_dbus::{
    Capabilities, Error as BusError, InterfaceInfo, NetworkInfo, NetworkPatch, NetworkSpec,
    PoolInfo, PoolSpec, ScreenshotSupport, TaskInfo, TemplateInfo, TemplatePatch, TemplateSpec,
    VmIface, VmIfaceSpec, VmInfo, VmPatch, VmStorage, VmStorageSpec, VolumeInfo, VolumeSpec,
};
use zbus::message::Header;
use zbus::{interface, Connection, OwnedFd, OwnedObjectPath};

use super::gateway_link;
use super::guard::{wait, Guard, Object, Peer};
use super::Options;
use crate::engine::hypervisor::Power;
use crate::engine::Engine;
use crate::error::Error;

/// Every read and change, keyed by name so that one call does it.
pub struct Manager {
    engine: Arc<Engine>,
    guard: Arc<Guard>,
}

impl Manager {
    pub fn new(engine: Arc<Engine>, guard: Arc<Guard>) -> Self {
        Manager { engine, guard }
    }

    /// The power actions that answer at once share one path.
    async fn power(
        &self,
        hdr: &Header<'_>,
        options: &Options,
        name: &str,
        power: Power,
    ) -> Result<VmInfo, BusError> {
        self.guard.check(hdr, options, Object::Vm(name)).await?;
        Ok(self.engine.vms.power(name, power).await?)
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
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        Ok(self.engine.vms.list())
    }

    #[zbus(name = "GetVM")]
    async fn get_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.get(&name)?)
    }

    /// The object path of the VM with this name or UUID.
    #[zbus(name = "LookupVM")]
    async fn lookup_vm(
        &self,
        name_or_uuid: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        self.guard
            .check(&hdr, &options, Object::Vm(&name_or_uuid))
            .await?;
        Ok(self.engine.vms.lookup(&name_or_uuid)?.path)
    }

    /// Starts the creation task; its target is the VM's API path.
    #[zbus(name = "CreateVM")]
    async fn create_vm(
        &self,
        template: String,
        name: String,
        storage_pool: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TaskInfo, BusError> {
        let opts = self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        let vms = &self.engine.vms;
        Ok(vms
            .create(&template, &name, &storage_pool, wait(&opts))
            .await?)
    }

    #[zbus(name = "StartVM")]
    async fn start_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.power(&hdr, &options, &name, Power::On).await
    }

    #[zbus(name = "StopVM")]
    async fn stop_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.power(&hdr, &options, &name, Power::Off).await
    }

    /// Starts the task that asks the guest to shut down and ends when it is off.
    #[zbus(name = "ShutdownVM")]
    async fn shutdown_vm(
        &self,
        name: String,
        timeout_sec: u32,
        force: bool,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TaskInfo, BusError> {
        let opts = self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        let vms = &self.engine.vms;
        Ok(vms.shutdown(&name, timeout_sec, force, wait(&opts)).await?)
    }

    #[zbus(name = "RebootVM")]
    async fn reboot_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.power(&hdr, &options, &name, Power::Reboot).await
    }

    #[zbus(name = "ResetVM")]
    async fn reset_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.power(&hdr, &options, &name, Power::Reset).await
    }

    #[zbus(name = "SuspendVM")]
    async fn suspend_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.power(&hdr, &options, &name, Power::Suspend).await
    }

    #[zbus(name = "ResumeVM")]
    async fn resume_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.power(&hdr, &options, &name, Power::Resume).await
    }

    /// Changes the fields `changes` names (a `VmPatch`); `name` renames.
    #[zbus(name = "UpdateVM")]
    async fn update_vm(
        &self,
        name: String,
        changes: Options,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        let patch = VmPatch::from_dict(&changes)?;
        Ok(self.engine.vms.update(&name, patch).await?)
    }

    #[zbus(name = "ListVMIfaces")]
    async fn list_vm_ifaces(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<VmIface>, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.ifaces(&name).await?)
    }

    #[zbus(name = "AttachVMIface")]
    async fn attach_vm_iface(
        &self,
        name: String,
        spec: VmIfaceSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmIface, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.attach_iface(&name, spec).await?)
    }

    #[zbus(name = "UpdateVMIface")]
    async fn update_vm_iface(
        &self,
        name: String,
        mac: String,
        network: String,
        model: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmIface, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        let vms = &self.engine.vms;
        Ok(vms.update_iface(&name, &mac, &network, &model).await?)
    }

    #[zbus(name = "DetachVMIface")]
    async fn detach_vm_iface(
        &self,
        name: String,
        mac: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.detach_iface(&name, &mac).await?)
    }

    #[zbus(name = "ListVMStorages")]
    async fn list_vm_storages(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<VmStorage>, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.storages(&name)?)
    }

    #[zbus(name = "AttachVMStorage")]
    async fn attach_vm_storage(
        &self,
        name: String,
        spec: VmStorageSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmStorage, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.attach_storage(&name, spec).await?)
    }

    #[zbus(name = "UpdateVMStorage")]
    async fn update_vm_storage(
        &self,
        name: String,
        dev: String,
        path: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmStorage, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.update_storage(&name, &dev, &path).await?)
    }

    #[zbus(name = "DetachVMStorage")]
    async fn detach_vm_storage(
        &self,
        name: String,
        dev: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.detach_storage(&name, &dev).await?)
    }

    #[zbus(name = "DeleteVM")]
    async fn delete_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.delete(&name).await?)
    }

    /// A PNG of the running VM's screen: it shows what the console shows.
    #[zbus(name = "GetVMScreenshot")]
    async fn get_vm_screenshot(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<u8>, BusError> {
        self.guard.check(&hdr, &options, Object::Vm(&name)).await?;
        Ok(self.engine.vms.screenshot(&name).await?.to_vec())
    }

    async fn list_templates(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<TemplateInfo>, BusError> {
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        Ok(self.engine.templates.list())
    }

    async fn get_template(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TemplateInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Template(&name))
            .await?;
        Ok(self.engine.templates.get(&name)?.info())
    }

    async fn lookup_template(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        self.guard
            .check(&hdr, &options, Object::Template(&name))
            .await?;
        Ok(self.engine.templates.get(&name)?.info().path)
    }

    async fn create_template(
        &self,
        spec: TemplateSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TemplateInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Template(&spec.name))
            .await?;
        Ok(self.engine.templates.create(spec).await?.info())
    }

    /// Changes the fields `changes` names (a `TemplatePatch`); `name` renames.
    async fn update_template(
        &self,
        name: String,
        changes: Options,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TemplateInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Template(&name))
            .await?;
        let patch = TemplatePatch::from_dict(&changes)?;
        Ok(self.engine.templates.update(&name, patch).await?.info())
    }

    async fn delete_template(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.guard
            .check(&hdr, &options, Object::Template(&name))
            .await?;
        Ok(self.engine.templates.delete(&name).await?)
    }

    async fn list_storage_pools(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<PoolInfo>, BusError> {
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        Ok(self.engine.pools.list())
    }

    async fn get_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Pool(&name))
            .await?;
        Ok(self.engine.pools.get(&name).await?)
    }

    async fn create_storage_pool(
        &self,
        spec: PoolSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Pool(&spec.name))
            .await?;
        Ok(self.engine.pools.create(spec).await?)
    }

    async fn activate_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Pool(&name))
            .await?;
        Ok(self.engine.pools.activate(&name).await?)
    }

    async fn deactivate_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Pool(&name))
            .await?;
        Ok(self.engine.pools.deactivate(&name).await?)
    }

    async fn delete_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.guard
            .check(&hdr, &options, Object::Pool(&name))
            .await?;
        Ok(self.engine.pools.delete(&name).await?)
    }

    async fn list_storage_volumes(
        &self,
        pool: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<VolumeInfo>, BusError> {
        self.guard
            .check(&hdr, &options, Object::Pool(&pool))
            .await?;
        Ok(self.engine.volumes.list(&pool).await?)
    }

    async fn get_storage_volume(
        &self,
        pool: String,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VolumeInfo, BusError> {
        let object = Object::Volume {
            pool: &pool,
            name: &name,
        };
        self.guard.check(&hdr, &options, object).await?;
        Ok(self.engine.volumes.get(&pool, &name).await?)
    }

    async fn create_storage_volume(
        &self,
        pool: String,
        spec: VolumeSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TaskInfo, BusError> {
        let object = Object::Volume {
            pool: &pool,
            name: &spec.name,
        };
        let opts = self.guard.check(&hdr, &options, object).await?;
        Ok(self.engine.volumes.create(&pool, spec, wait(&opts)).await?)
    }

    async fn resize_storage_volume(
        &self,
        pool: String,
        name: String,
        size_mib: u64,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TaskInfo, BusError> {
        let object = Object::Volume {
            pool: &pool,
            name: &name,
        };
        let opts = self.guard.check(&hdr, &options, object).await?;
        let volumes = &self.engine.volumes;
        Ok(volumes.resize(&pool, &name, size_mib, wait(&opts)).await?)
    }

    async fn wipe_storage_volume(
        &self,
        pool: String,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TaskInfo, BusError> {
        let object = Object::Volume {
            pool: &pool,
            name: &name,
        };
        let opts = self.guard.check(&hdr, &options, object).await?;
        Ok(self.engine.volumes.wipe(&pool, &name, wait(&opts)).await?)
    }

    async fn delete_storage_volume(
        &self,
        pool: String,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        let object = Object::Volume {
            pool: &pool,
            name: &name,
        };
        self.guard.check(&hdr, &options, object).await?;
        Ok(self.engine.volumes.delete(&pool, &name).await?)
    }

    async fn list_tasks(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<TaskInfo>, BusError> {
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        Ok(self.engine.tasks.list().iter().map(|t| t.info()).collect())
    }

    async fn get_task(
        &self,
        id: u32,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TaskInfo, BusError> {
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        Ok(self.engine.tasks.info(id)?)
    }

    async fn list_networks(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<NetworkInfo>, BusError> {
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        Ok(self.engine.networks.list())
    }

    async fn get_network(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<NetworkInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Network(&name))
            .await?;
        Ok(self.engine.networks.get(&name)?)
    }

    async fn lookup_network(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        self.guard
            .check(&hdr, &options, Object::Network(&name))
            .await?;
        Ok(self.engine.networks.get(&name)?.path)
    }

    async fn create_network(
        &self,
        spec: NetworkSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<NetworkInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Network(&spec.name))
            .await?;
        Ok(self.engine.networks.create(spec).await?)
    }

    async fn activate_network(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<NetworkInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Network(&name))
            .await?;
        Ok(self.engine.networks.activate(&name).await?)
    }

    async fn deactivate_network(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<NetworkInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Network(&name))
            .await?;
        Ok(self.engine.networks.deactivate(&name).await?)
    }

    /// Changes what `changes` names (a `NetworkPatch`); `name` renames.
    async fn update_network(
        &self,
        name: String,
        changes: Options,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<NetworkInfo, BusError> {
        self.guard
            .check(&hdr, &options, Object::Network(&name))
            .await?;
        let patch = NetworkPatch::from_dict(&changes)?;
        Ok(self.engine.networks.update(&name, patch).await?)
    }

    async fn delete_network(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.guard
            .check(&hdr, &options, Object::Network(&name))
            .await?;
        Ok(self.engine.networks.delete(&name).await?)
    }

    async fn list_interfaces(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<InterfaceInfo>, BusError> {
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        Ok(self.engine.networks.interfaces().await?)
    }

    /// What the host can do; public by design, as Kimchi's `/config/capabilities`.
    async fn get_capabilities(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Capabilities, BusError> {
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        let host = self.engine.model.host();
        Ok(Capabilities {
            stream_protocols: host.stream_protocols,
            screenshot: host.screenshot,
        })
    }

    /// For the gateway's uid: a socket serving this interface and Sessions peer to
    /// peer (`gateway_link.rs`).
    #[zbus(name = "OpenGatewayLink")]
    async fn open_gateway_link(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedFd, BusError> {
        if *self.guard.peer() != Peer::Bus {
            return Err(Error::NotSupported("this is already the gateway's link".into()).into());
        }
        self.guard.check(&hdr, &options, Object::Nothing).await?;
        let opener = self.guard.sender(&hdr)?;
        gateway_link::open(self.engine.clone(), &self.guard, conn.clone(), opener)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn libvirt_uri(&self) -> String {
        self.engine.model.libvirt_uri().to_owned()
    }

    #[zbus(property)]
    fn libvirt_connected(&self) -> bool {
        self.engine.model.host().libvirt_connected
    }

    /// Network protocols QEMU on this host can stream an ISO from (probed once).
    #[zbus(property)]
    fn stream_protocols(&self) -> Vec<String> {
        self.engine.model.host().stream_protocols
    }

    /// Whether libvirt screenshots work here: unknown until probed, then yes or no.
    #[zbus(property)]
    fn screenshot(&self) -> ScreenshotSupport {
        self.engine.model.host().screenshot
    }
}

/// What `PropertiesChanged` reports when what kimchid knows of the host changes.
pub const ANNOUNCED: &[&str] = &["LibvirtConnected", "StreamProtocols", "Screenshot"];
