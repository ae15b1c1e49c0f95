//! kimchid's in-memory view of the hypervisor, kept current by its events and a
//! periodic resync, so that reads never wait on libvirt round trips: guests, pools
//! (with the ISO images of the active ones), guest statistics and host facts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kimchi_dbus::{ScreenshotSupport, VmStats};
use tokio::sync::mpsc;

use super::hypervisor::{
    Backend, DomainEvent, DomainRecord, HostEvent, NetworkRecord, PoolDefinition, PoolRecord,
    VolumeRecord,
};
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
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
    NetworkAdded(String),
    NetworkRemoved(String),
    NetworkChanged(String),
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

impl Default for HostState {
    fn default() -> Self {
        HostState {
            libvirt_connected: false,
            stream_protocols: Vec::new(),
            screenshot: ScreenshotSupport::Unknown,
            kvm: false,
            memory_mib: 0,
        }
    }
}

pub struct Model {
    backend: Arc<Backend>,
    vms: RwLock<BTreeMap<String, DomainRecord>>,
    /// Each guest's UUID by name, so a read by name does not scan every guest; written
    /// under `vms`'s write lock (taken first).
    vm_uuids: RwLock<HashMap<String, String>>,
    /// Latest sample per running guest's UUID.
    stats: RwLock<HashMap<String, VmStats>>,
    pools: RwLock<BTreeMap<String, PoolRecord>>,
    /// The ISO images of each active pool (by pool name), as last listed.
    isos: RwLock<BTreeMap<String, Vec<VolumeRecord>>>,
    networks: RwLock<BTreeMap<String, NetworkRecord>>,
    host: RwLock<HostState>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Model {
    pub fn new(backend: Arc<Backend>, changes: mpsc::UnboundedSender<Change>) -> Arc<Self> {
        Arc::new(Model {
            backend,
            vms: RwLock::new(BTreeMap::new()),
            vm_uuids: RwLock::new(HashMap::new()),
            stats: RwLock::new(HashMap::new()),
            pools: RwLock::new(BTreeMap::new()),
            isos: RwLock::new(BTreeMap::new()),
            networks: RwLock::new(BTreeMap::new()),
            host: RwLock::new(HostState::default()),
            changes,
        })
    }

    pub fn libvirt_uri(&self) -> &str {
        self.backend.uri()
    }

    pub fn host(&self) -> HostState {
        self.host.read().expect("model lock poisoned").clone()
    }

    /// VMs sorted by name, case-insensitively, as Kimchi listed them.
    pub fn vms(&self) -> Vec<DomainRecord> {
        self.map_vms(DomainRecord::clone)
    }

    /// `view` of every VM, in the order of [`Model::vms`], built from the records in
    /// place rather than from copies: a listing of a thousand guests is otherwise
    /// tens of thousands of short-lived allocations. `view` runs under the model's
    /// read lock; it may read the statistics.
    pub fn map_vms<T>(&self, view: impl FnMut(&DomainRecord) -> T) -> Vec<T> {
        let vms = self.vms.read().expect("model lock poisoned");
        let mut sorted: Vec<&DomainRecord> = vms.values().collect();
        // One lowercase copy per name, not two per comparison (and comparing the
        // lowercase characters one by one, uncopied, is slower still).
        sorted.sort_by_cached_key(|r| r.name.to_lowercase());
        sorted.into_iter().map(view).collect()
    }

    pub fn vm_by_uuid(&self, uuid: &str) -> Option<DomainRecord> {
        get(&self.vms, uuid)
    }

    pub fn vm_by_name(&self, name: &str) -> Result<DomainRecord> {
        let uuid = self
            .vm_uuids
            .read()
            .expect("model lock poisoned")
            .get(name)
            .cloned();
        uuid.and_then(|uuid| get(&self.vms, &uuid))
            // Renamed between the two reads: the name is no longer this guest's.
            .filter(|v| v.name == name)
            .ok_or_else(|| Error::NotFound(format!("no VM named '{}'", excerpt(name))))
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
            match self.backend.run(|hv| hv.sample_stats()).await {
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
            .any(|v| v.disk_paths().any(|p| p == path))
    }

    /// Storage pools sorted by name.
    pub fn pools(&self) -> Vec<PoolRecord> {
        let mut pools = all(&self.pools);
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools
    }

    pub fn pool_by_uuid(&self, uuid: &str) -> Option<PoolRecord> {
        get(&self.pools, uuid)
    }

    pub fn pool_by_name(&self, name: &str) -> Result<PoolRecord> {
        find(&self.pools, |p| p.name == name)
            .ok_or_else(|| Error::NotFound(format!("no storage pool named '{}'", excerpt(name))))
    }

    /// Records a pool and its volumes as just listed: the ISO images among them make
    /// up the pool's share of the `kimchi_isos` view.
    pub fn record_volumes(&self, pool: PoolRecord, volumes: &[VolumeRecord]) {
        let isos = volumes.iter().filter(|v| v.is_iso()).cloned().collect();
        self.isos
            .write()
            .expect("model lock poisoned")
            .insert(pool.name.clone(), isos);
        self.upsert_pool(pool);
    }

    /// Records a pool as it is after its volume `name` was deleted (which leaves the
    /// `kimchi_isos` view if it was an image).
    pub fn forget_volume(&self, pool: PoolRecord, name: &str) {
        if let Some(isos) = self
            .isos
            .write()
            .expect("model lock poisoned")
            .get_mut(&pool.name)
        {
            isos.retain(|v| v.name != name);
        }
        self.upsert_pool(pool);
    }

    /// The ISO images of every active pool, as last listed, by pool and name.
    pub fn isos(&self) -> Vec<VolumeRecord> {
        self.isos
            .read()
            .expect("model lock poisoned")
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// Records a pool as libvirt just reported it (after kimchid changed it).
    pub fn upsert_pool(&self, record: PoolRecord) {
        if !record.active() {
            self.isos
                .write()
                .expect("model lock poisoned")
                .remove(&record.name);
        }
        let uuid = record.uuid.clone();
        match put(&self.pools, record) {
            Some(Put::Added) => self.announce(Change::PoolAdded(uuid)),
            Some(Put::Changed) => self.announce(Change::PoolChanged(uuid)),
            None => {}
        }
    }

    pub fn remove_pool(&self, uuid: &str) {
        let removed = self
            .pools
            .write()
            .expect("model lock poisoned")
            .remove(uuid);
        if let Some(pool) = removed {
            self.isos
                .write()
                .expect("model lock poisoned")
                .remove(&pool.name);
            let _ = self.changes.send(Change::PoolRemoved(uuid.to_owned()));
        }
    }

    /// Applies hypervisor events until the adapter stops sending them. The periodic
    /// listing of every guest runs beside them (at a thousand guests it takes longer
    /// than an event should wait); its records are applied here, in order with the
    /// events, except for guests an event told of meanwhile, whose listed record may
    /// be older than the model's.
    pub async fn follow(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<HostEvent>) {
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        let (listed_tx, mut listed_rx) = mpsc::channel(1);
        // While a listing runs: the guests events told of since it started.
        let mut listing: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        if let (Some(told), HostEvent::Domain { uuid, .. }) = (&mut listing, &event) {
                            told.insert(uuid.clone());
                        }
                        self.apply(event).await;
                    }
                    None => return,
                },
                _ = resync.tick(), if listing.is_none() => {
                    if self.host().libvirt_connected {
                        listing = Some(HashSet::new());
                        let (model, listed) = (self.clone(), listed_tx.clone());
                        tokio::spawn(async move {
                            let records = model.backend.run(|hv| hv.list_domains()).await;
                            let _ = listed.send(records).await;
                        });
                    }
                }
                Some(records) = listed_rx.recv() => {
                    let told = listing.take().unwrap_or_default();
                    match records {
                        Ok(records) => self.sync_domains(records, &told),
                        Err(e) => tracing::warn!("resync with libvirt failed: {e}"),
                    }
                    self.resync_pools_and_networks().await;
                }
            }
        }
    }

    pub async fn apply(&self, event: HostEvent) {
        match event {
            HostEvent::Connected => {
                self.set_host(|h| h.libvirt_connected = true);
                self.resync().await;
                self.ensure_default_pool().await;
                if self.host().screenshot == ScreenshotSupport::Unknown {
                    self.probe_capabilities().await;
                }
            }
            HostEvent::Disconnected(reason) => {
                let was = self.host().libvirt_connected;
                self.set_host(|h| h.libvirt_connected = false);
                if was {
                    tracing::warn!(%reason, "libvirt disconnected");
                }
                notify::status(&format!(
                    "libvirt unreachable at {} ({reason}), retrying",
                    self.backend.uri()
                ));
            }
            HostEvent::Domain { uuid, event } => {
                if self.already_known(&uuid, event) {
                    return;
                }
                let id = uuid.clone();
                match self.backend.run(move |hv| hv.domain(&id)).await {
                    Ok(Some(record)) => self.upsert(record),
                    Ok(None) => self.remove(&uuid),
                    Err(e) => tracing::warn!(%uuid, "cannot re-read domain after event: {e}"),
                }
            }
            HostEvent::Pool { uuid } => {
                let id = uuid.clone();
                match self.backend.run(move |hv| hv.pool(&id)).await {
                    Ok(Some(record)) => {
                        let was_active = self.pool_by_uuid(&uuid).is_some_and(|p| p.active());
                        let started = (record.active() && !was_active).then(|| record.name.clone());
                        self.upsert_pool(record);
                        // Started outside kimchid: its images join the ISO view.
                        if let Some(name) = started {
                            self.relist(name).await;
                        }
                    }
                    Ok(None) => self.remove_pool(&uuid),
                    Err(e) => tracing::warn!(%uuid, "cannot re-read pool after event: {e}"),
                }
            }
            HostEvent::Network { uuid } => {
                let id = uuid.clone();
                match self.backend.run(move |hv| hv.network(&id)).await {
                    Ok(Some(record)) => self.upsert_network(record),
                    Ok(None) => self.remove_network(&uuid),
                    Err(e) => tracing::warn!(%uuid, "cannot re-read network after event: {e}"),
                }
            }
        }
    }

    /// Whether the model shows what the event says already: kimchid made the change
    /// and recorded the domain as libvirt reported it then, so re-reading is waste.
    fn already_known(&self, uuid: &str, event: DomainEvent) -> bool {
        let vms = self.vms.read().expect("model lock poisoned");
        match (event, vms.get(uuid)) {
            (DomainEvent::Became(state), Some(vm)) => vm.state == state,
            (DomainEvent::Undefined, None) => true,
            _ => false,
        }
    }

    /// Everything read again from libvirt (after connecting).
    async fn resync(&self) {
        match self.backend.run(|hv| hv.list_domains()).await {
            Ok(records) => self.sync_domains(records, &HashSet::new()),
            Err(e) => {
                tracing::warn!("resync with libvirt failed: {e}");
                return;
            }
        }
        self.resync_pools_and_networks().await;
    }

    /// Makes the guests those listed, but for the guests in `newer` (the model's
    /// record of them came after the listing began).
    pub(super) fn sync_domains(&self, records: Vec<DomainRecord>, newer: &HashSet<String>) {
        let listed: HashSet<&str> = records.iter().map(|r| r.uuid.as_str()).collect();
        let gone: Vec<String> = {
            let vms = self.vms.read().expect("model lock poisoned");
            vms.keys()
                .filter(|uuid| !listed.contains(uuid.as_str()) && !newer.contains(*uuid))
                .cloned()
                .collect()
        };
        for uuid in gone {
            self.remove(&uuid);
        }
        for record in records {
            if !newer.contains(&record.uuid) {
                self.upsert(record);
            }
        }
    }

    async fn resync_pools_and_networks(&self) {
        match self.backend.run(|hv| hv.list_pools()).await {
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
                    let active = pool.active().then(|| pool.name.clone());
                    self.upsert_pool(pool);
                    if let Some(name) = active {
                        self.relist(name).await;
                    }
                }
            }
            Err(e) => tracing::warn!("resync of storage pools failed: {e}"),
        }
        match self.backend.run(|hv| hv.list_networks()).await {
            Ok(networks) => {
                let gone: Vec<String> = self
                    .networks()
                    .into_iter()
                    .filter(|old| !networks.iter().any(|n| n.uuid == old.uuid))
                    .map(|n| n.uuid)
                    .collect();
                for uuid in gone {
                    self.remove_network(&uuid);
                }
                for network in networks {
                    self.upsert_network(network);
                }
            }
            Err(e) => tracing::warn!("resync of networks failed: {e}"),
        }
        self.report_status();
    }

    /// Re-reads an active pool's volumes in the background of a resync (images copied
    /// in by hand appear in `kimchi_isos`).
    async fn relist(&self, pool: String) {
        let name = pool.clone();
        match self.backend.run(move |hv| hv.pool_volumes(&name)).await {
            Ok((record, volumes)) => self.record_volumes(record, &volumes),
            // Stopped or removed since it was listed: its own event follows.
            Err(Error::InvalidState(_) | Error::NotFound(_)) => {}
            Err(e) => tracing::warn!(%pool, "cannot list the pool's volumes: {e}"),
        }
    }

    /// Kimchi promises a `default` pool: define (at libvirt's usual image directory),
    /// build and start it when it is missing or stopped.
    async fn ensure_default_pool(&self) {
        let result = self
            .backend
            .run(|hv| {
                let pool = match hv.pool_by_name(DEFAULT_POOL) {
                    Ok(p) => p,
                    Err(Error::NotFound(_)) => hv.define_pool(&PoolDefinition::Dir {
                        name: DEFAULT_POOL.into(),
                        path: DEFAULT_POOL_PATH.into(),
                    })?,
                    Err(e) => return Err(e),
                };
                if !pool.active() {
                    hv.activate_pool(DEFAULT_POOL)?;
                }
                hv.pool_volumes(DEFAULT_POOL)
            })
            .await;
        match result {
            Ok((pool, volumes)) => self.record_volumes(pool, &volumes),
            Err(e) => tracing::error!("cannot provide the default storage pool: {e}"),
        }
    }

    async fn probe_capabilities(&self) {
        match self.backend.run(|hv| hv.probe_capabilities()).await {
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
        let (change, old) = {
            let mut vms = self.vms.write().expect("model lock poisoned");
            let mut uuids = self.vm_uuids.write().expect("model lock poisoned");
            let renamed = vms.get(&record.uuid).map(|old| &old.name) != Some(&record.name);
            if renamed {
                if let Some(old) = vms.get(&record.uuid) {
                    if uuids.get(&old.name) == Some(&record.uuid) {
                        uuids.remove(&old.name);
                    }
                }
                uuids.insert(record.name.clone(), record.uuid.clone());
            }
            match vms.insert(record.uuid.clone(), record.clone()) {
                None => (Some(Change::VmAdded(record.uuid.clone())), None),
                Some(old) if old != record => {
                    (Some(Change::VmChanged(record.uuid.clone())), Some(old))
                }
                Some(_) => (None, None),
            }
        };
        if let Some(change) = change {
            let added = matches!(change, Change::VmAdded(_));
            let _ = self.changes.send(change);
            let before = old.map(|o| o.networks()).unwrap_or_default();
            let after = record.networks();
            if before != after {
                self.networks_used_by(&before);
                self.networks_used_by(&after);
            }
            if added {
                self.report_status();
            }
        }
    }

    pub fn remove(&self, uuid: &str) {
        let removed = {
            let mut vms = self.vms.write().expect("model lock poisoned");
            let removed = vms.remove(uuid);
            if let Some(vm) = &removed {
                let mut uuids = self.vm_uuids.write().expect("model lock poisoned");
                if uuids.get(&vm.name).is_some_and(|u| u == uuid) {
                    uuids.remove(&vm.name);
                }
            }
            removed
        };
        if let Some(vm) = removed {
            let _ = self.changes.send(Change::VmRemoved(uuid.to_owned()));
            self.networks_used_by(&vm.networks());
            self.report_status();
        }
    }

    /// Announces the networks `names` (their guests changed).
    fn networks_used_by(&self, names: &[String]) {
        for network in self.networks() {
            if names.contains(&network.name) {
                let _ = self.changes.send(Change::NetworkChanged(network.uuid));
            }
        }
    }

    /// Virtual networks by name.
    pub fn networks(&self) -> Vec<NetworkRecord> {
        let mut networks = all(&self.networks);
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        networks
    }

    pub fn network_by_uuid(&self, uuid: &str) -> Option<NetworkRecord> {
        get(&self.networks, uuid)
    }

    pub fn network_by_name(&self, name: &str) -> Result<NetworkRecord> {
        find(&self.networks, |n| n.name == name)
            .ok_or_else(|| Error::NotFound(format!("no network named '{}'", excerpt(name))))
    }

    /// The names of the guests with a NIC on the network `name`, sorted.
    pub fn vms_on_network(&self, name: &str) -> Vec<String> {
        let mut vms: Vec<String> = self
            .vms
            .read()
            .expect("model lock poisoned")
            .values()
            .filter(|v| v.nics.iter().any(|n| n.network == name))
            .map(|v| v.name.clone())
            .collect();
        vms.sort();
        vms
    }

    /// Records a network as libvirt just reported it.
    pub fn upsert_network(&self, record: NetworkRecord) {
        let uuid = record.uuid.clone();
        match put(&self.networks, record) {
            Some(Put::Added) => self.announce(Change::NetworkAdded(uuid)),
            Some(Put::Changed) => self.announce(Change::NetworkChanged(uuid)),
            None => {}
        }
    }

    pub fn remove_network(&self, uuid: &str) {
        let removed = self
            .networks
            .write()
            .expect("model lock poisoned")
            .remove(uuid);
        if removed.is_some() {
            self.announce(Change::NetworkRemoved(uuid.to_owned()));
        }
    }

    fn announce(&self, change: Change) {
        let _ = self.changes.send(change);
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
                self.backend.uri()
            ));
        }
    }
}

fn get<T: Clone>(map: &RwLock<BTreeMap<String, T>>, uuid: &str) -> Option<T> {
    map.read().expect("model lock poisoned").get(uuid).cloned()
}

fn all<T: Clone>(map: &RwLock<BTreeMap<String, T>>) -> Vec<T> {
    map.read()
        .expect("model lock poisoned")
        .values()
        .cloned()
        .collect()
}

/// The first record of `map` that `matches`.
fn find<T: Clone>(map: &RwLock<BTreeMap<String, T>>, matches: impl Fn(&T) -> bool) -> Option<T> {
    map.read()
        .expect("model lock poisoned")
        .values()
        .find(|r| matches(r))
        .cloned()
}

/// What storing a record did.
enum Put {
    Added,
    Changed,
}

/// Stores `record` under its UUID; `None` when the model had it exactly so.
fn put<T: Keyed + PartialEq>(map: &RwLock<BTreeMap<String, T>>, record: T) -> Option<Put> {
    let uuid = record.uuid().to_owned();
    let mut map = map.write().expect("model lock poisoned");
    match map.get(&uuid) {
        Some(old) if *old == record => None,
        Some(_) => {
            map.insert(uuid, record);
            Some(Put::Changed)
        }
        None => {
            map.insert(uuid, record);
            Some(Put::Added)
        }
    }
}

/// A record kept by UUID.
trait Keyed {
    fn uuid(&self) -> &str;
}

impl Keyed for PoolRecord {
    fn uuid(&self) -> &str {
        &self.uuid
    }
}

impl Keyed for NetworkRecord {
    fn uuid(&self) -> &str {
        &self.uuid
    }
}
