use std::sync::Arc;
use std::time::Duration;

use kimchi_dbus::{
    task_path, CallOptions, Error as BusError, PoolInfo, PoolSpec, ScreenshotSupport, TaskInfo,
    TemplateInfo, TemplateSpec, VmInfo, VolumeInfo, VolumeSpec, ISO_POOL, MANAGER_PATH,
};
use zbus::message::Header;
use zbus::object_server::ObjectServer;
use zbus::{interface, OwnedObjectPath};

use super::{authorize, storage_pool, storage_volume, task, template, vm, Options, Services};
use crate::authority::{Action, Authority};
use crate::error::Error;
use crate::model::Model;
use crate::storage::Storage;
use crate::templates::Templates;
use crate::vms::Vms;

pub struct Manager {
    model: Arc<Model>,
    storage: Arc<Storage>,
    vms: Arc<Vms>,
    templates: Arc<Templates>,
    authority: Arc<Authority>,
}

impl Manager {
    pub fn new(services: Services) -> Self {
        Manager {
            model: services.model,
            storage: services.storage,
            vms: services.vms,
            templates: services.templates,
            authority: services.authority,
        }
    }

    fn vm_info(&self, record: &crate::libvirt::DomainRecord) -> VmInfo {
        vm::info(&self.model, record)
    }

    /// Asks the authority about `action` on `object` (see `bus::authorize`).
    async fn allow(
        &self,
        hdr: &Header<'_>,
        options: &Options,
        action: Action,
        object: Option<(&str, &str)>,
    ) -> Result<CallOptions, BusError> {
        authorize(&self.authority, hdr, options, action, object).await
    }

    /// The task's path, once it has ended when the caller asked to wait (or once the
    /// caller's wait timeout has passed).
    async fn task_reply(&self, id: u32, opts: &CallOptions) -> OwnedObjectPath {
        if opts.wait {
            let wait = self.storage.tasks().wait(id);
            match opts.wait_timeout_secs {
                Some(secs) => {
                    let _ = tokio::time::timeout(Duration::from_secs(secs.into()), wait).await;
                }
                None => wait.await,
            }
        }
        OwnedObjectPath::try_from(task_path(id)).expect("numeric paths are valid")
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
        self.allow(&hdr, &options, Action::Read, None).await?;
        Ok(self.model.vms().iter().map(|r| self.vm_info(r)).collect())
    }

    #[zbus(name = "GetVM")]
    async fn get_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.allow(&hdr, &options, Action::Read, vm_detail(&name))
            .await?;
        Ok(self.vm_info(&self.model.vm_by_name(&name)?))
    }

    /// The object path of the VM with this name or UUID.
    #[zbus(name = "LookupVM")]
    async fn lookup_vm(
        &self,
        name_or_uuid: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        self.allow(&hdr, &options, Action::Read, vm_detail(&name_or_uuid))
            .await?;
        let record = match self.model.vm_by_uuid(&name_or_uuid) {
            Some(r) => r,
            None => self.model.vm_by_name(&name_or_uuid)?,
        };
        Ok(self.vm_info(&record).path)
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
    ) -> Result<OwnedObjectPath, BusError> {
        let opts = self
            .allow(&hdr, &options, Action::VmManage, vm_detail(&name))
            .await?;
        let id = self.vms.create(&template, &name, &storage_pool).await?;
        Ok(self.task_reply(id, &opts).await)
    }

    #[zbus(name = "StartVM")]
    async fn start_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.allow(&hdr, &options, Action::VmLifecycle, vm_detail(&name))
            .await?;
        Ok(self.vm_info(&self.vms.start(&name).await?))
    }

    #[zbus(name = "StopVM")]
    async fn stop_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VmInfo, BusError> {
        self.allow(&hdr, &options, Action::VmLifecycle, vm_detail(&name))
            .await?;
        Ok(self.vm_info(&self.vms.stop(&name).await?))
    }

    #[zbus(name = "DeleteVM")]
    async fn delete_vm(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.allow(&hdr, &options, Action::VmManage, vm_detail(&name))
            .await?;
        Ok(self.vms.delete(&name).await?)
    }

    /// A PNG of the running VM's screen: it shows what the console shows.
    #[zbus(name = "GetVMScreenshot")]
    async fn get_vm_screenshot(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<u8>, BusError> {
        self.allow(&hdr, &options, Action::VmConsole, vm_detail(&name))
            .await?;
        Ok(self.vms.screenshot(&name).await?.to_vec())
    }

    async fn list_templates(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<TemplateInfo>, BusError> {
        self.allow(&hdr, &options, Action::Read, None).await?;
        Ok(self
            .templates
            .list()
            .into_iter()
            .map(template::info)
            .collect())
    }

    async fn get_template(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TemplateInfo, BusError> {
        self.allow(&hdr, &options, Action::Read, template_detail(&name))
            .await?;
        Ok(template::info(self.templates.get(&name)?))
    }

    async fn lookup_template(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        self.allow(&hdr, &options, Action::Read, template_detail(&name))
            .await?;
        Ok(template::info(self.templates.get(&name)?).path)
    }

    async fn create_template(
        &self,
        spec: TemplateSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TemplateInfo, BusError> {
        let name = spec.name.clone();
        self.allow(
            &hdr,
            &options,
            Action::TemplateManage,
            template_detail(&name),
        )
        .await?;
        Ok(template::info(self.templates.create(spec).await?))
    }

    async fn update_template(
        &self,
        name: String,
        spec: TemplateSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TemplateInfo, BusError> {
        self.allow(
            &hdr,
            &options,
            Action::TemplateManage,
            template_detail(&name),
        )
        .await?;
        Ok(template::info(self.templates.update(&name, spec).await?))
    }

    async fn delete_template(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.allow(
            &hdr,
            &options,
            Action::TemplateManage,
            template_detail(&name),
        )
        .await?;
        Ok(self.templates.delete(&name).await?)
    }

    async fn list_storage_pools(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<PoolInfo>, BusError> {
        self.allow(&hdr, &options, Action::Read, None).await?;
        let mut pools: Vec<PoolInfo> = self
            .storage
            .pools()
            .iter()
            .map(storage_pool::info)
            .collect();
        pools.push(storage_pool::iso_pool_info(self.storage.iso_count().await?));
        Ok(pools)
    }

    async fn get_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        self.allow(&hdr, &options, Action::Read, pool_detail(&name))
            .await?;
        if name == ISO_POOL {
            return Ok(storage_pool::iso_pool_info(self.storage.iso_count().await?));
        }
        Ok(storage_pool::info(&self.storage.pool(&name).await?))
    }

    async fn create_storage_pool(
        &self,
        spec: PoolSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        let name = spec.name.clone();
        self.allow(&hdr, &options, Action::PoolManage, pool_detail(&name))
            .await?;
        Ok(storage_pool::info(&self.storage.create_pool(spec).await?))
    }

    async fn activate_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        self.allow(&hdr, &options, Action::PoolManage, pool_detail(&name))
            .await?;
        Ok(storage_pool::info(
            &self.storage.activate_pool(&name).await?,
        ))
    }

    async fn deactivate_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<PoolInfo, BusError> {
        self.allow(&hdr, &options, Action::PoolManage, pool_detail(&name))
            .await?;
        Ok(storage_pool::info(
            &self.storage.deactivate_pool(&name).await?,
        ))
    }

    async fn delete_storage_pool(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.allow(&hdr, &options, Action::PoolManage, pool_detail(&name))
            .await?;
        Ok(self.storage.delete_pool(&name).await?)
    }

    async fn list_storage_volumes(
        &self,
        pool: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<VolumeInfo>, BusError> {
        self.allow(&hdr, &options, Action::Read, pool_detail(&pool))
            .await?;
        let volumes = self.storage.volumes(&pool).await?;
        Ok(volumes.iter().map(storage_volume::info).collect())
    }

    async fn get_storage_volume(
        &self,
        pool: String,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<VolumeInfo, BusError> {
        self.allow(&hdr, &options, Action::Read, volume_detail(&name))
            .await?;
        Ok(storage_volume::info(
            &self.storage.volume(&pool, &name).await?,
        ))
    }

    async fn create_storage_volume(
        &self,
        pool: String,
        spec: VolumeSpec,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let name = spec.name.clone();
        let opts = self
            .allow(&hdr, &options, Action::VolumeManage, volume_detail(&name))
            .await?;
        let id = self.storage.create_volume(&pool, spec).await?;
        Ok(self.task_reply(id, &opts).await)
    }

    async fn resize_storage_volume(
        &self,
        pool: String,
        name: String,
        size_mib: u64,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let opts = self
            .allow(&hdr, &options, Action::VolumeManage, volume_detail(&name))
            .await?;
        let id = self.storage.resize_volume(&pool, &name, size_mib).await?;
        Ok(self.task_reply(id, &opts).await)
    }

    async fn wipe_storage_volume(
        &self,
        pool: String,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let opts = self
            .allow(&hdr, &options, Action::VolumeManage, volume_detail(&name))
            .await?;
        let id = self.storage.wipe_volume(&pool, &name).await?;
        Ok(self.task_reply(id, &opts).await)
    }

    async fn delete_storage_volume(
        &self,
        pool: String,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        self.allow(&hdr, &options, Action::VolumeManage, volume_detail(&name))
            .await?;
        Ok(self.storage.delete_volume(&pool, &name).await?)
    }

    async fn list_tasks(
        &self,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<TaskInfo>, BusError> {
        self.allow(&hdr, &options, Action::Read, None).await?;
        Ok(self.storage.tasks().list().iter().map(task::info).collect())
    }

    async fn get_task(
        &self,
        id: u32,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<TaskInfo, BusError> {
        self.allow(&hdr, &options, Action::Read, None).await?;
        let record = self
            .storage
            .tasks()
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no task {id}")))?;
        Ok(task::info(&record))
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

/// polkit details naming the object a call is about, for targeted rules.
fn vm_detail(name: &str) -> Option<(&'static str, &str)> {
    Some(("kimchi.vm.name", name))
}

fn template_detail(name: &str) -> Option<(&'static str, &str)> {
    Some(("kimchi.template.name", name))
}

fn pool_detail(name: &str) -> Option<(&'static str, &str)> {
    Some(("kimchi.pool.name", name))
}

fn volume_detail(name: &str) -> Option<(&'static str, &str)> {
    Some(("kimchi.volume.name", name))
}
