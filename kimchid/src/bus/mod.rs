//! The D-Bus face of kimchid: objects that parse arguments, pass the guard (one
//! access table, `guard.rs`), delegate to the engine and convert. No rules of their
//! own.

mod gateway_link;
mod guard;
mod manager;
mod network;
mod sessions;
mod storage_pool;
mod task;
mod template;
mod vm;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use kimchi_dbus::{
    network_path, pool_path, task_path, template_path, vm_path, MANAGER_PATH, ROOT_PATH,
    SESSIONS_PATH,
};
use tokio::sync::mpsc;
use zbus::object_server::{Interface, ObjectServer};
use zbus::{Connection, OwnedVariant, Variant};

use crate::authority::Authority;
use crate::engine::model::Change;
use crate::engine::Engine;

use guard::Guard;
use manager::Manager;
use network::Network;
use sessions::Sessions;
use storage_pool::StoragePool;
use task::Task;
use template::Template;
use vm::Vm;

type Options = HashMap<String, OwnedVariant>;

/// The bus side of the daemon: the engine and the guard every method passes.
#[derive(Clone)]
pub struct Bus {
    engine: Arc<Engine>,
    guard: Arc<Guard>,
}

impl Bus {
    pub fn new(engine: Arc<Engine>, authority: Arc<Authority>) -> Self {
        Bus {
            engine,
            guard: Arc::new(Guard::new(authority)),
        }
    }

    /// Exports the fixed objects; VMs, pools, templates and tasks follow the engine
    /// (`follow`).
    pub async fn export(&self, conn: &Connection) -> zbus::Result<()> {
        let server = conn.object_server();
        server.at(ROOT_PATH, zbus::fdo::ObjectManager).await?;
        let sessions = Sessions::new(self.engine.sessions.clone(), self.guard.clone());
        server.at(SESSIONS_PATH, sessions).await?;
        let manager = Manager::new(self.engine.clone(), self.guard.clone());
        server.at(MANAGER_PATH, manager).await?;
        Ok(())
    }

    /// Mirrors engine changes onto the bus: objects appear and vanish with what they
    /// stand for (InterfacesAdded/Removed) and property changes are announced.
    pub async fn follow(self, conn: Connection, mut changes: mpsc::UnboundedReceiver<Change>) {
        let server = conn.object_server();
        let engine = &self.engine;
        while let Some(change) = changes.recv().await {
            let result = match change {
                Change::VmAdded(uuid) => {
                    let vm = Vm::new(uuid.clone(), engine.clone(), self.guard.clone());
                    add(server, vm_path(&uuid), vm).await
                }
                Change::VmRemoved(uuid) => remove::<Vm>(server, vm_path(&uuid)).await,
                Change::VmChanged(uuid) => {
                    announce::<Vm>(server, &vm_path(&uuid), vm::ANNOUNCED).await
                }
                Change::PoolAdded(uuid) => {
                    let pool = StoragePool::new(uuid.clone(), engine.model.clone());
                    add(server, pool_path(&uuid), pool).await
                }
                Change::PoolRemoved(uuid) => remove::<StoragePool>(server, pool_path(&uuid)).await,
                Change::PoolChanged(uuid) => {
                    let path = pool_path(&uuid);
                    announce::<StoragePool>(server, &path, storage_pool::ANNOUNCED).await
                }
                Change::NetworkAdded(uuid) => {
                    let network = Network::new(uuid.clone(), engine.clone());
                    add(server, network_path(&uuid), network).await
                }
                Change::NetworkRemoved(uuid) => {
                    remove::<Network>(server, network_path(&uuid)).await
                }
                Change::NetworkChanged(uuid) => {
                    let path = network_path(&uuid);
                    announce::<Network>(server, &path, network::ANNOUNCED).await
                }
                Change::TaskAdded(id) => {
                    add(server, task_path(id), Task::new(id, engine.tasks.clone())).await
                }
                Change::TaskEnded(id) => {
                    match announce::<Task>(server, &task_path(id), task::ANNOUNCED).await {
                        Ok(()) => task::complete(server, &engine.tasks, id).await,
                        Err(e) => Err(e),
                    }
                }
                Change::TaskRemoved(id) => remove::<Task>(server, task_path(id)).await,
                Change::TemplateAdded(name) => {
                    let template = Template::new(name.clone(), engine.templates.clone());
                    add(server, template_path(&name), template).await
                }
                Change::TemplateRemoved(name) => {
                    remove::<Template>(server, template_path(&name)).await
                }
                Change::TemplateChanged(name) => {
                    let path = template_path(&name);
                    announce::<Template>(server, &path, template::ANNOUNCED).await
                }
                Change::Host => announce::<Manager>(server, MANAGER_PATH, manager::ANNOUNCED).await,
            };
            if let Err(e) = result {
                tracing::warn!("cannot mirror an engine change on the bus: {e}");
            }
        }
    }
}

async fn add<I: Interface>(server: &ObjectServer, path: String, object: I) -> zbus::Result<()> {
    server.at(path, object).await.map(drop)
}

async fn remove<I: Interface>(server: &ObjectServer, path: String) -> zbus::Result<()> {
    server.remove::<I, _>(path).await.map(drop)
}

/// Tells the bus the current values of `properties` of the `I` at `path`, in one
/// `PropertiesChanged` signal; the values come from the object's own getters.
async fn announce<I: Interface>(
    server: &ObjectServer,
    path: &str,
    properties: &[&str],
) -> zbus::Result<()> {
    let iface = server.interface::<_, I>(path).await?;
    let emitter = iface.signal_emitter();
    let object = iface.get().await;
    let mut changed: HashMap<&str, Variant<'_>> = HashMap::new();
    for &name in properties {
        match object
            .get(name, server, emitter.connection(), None, emitter)
            .await
        {
            Some(Ok(value)) => {
                changed.insert(name, Variant::from(value));
            }
            Some(Err(e)) => tracing::warn!(path, name, "cannot read property to announce: {e}"),
            None => tracing::error!(path, name, "announced property does not exist"),
        }
    }
    zbus::fdo::Properties::properties_changed(emitter, I::name(), changed, Cow::Borrowed(&[])).await
}
