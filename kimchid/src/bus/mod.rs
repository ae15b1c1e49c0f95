//! The D-Bus face of kimchid: objects that parse arguments, ask the authority, and
//! delegate to the model. No logic of their own.

mod manager;
mod sessions;
mod storage_pool;
mod storage_volume;
mod task;
mod template;
mod vm;

use std::collections::HashMap;
use std::sync::Arc;

use kimchi_dbus::{
    pool_path, task_path, template_path, vm_path, CallOptions, Error as BusError, MANAGER_PATH,
    ROOT_PATH, SESSIONS_PATH,
};
use tokio::sync::mpsc;
use zbus::message::Header;
use zbus::{Connection, OwnedVariant};

use crate::authority::{Action, Authority};
use crate::model::{Change, Model};
use crate::storage::Storage;
use crate::tasks::Tasks;
use crate::templates::Templates;
use crate::vms::Vms;

use manager::Manager;
use sessions::Sessions;
use storage_pool::StoragePool;
use task::Task;
use template::Template;
use vm::Vm;

type Options = HashMap<String, OwnedVariant>;

/// What the bus objects delegate to.
#[derive(Clone)]
pub struct Services {
    pub model: Arc<Model>,
    pub storage: Arc<Storage>,
    pub vms: Arc<Vms>,
    pub templates: Arc<Templates>,
    pub tasks: Arc<Tasks>,
    pub authority: Arc<Authority>,
}

/// Parses the options and asks the authority: the first thing every method does.
async fn authorize(
    authority: &Authority,
    hdr: &Header<'_>,
    options: &Options,
    action: Action,
    object: Option<(&str, &str)>,
) -> Result<CallOptions, BusError> {
    let opts = CallOptions::from_dict(options)?;
    if let Some(id) = &opts.request_id {
        tracing::debug!(request_id = %id, action = action.id(), "authorizing");
    }
    authority.authorize(hdr, &opts, action, object).await?;
    Ok(opts)
}

/// Exports the fixed objects; VMs, pools, templates and tasks follow the model
/// (`follow`).
pub async fn export(conn: &Connection, services: Services) -> zbus::Result<()> {
    let server = conn.object_server();
    server.at(ROOT_PATH, zbus::fdo::ObjectManager).await?;
    server
        .at(SESSIONS_PATH, Sessions::new(services.authority.clone()))
        .await?;
    server.at(MANAGER_PATH, Manager::new(services)).await?;
    Ok(())
}

/// Mirrors model changes onto the bus: objects appear and vanish with their VMs
/// (InterfacesAdded/Removed) and property changes are announced.
pub async fn follow(
    conn: Connection,
    services: Services,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let server = conn.object_server();
    let (model, tasks) = (&services.model, &services.tasks);
    while let Some(change) = changes.recv().await {
        let result = match change {
            Change::VmAdded(uuid) => server
                .at(vm_path(&uuid), Vm::new(uuid, services.clone()))
                .await
                .map(drop),
            Change::VmRemoved(uuid) => server.remove::<Vm, _>(vm_path(&uuid)).await.map(drop),
            Change::VmChanged(uuid) => vm::announce(server, &uuid).await,
            Change::PoolAdded(uuid) => server
                .at(pool_path(&uuid), StoragePool::new(uuid, model.clone()))
                .await
                .map(drop),
            Change::PoolRemoved(uuid) => server
                .remove::<StoragePool, _>(pool_path(&uuid))
                .await
                .map(drop),
            Change::PoolChanged(uuid) => storage_pool::announce(server, &uuid).await,
            Change::TaskAdded(id) => server
                .at(task_path(id), Task::new(id, tasks.clone()))
                .await
                .map(drop),
            Change::TaskEnded(id) => task::announce_end(server, tasks, id).await,
            Change::TaskRemoved(id) => server.remove::<Task, _>(task_path(id)).await.map(drop),
            Change::TemplateAdded(name) => server
                .at(
                    template_path(&name),
                    Template::new(name, services.templates.clone()),
                )
                .await
                .map(drop),
            Change::TemplateRemoved(name) => server
                .remove::<Template, _>(template_path(&name))
                .await
                .map(drop),
            Change::TemplateChanged(name) => template::announce(server, &name).await,
            Change::Host => manager::announce(server).await,
        };
        if let Err(e) = result {
            tracing::warn!("cannot mirror model change on the bus: {e}");
        }
    }
}
