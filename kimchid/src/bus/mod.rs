//! The D-Bus face of kimchid: objects that parse arguments, ask the authority, and
//! delegate to the model. No logic of their own.

mod manager;
mod sessions;
mod vm;

use std::collections::HashMap;
use std::sync::Arc;

use kimchi_dbus::{
    vm_path, CallOptions, Error as BusError, MANAGER_PATH, ROOT_PATH, SESSIONS_PATH,
};
use tokio::sync::mpsc;
use zbus::message::Header;
use zbus::{Connection, OwnedVariant};

use crate::authority::{Action, Authority, Caller};
use crate::model::{Change, Model};

pub use manager::Manager;
pub use sessions::Sessions;
pub use vm::Vm;

type Options = HashMap<String, OwnedVariant>;

/// Parses the options and asks the authority: the first thing every method does.
async fn authorize(
    authority: &Authority,
    hdr: &Header<'_>,
    options: &Options,
    action: Action,
    object: Option<(&str, &str)>,
) -> Result<Caller, BusError> {
    let opts = CallOptions::from_dict(options)?;
    if let Some(id) = &opts.request_id {
        tracing::debug!(request_id = %id, action = action.id(), "authorizing");
    }
    Ok(authority.authorize(hdr, &opts, action, object).await?)
}

/// Exports the object tree (ObjectManager, Manager, Sessions, one object per VM).
pub async fn export(
    conn: &Connection,
    model: Arc<Model>,
    authority: Arc<Authority>,
) -> zbus::Result<()> {
    let server = conn.object_server();
    server.at(ROOT_PATH, zbus::fdo::ObjectManager).await?;
    server
        .at(MANAGER_PATH, Manager::new(model.clone(), authority.clone()))
        .await?;
    server.at(SESSIONS_PATH, Sessions::new(authority)).await?;
    for record in model.vms() {
        server
            .at(vm_path(&record.uuid), Vm::new(record.uuid, model.clone()))
            .await?;
    }
    Ok(())
}

/// Mirrors model changes onto the bus: objects appear and vanish with their VMs
/// (InterfacesAdded/Removed) and property changes are announced.
pub async fn follow(
    conn: Connection,
    model: Arc<Model>,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let server = conn.object_server();
    while let Some(change) = changes.recv().await {
        let result = match change {
            Change::VmAdded(uuid) => server
                .at(vm_path(&uuid), Vm::new(uuid, model.clone()))
                .await
                .map(drop),
            Change::VmRemoved(uuid) => server.remove::<Vm, _>(vm_path(&uuid)).await.map(drop),
            Change::VmChanged(uuid) => vm::announce(server, &uuid).await,
            Change::Host => manager::announce(server).await,
        };
        if let Err(e) = result {
            tracing::warn!("cannot mirror model change on the bus: {e}");
        }
    }
}
