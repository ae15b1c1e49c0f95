//! kimchid's in-memory view of libvirt, kept current by libvirt events and a periodic
//! resync, so that reads never wait on libvirt round trips.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kimchi_dbus::{ScreenshotSupport, VmStats};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::libvirt::storage;
use crate::libvirt::{DomainRecord, Libvirt, LibvirtEvent, PoolDefinition, PoolRecord};
use crate::notify;
use crate::stats::Sampler;

/// Catches anything an event could have missed (events are lost while reconnecting).
const RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// How often the statistics of all running guests are sampled (one libvirt call).
const STATS_INTERVAL: Duration = Duration::from_secs(5);

pub const DEFAULT_POOL: &str = "default";
const DEFAULT_POOL_PATH: &str = "/var/lib/libvirt/images";

/// What changed, for the bus layer to export or announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    VmAdded(String),
    VmRemoved(String),
    VmChanged(String),
    PoolAdded(String),
    PoolRemoved(String),
    PoolChanged(String),
    TaskAdded(u32),
    TaskEnded(u32),
    TaskRemoved(u32),
    TemplateAdded(String),
    TemplateRemoved(String),
    TemplateChanged(String),
    Host,
}

#[derive(Debug, Clone)]
pub struct HostState {
    pub libvirt_connected: bool,
    pub stream_protocols: Vec<String>,
    pub screenshot: ScreenshotSupport,
    /// Guests can use hardware virtualization (KVM) rather than emulation.
    pub kvm: bool,
    /// The host's memory in MiB; 0 until probed.
    pub memory_mib: u64,
}

pub struct Model {
    libvirt: Arc<Libvirt>,
    vms: RwLock<BTreeMap<String, DomainRecord>>,
    /// Latest sample per running guest's UUID.
    stats: RwLock<HashMap<String, VmStats>>,
    pools: RwLock<BTreeMap<String, PoolRecord>>,
    host: RwLock<HostState>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Model {
    pub fn new(libvirt: Arc<Libvirt>, changes: mpsc::UnboundedSender<Change>) -> Arc<Self> {
        Arc::new(Model {
            libvirt,
            vms: RwLock::new(BTreeMap::new()),
            stats: RwLock::new(HashMap::new()),
            pools: RwLock::new(BTreeMap::new()),
            host: RwLock::new(HostState {
                libvirt_connected: false,
                stream_protocols: Vec::new(),
                screenshot: ScreenshotSupport::Unknown,
                kvm: false,
                memory_mib: 0,
            }),
            changes,
        })
    }

    pub fn libvirt_uri(&self) -> &str {
        self.libvirt.uri()
    }

    pub fn host(&self) -> HostState {
        self.host.read().expect("model lock poisoned").clone()
    }

    /// VMs sorted by name, case-insensitively, as Kimchi listed them.
    pub fn vms(&self) -> Vec<DomainRecord> {
        let mut vms: Vec<DomainRecord> = self
            .vms
            .read()
            .expect("model lock poisoned")
            .values()
            .cloned()
            .collect();
        vms.sort_by_key(|v| v.name.to_lowercase());
        vms
    }

    pub fn vm_by_uuid(&self, uuid: &str) -> Option<DomainRecord> {
        self.vms
            .read()
            .expect("model lock poisoned")
            .get(uuid)
            .cloned()
    }

    pub fn vm_by_name(&self, name: &str) -> Result<DomainRecord> {
        self.vms
            .read()
            .expect("model lock poisoned")
            .values()
            .find(|v| v.name == name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no VM named '{name}'")))
    }

    /// The guest's latest statistics; defaults when it is not running.
    pub fn vm_stats(&self, uuid: &str) -> VmStats {
        self.stats
            .read()
            .expect("model lock poisoned")
            .get(uuid)
            .copied()
            .unwrap_or_default()
    }

    /// Samples every running guest's counters in one libvirt call every few seconds.
    pub async fn sample_stats(self: Arc<Self>) {
        let mut sampler = Sampler::new();
        let mut tick = tokio::time::interval(STATS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.host().libvirt_connected {
                continue;
            }
            match self.libvirt.sample_stats().await {
                Ok(counters) => {
                    let stats = sampler.update(Instant::now(), &counters);
                    *self.stats.write().expect("model lock poisoned") = stats;
                }
                Err(e) => tracing::debug!("statistics sample failed: {e}"),
            }
        }
    }

    /// Whether any guest uses the file or device at `path` as a disk.
    pub fn path_in_use(&self, path: &str) -> bool {
        self.vms
            .read()
            .expect("model lock poisoned")
            .values()
            .any(|v| v.disk_paths.iter().any(|p| p == path))
    }

    /// Storage pools sorted by name.
    pub fn pools(&self) -> Vec<PoolRecord> {
        let mut pools: Vec<PoolRecord> = self
            .pools
            .read()
            .expect("model lock poisoned")
            .values()
            .cloned()
            .collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools
    }

    pub fn pool_by_uuid(&self, uuid: &str) -> Option<PoolRecord> {
        self.pools
            .read()
            .expect("model lock poisoned")
            .get(uuid)
            .cloned()
    }

    pub fn pool_by_name(&self, name: &str) -> Result<PoolRecord> {
        self.pools
            .read()
            .expect("model lock poisoned")
            .values()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no storage pool named '{name}'")))
    }

    /// Records a pool as libvirt just reported it (after kimchid changed it).
    pub fn upsert_pool(&self, record: PoolRecord) {
        let uuid = record.uuid.clone();
        let change = match self
            .pools
            .write()
            .expect("model lock poisoned")
            .insert(uuid.clone(), record.clone())
        {
            None => Some(Change::PoolAdded(uuid)),
            Some(old) if old != record => Some(Change::PoolChanged(uuid)),
            Some(_) => None,
        };
        if let Some(change) = change {
            let _ = self.changes.send(change);
        }
    }

    pub fn remove_pool(&self, uuid: &str) {
        if self
            .pools
            .write()
            .expect("model lock poisoned")
            .remove(uuid)
            .is_some()
        {
            let _ = self.changes.send(Change::PoolRemoved(uuid.to_owned()));
        }
    }

    /// Applies libvirt events until the libvirt adapter stops sending them.
    pub async fn follow(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<LibvirtEvent>) {
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.apply(event).await,
                    None => return,
                },
                _ = resync.tick() => {
                    if self.host().libvirt_connected {
                        self.resync().await;
                    }
                }
            }
        }
    }

    async fn apply(&self, event: LibvirtEvent) {
        match event {
            LibvirtEvent::Connected => {
                self.set_host(|h| h.libvirt_connected = true);
                self.resync().await;
                self.ensure_default_pool().await;
                if self.host().screenshot == ScreenshotSupport::Unknown {
                    self.probe_capabilities().await;
                }
            }
            LibvirtEvent::Disconnected(reason) => {
                let was = self.host().libvirt_connected;
                self.set_host(|h| h.libvirt_connected = false);
                if was {
                    tracing::warn!(%reason, "libvirt disconnected");
                }
                notify::status(&format!(
                    "libvirt unreachable at {} ({reason}), retrying",
                    self.libvirt.uri()
                ));
            }
            LibvirtEvent::DomainChanged { uuid } => match self.libvirt.domain(uuid.clone()).await {
                Ok(Some(record)) => self.upsert(record),
                Ok(None) => self.remove(&uuid),
                Err(e) => tracing::warn!(%uuid, "cannot re-read domain after event: {e}"),
            },
            LibvirtEvent::PoolChanged { uuid } => match self.libvirt.pool(uuid.clone()).await {
                Ok(Some(record)) => self.upsert_pool(record),
                Ok(None) => self.remove_pool(&uuid),
                Err(e) => tracing::warn!(%uuid, "cannot re-read pool after event: {e}"),
            },
        }
    }

    async fn resync(&self) {
        let records = match self.libvirt.list_domains().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("resync with libvirt failed: {e}");
                return;
            }
        };
        let gone: Vec<String> = {
            let vms = self.vms.read().expect("model lock poisoned");
            vms.keys()
                .filter(|uuid| !records.iter().any(|r| &r.uuid == *uuid))
                .cloned()
                .collect()
        };
        for uuid in gone {
            self.remove(&uuid);
        }
        for record in records {
            self.upsert(record);
        }
        match self.libvirt.list_pools().await {
            Ok(pools) => {
                let gone: Vec<String> = self
                    .pools()
                    .into_iter()
                    .filter(|old| !pools.iter().any(|p| p.uuid == old.uuid))
                    .map(|p| p.uuid)
                    .collect();
                for uuid in gone {
                    self.remove_pool(&uuid);
                }
                for pool in pools {
                    self.upsert_pool(pool);
                }
            }
            Err(e) => tracing::warn!("resync of storage pools failed: {e}"),
        }
        self.report_status();
    }

    /// Kimchi promises a `default` pool: define (at libvirt's usual image directory),
    /// build and start it when it is missing or stopped.
    async fn ensure_default_pool(&self) {
        let result = self
            .libvirt
            .call(|c| {
                let pool = match storage::pool_by_name(c, DEFAULT_POOL) {
                    Ok(p) => p,
                    Err(Error::NotFound(_)) => storage::define_pool(
                        c,
                        &PoolDefinition::Dir {
                            name: DEFAULT_POOL.into(),
                            path: DEFAULT_POOL_PATH.into(),
                        },
                    )?,
                    Err(e) => return Err(e),
                };
                if pool.active() {
                    Ok(pool)
                } else {
                    storage::activate_pool(c, DEFAULT_POOL)
                }
            })
            .await;
        match result {
            Ok(pool) => self.upsert_pool(pool),
            Err(e) => tracing::error!("cannot provide the default storage pool: {e}"),
        }
    }

    async fn probe_capabilities(&self) {
        match self.libvirt.probe_capabilities().await {
            Ok(caps) => {
                tracing::info!(?caps, "host capabilities probed");
                self.set_host(|h| {
                    h.stream_protocols = caps.stream_protocols;
                    h.kvm = caps.kvm;
                    h.memory_mib = caps.memory_mib;
                    h.screenshot = if caps.screenshot {
                        ScreenshotSupport::Yes
                    } else {
                        ScreenshotSupport::No
                    };
                });
            }
            Err(e) => tracing::warn!("capability probe failed, will retry on reconnect: {e}"),
        }
    }

    /// Records a guest as libvirt just reported it (after kimchid changed it), so the
    /// caller's next read sees the change without waiting for the event.
    pub fn upsert(&self, record: DomainRecord) {
        let change = {
            let mut vms = self.vms.write().expect("model lock poisoned");
            match vms.insert(record.uuid.clone(), record.clone()) {
                None => Some(Change::VmAdded(record.uuid)),
                Some(old) if old != record => Some(Change::VmChanged(record.uuid)),
                Some(_) => None,
            }
        };
        if let Some(change) = change {
            let added = matches!(change, Change::VmAdded(_));
            let _ = self.changes.send(change);
            if added {
                self.report_status();
            }
        }
    }

    pub fn remove(&self, uuid: &str) {
        let removed = self.vms.write().expect("model lock poisoned").remove(uuid);
        if removed.is_some() {
            let _ = self.changes.send(Change::VmRemoved(uuid.to_owned()));
            self.report_status();
        }
    }

    fn set_host(&self, f: impl FnOnce(&mut HostState)) {
        f(&mut self.host.write().expect("model lock poisoned"));
        let _ = self.changes.send(Change::Host);
    }

    fn report_status(&self) {
        if self.host().libvirt_connected {
            let vms = self.vms.read().expect("model lock poisoned").len();
            let pools = self.pools.read().expect("model lock poisoned").len();
            notify::status(&format!(
                "libvirt: connected ({}), {vms} VMs, {pools} storage pools",
                self.libvirt.uri()
            ));
        }
    }
}
