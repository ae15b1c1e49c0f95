//! kimchid's core: one engine that owns the services as peers and returns contract
//! types. Every rule of the daemon lives here (what may be created, which state
//! allows which action, what a failure leaves behind), behind the `Hypervisor` seam,
//! so `cargo test` exercises them without root against `sim.rs`; the bus layer only
//! authorizes, delegates and converts.

mod claims;
mod credentials;
pub mod hypervisor;
mod in_flight;
pub mod isos;
mod journal;
pub mod model;
pub mod networks;
pub mod sessions;
#[cfg(test)]
mod sim;
mod sqlite_fchown;
pub mod storage_pools;
pub mod storage_volumes;
pub mod tasks;
pub mod templates;
#[cfg(test)]
mod tests;
pub mod vms;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::Result;
use crate::osinfo::OsDatabase;
use crate::url_check::client::UrlChecker;
use hypervisor::{Backend, HostEvent, Hypervisor};
use in_flight::InFlight;
use isos::Isos;
use journal::{Entry, Operation};
use model::{Change, Model};
use networks::Networks;
use sessions::Sessions;
use storage_pools::StoragePools;
use storage_volumes::StorageVolumes;
use tasks::Tasks;
use templates::Templates;
use vms::Vms;

/// Where the engine keeps what it keeps, and for how long sessions live.
pub struct Settings<'a> {
    pub state_dir: &'a Path,
    pub osinfo_dir: &'a Path,
    /// Where the URL check service listens (`url_check`).
    pub url_check_socket: &'a Path,
    pub session_idle: Duration,
    pub session_max: Duration,
    /// The gateway's uid, whose calls must carry a web session.
    pub gateway_uid: Option<u32>,
}

pub struct Engine {
    pub model: Arc<Model>,
    pub vms: Vms,
    pub templates: Arc<Templates>,
    pub pools: Arc<StoragePools>,
    pub volumes: StorageVolumes,
    pub networks: Networks,
    pub tasks: Arc<Tasks>,
    pub sessions: Arc<Sessions>,
}

impl Engine {
    /// The engine over `hypervisor`; what changes is announced on `changes`.
    pub fn new(
        hypervisor: Arc<dyn Hypervisor>,
        settings: Settings<'_>,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Result<Arc<Self>> {
        let backend = Backend::new(hypervisor);
        let model = Model::new(backend.clone(), changes.clone());
        let tasks = Tasks::new(changes.clone());
        let (in_flight, left) = InFlight::open(
            settings.state_dir,
            tasks.clone(),
            backend.clone(),
            model.clone(),
        )?;
        let osdb = OsDatabase::new(settings.osinfo_dir);
        let isos = Arc::new(Isos::new(backend.clone(), model.clone(), osdb.clone()));
        let pools = Arc::new(StoragePools::new(
            backend.clone(),
            model.clone(),
            isos.clone(),
        ));
        let volumes = StorageVolumes::new(
            backend.clone(),
            model.clone(),
            tasks.clone(),
            pools.clone(),
            isos.clone(),
            in_flight.clone(),
        );
        let templates = Arc::new(Templates::open(
            settings.state_dir,
            osdb,
            isos.clone(),
            UrlChecker::new(settings.url_check_socket),
            model.clone(),
            changes,
        )?);
        let networks = Networks::new(backend.clone(), model.clone());
        let vms = Vms::new(
            backend,
            model.clone(),
            tasks.clone(),
            templates.clone(),
            isos,
            pools.clone(),
            in_flight.clone(),
        );
        let sessions = Arc::new(Sessions::new(
            settings.session_idle,
            settings.session_max,
            settings.gateway_uid,
        ));
        let engine = Engine {
            model,
            vms,
            templates,
            pools,
            volumes,
            networks,
            tasks,
            sessions,
        };
        engine.resume(&in_flight, left);
        Ok(Arc::new(engine))
    }

    /// Undoes the operations a previous run left unfinished, each holding what it
    /// held then, so no request can take its names meanwhile.
    fn resume(&self, in_flight: &Arc<InFlight>, left: Vec<Entry>) {
        for entry in left {
            let volume = |pool: &str, name: &str| self.pools.claim_volume(pool, name).ok();
            match &entry.operation {
                Operation::VmCreate {
                    name,
                    pool,
                    volumes,
                    ..
                } => {
                    let disks: Vec<_> = volumes.iter().map(|v| volume(pool, v)).collect();
                    let claims = (self.vms.reserve(name, "").ok(), disks);
                    in_flight.resume(entry, claims);
                }
                Operation::VolumeCreate { pool, name }
                | Operation::VolumeWipe { pool, name, .. } => {
                    let claim = volume(pool, name);
                    in_flight.resume(entry, claim);
                }
            }
        }
    }

    /// Keeps the model current from `events` and samples guest statistics, for as
    /// long as the daemon runs.
    pub fn follow(&self, events: mpsc::UnboundedReceiver<HostEvent>) {
        tokio::spawn(self.model.clone().follow(events));
        tokio::spawn(self.model.clone().sample_stats());
    }
}
