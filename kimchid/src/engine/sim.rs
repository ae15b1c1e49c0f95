//! A simulated hypervisor for the engine's tests: guests, pools and volumes in
//! memory, answering as libvirt does (the same error kinds for the same mistakes),
//! with a log of the calls made and failures that a test can inject.
//!
//! Chosen over libvirt's `test:///default` driver for the engine's rules: that driver
//! refuses `kvm`/`qemu` guests, cannot open consoles, and cannot be made to fail at
//! a chosen step, which is what rollback decisions need. The libvirt adapter keeps
//! its own tests on the test driver.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use kimchi_dbus::{PoolState, VmState, VolumeSpec, MIB};

use super::hypervisor::{
    Apply, Cdrom, DomainChange, DomainCounters, DomainRecord, Drive, DriveKind, Forward,
    GuestDefinition, HostCapabilities, HostInterface, Hypervisor, NetworkAddress,
    NetworkDefinition, NetworkRecord, Nic, NicDefinition, PoolDefinition, PoolRecord, PoolSource,
    Power, VolumeRecord,
};
use crate::error::{Error, Result};

/// The size of every active sim pool.
pub const SIM_POOL_BYTES: u64 = 100 << 30;

/// A one-pixel PNG: what the simulated guests' screens show.
pub const SCREEN: &[u8] = b"\x89PNG\r\n\x1a\nsimulated";

pub struct Sim {
    state: Mutex<State>,
}

struct State {
    domains: BTreeMap<String, DomainRecord>,
    pools: BTreeMap<String, SimPool>,
    networks: BTreeMap<String, NetworkRecord>,
    interfaces: Vec<HostInterface>,
    routes: Vec<String>,
    capabilities: HostCapabilities,
    next_uuid: u32,
    calls: Vec<&'static str>,
    failures: HashMap<&'static str, Error>,
    /// Calls that wait for the test before they run.
    holds: HashMap<&'static str, HeldCall>,
    /// Guests that ignore the ACPI power button.
    deaf: Vec<String>,
}

struct HeldCall {
    arrived: tokio::sync::oneshot::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

/// A call `Sim::hold_next` holds: it runs once this is dropped.
pub struct Hold {
    arrived: Option<tokio::sync::oneshot::Receiver<()>>,
    _release: std::sync::mpsc::Sender<()>,
}

impl Hold {
    /// Waits until the held call has been made.
    pub async fn arrived(&mut self) {
        if let Some(arrived) = self.arrived.take() {
            arrived.await.expect("the held call is made");
        }
    }
}

struct SimPool {
    record: PoolRecord,
    volumes: BTreeMap<String, VolumeRecord>,
}

impl Sim {
    /// A host with an active `default` pool at `/sim/default`, the `default` network,
    /// KVM and 8 GiB of memory.
    pub fn new() -> Arc<Self> {
        let sim = Sim {
            state: Mutex::new(State {
                domains: BTreeMap::new(),
                pools: BTreeMap::new(),
                networks: BTreeMap::new(),
                interfaces: vec![
                    host_interface("eth0", "nic", "10.0.2.15", "e1000"),
                    host_interface("br0", "bridge", "", ""),
                    host_interface("bond0", "bond", "", "bonding"),
                ],
                routes: vec!["10.0.2.0/24".into()],
                capabilities: HostCapabilities {
                    stream_protocols: vec!["http".into(), "https".into()],
                    screenshot: true,
                    kvm: true,
                    memory_mib: 8192,
                },
                next_uuid: 1,
                calls: Vec::new(),
                failures: HashMap::new(),
                holds: HashMap::new(),
                deaf: Vec::new(),
            }),
        };
        sim.add_pool("default", "dir", true);
        sim.add_network("default", "192.168.122.0/24", true);
        Arc::new(sim)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim lock poisoned")
    }

    /// Records the call and answers with the failure injected for it, if any; a held
    /// call first waits for its release.
    fn enter(&self, method: &'static str) -> Result<MutexGuard<'_, State>> {
        let held = self.lock().holds.remove(method);
        if let Some(held) = held {
            let _ = held.arrived.send(());
            let _ = held.release.recv();
        }
        let mut state = self.lock();
        state.calls.push(method);
        match state.failures.remove(method) {
            Some(e) => Err(e),
            None => Ok(state),
        }
    }

    /// The next call of `method` fails with `error`.
    pub fn fail_next(&self, method: &'static str, error: Error) {
        self.lock().failures.insert(method, error);
    }

    /// The next call of `method` waits until the returned `Hold` is released (or
    /// dropped), so a test can act while that call is under way.
    pub fn hold_next(&self, method: &'static str) -> Hold {
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let held = HeldCall {
            arrived: arrived_tx,
            release: release_rx,
        };
        self.lock().holds.insert(method, held);
        Hold {
            arrived: Some(arrived),
            _release: release,
        }
    }

    /// How often `method` was called.
    pub fn calls(&self, method: &str) -> usize {
        self.lock().calls.iter().filter(|m| **m == method).count()
    }

    /// A pool defined behind the engine's back (as `virsh pool-define` would).
    pub fn add_pool(&self, name: &str, pool_type: &str, active: bool) -> String {
        self.lock().insert_pool(
            name,
            pool_type,
            format!("/sim/{name}"),
            PoolSource::default(),
            active,
        )
    }

    /// A nat network defined behind the engine's back (as `virsh net-define` would),
    /// on `subnet` (`a.b.c.0/p`).
    pub fn add_network(&self, name: &str, subnet: &str, active: bool) -> String {
        let (network, prefix) = subnet.split_once('/').expect("a.b.c.d/p");
        let network: std::net::Ipv4Addr = network.parse().expect("an IPv4 network");
        let first = u32::from(network) + 1;
        let address = NetworkAddress {
            gateway: first.into(),
            prefix: prefix.parse().expect("a prefix"),
            dhcp: Some(((first + 1).into(), (first + 2).into())),
        };
        let def = NetworkDefinition {
            name: name.into(),
            uuid: None,
            forward: Forward::Nat,
            address: Some(address),
        };
        let uuid = self.define_network(&def).expect("a new sim network").uuid;
        if active {
            self.activate_network(name)
                .expect("an inactive sim network");
        }
        uuid
    }

    /// A file appearing in a pool (copied in by hand).
    pub fn add_volume(&self, pool: &str, name: &str, format: &str, capacity_mib: u64) {
        let mut state = self.lock();
        let pool = state.pools.get_mut(pool).expect("no such sim pool");
        let vol = volume(&pool.record, name, format, capacity_mib);
        pool.volumes.insert(name.into(), vol);
    }

    /// A directory made in a pool by hand: libvirt lists it as a volume of type `dir`.
    pub fn add_dir(&self, pool: &str, name: &str) {
        let mut state = self.lock();
        let pool = state.pools.get_mut(pool).expect("no such sim pool");
        let dir = VolumeRecord {
            kind: "dir",
            format: "dir".into(),
            ..volume(&pool.record, name, "dir", 0)
        };
        pool.volumes.insert(name.into(), dir);
    }

    /// A guest defined behind the engine's back, in `state`; its UUID.
    pub fn add_domain(&self, name: &str, vm_state: VmState) -> String {
        let mut state = self.lock();
        let uuid = state.new_uuid();
        state.domains.insert(
            uuid.clone(),
            DomainRecord {
                uuid: uuid.clone(),
                name: name.into(),
                state: vm_state,
                memory_mib: 512,
                cpus: 1,
                autostart: false,
                title: String::new(),
                description: String::new(),
                pending_changes: false,
                graphics_type: "vnc".into(),
                nics: Vec::new(),
                drives: Vec::new(),
                icon: String::new(),
                created_volumes: Vec::new(),
            },
        );
        uuid
    }

    /// A virtio NIC on `network` plugged into a guest behind the engine's back; its MAC.
    pub fn attach(&self, uuid: &str, network: &str) -> String {
        let mut state = self.lock();
        let mac = format!("52:54:00:00:00:{:02x}", state.next_uuid);
        state.next_uuid += 1;
        state
            .domains
            .get_mut(uuid)
            .expect("no such sim domain")
            .nics
            .push(Nic {
                mac: mac.clone(),
                kind: "network".into(),
                network: network.into(),
                model: "virtio".into(),
            });
        mac
    }

    /// Makes the guest ignore the ACPI power button, as a guest without an OS does.
    pub fn ignore_acpi(&self, uuid: &str) {
        self.lock().deaf.push(uuid.to_owned());
    }

    /// A guest changing state behind the engine's back (as `virsh destroy` would).
    pub fn set_state(&self, uuid: &str, vm_state: VmState) {
        self.lock()
            .domains
            .get_mut(uuid)
            .expect("no such sim domain")
            .state = vm_state;
    }

    pub fn has_domain(&self, name: &str) -> bool {
        self.lock().domains.values().any(|d| d.name == name)
    }

    /// The names of the volumes in `pool`.
    pub fn volume_names(&self, pool: &str) -> Vec<String> {
        self.lock().pools[pool].volumes.keys().cloned().collect()
    }
}

impl Sim {
    /// A device change: the sim keeps one view of a guest, so a change a running
    /// guest gets only at its next power-on shows as pending.
    fn change_devices(
        &self,
        method: &'static str,
        uuid: &str,
        apply: Apply,
        change: impl FnOnce(&mut DomainRecord) -> Result<()>,
    ) -> Result<DomainRecord> {
        let mut state = self.enter(method)?;
        let dom = state.domain(uuid)?;
        change(dom)?;
        if apply == Apply::Stored && dom.state != VmState::Shutoff {
            dom.pending_changes = true;
        }
        Ok(dom.clone())
    }
}

fn sim_nic(nic: &NicDefinition) -> Nic {
    Nic {
        mac: nic.mac.clone(),
        kind: "network".into(),
        network: nic.network.clone(),
        model: nic.model.clone(),
    }
}

fn host_interface(name: &str, kind: &str, ipaddr: &str, module: &str) -> HostInterface {
    HostInterface {
        name: name.into(),
        kind: kind.into(),
        up: true,
        ipaddr: ipaddr.into(),
        netmask: if ipaddr.is_empty() {
            ""
        } else {
            "255.255.255.0"
        }
        .into(),
        module: module.into(),
    }
}

impl State {
    fn insert_pool(
        &mut self,
        name: &str,
        pool_type: &str,
        target_path: String,
        source: PoolSource,
        active: bool,
    ) -> String {
        let uuid = self.new_uuid();
        let record = PoolRecord {
            uuid: uuid.clone(),
            name: name.into(),
            state: PoolState::Inactive,
            pool_type: pool_type.into(),
            target_path,
            capacity: 0,
            allocation: 0,
            available: 0,
            nr_volumes: 0,
            source,
        };
        let mut pool = SimPool {
            record,
            volumes: BTreeMap::new(),
        };
        if active {
            pool.start();
        }
        self.pools.insert(name.into(), pool);
        uuid
    }

    fn network(&mut self, name: &str) -> Result<&mut NetworkRecord> {
        self.networks
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(format!("no network named '{name}'")))
    }

    fn new_uuid(&mut self) -> String {
        let n = self.next_uuid;
        self.next_uuid += 1;
        format!("00000000-0000-4000-8000-{n:012}")
    }

    fn domain(&mut self, uuid: &str) -> Result<&mut DomainRecord> {
        self.domains.get_mut(uuid).ok_or_else(|| {
            Error::NotFound(format!(
                "Domain not found: no domain with matching uuid '{uuid}'"
            ))
        })
    }

    fn pool(&mut self, name: &str) -> Result<&mut SimPool> {
        self.pools
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(format!("no storage pool named '{name}'")))
    }

    fn active_pool(&mut self, name: &str) -> Result<&mut SimPool> {
        let pool = self.pool(name)?;
        if !pool.record.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{name}' is not active; activate it first"
            )));
        }
        Ok(pool)
    }
}

impl SimPool {
    /// Every active sim pool holds 100 GiB, all free but for its volumes' allocation.
    fn start(&mut self) {
        self.record.state = PoolState::Active;
        self.record.capacity = SIM_POOL_BYTES;
        self.record.available = SIM_POOL_BYTES;
    }

    fn current(&self) -> PoolRecord {
        if !self.record.active() {
            return self.record.clone();
        }
        let allocation = self.volumes.values().map(|v| v.allocation).sum();
        PoolRecord {
            nr_volumes: self.volumes.len() as u32,
            allocation,
            available: self.record.capacity.saturating_sub(allocation),
            ..self.record.clone()
        }
    }

    /// A volume libvirt can change: a directory fails as libvirt's file calls do.
    fn file_volume(&self, name: &str) -> Result<&VolumeRecord> {
        let vol = self.volume(name)?;
        if vol.kind == "dir" {
            return Err(Error::Libvirt {
                code: 38,
                domain: 18,
                message: format!("cannot open '{}': Is a directory", vol.path),
            });
        }
        Ok(vol)
    }

    fn volume(&self, name: &str) -> Result<&VolumeRecord> {
        self.volumes.get(name).ok_or_else(|| {
            Error::NotFound(format!(
                "no storage volume '{name}' in pool '{}'",
                self.record.name
            ))
        })
    }

    fn check_free(&self, name: &str) -> Result<()> {
        if self.volumes.contains_key(name) {
            return Err(Error::AlreadyExists(format!(
                "storage volume '{name}' already exists in pool '{}'",
                self.record.name
            )));
        }
        Ok(())
    }
}

fn volume(pool: &PoolRecord, name: &str, format: &str, capacity_mib: u64) -> VolumeRecord {
    VolumeRecord {
        pool: pool.name.clone(),
        name: name.into(),
        kind: "file",
        capacity: capacity_mib * MIB,
        allocation: 0,
        format: format.into(),
        path: format!("{}/{name}", pool.target_path),
    }
}

impl Hypervisor for Sim {
    fn uri(&self) -> &str {
        "sim:///"
    }

    fn list_domains(&self) -> Result<Vec<DomainRecord>> {
        Ok(self
            .enter("list_domains")?
            .domains
            .values()
            .cloned()
            .collect())
    }

    fn domain(&self, uuid: &str) -> Result<Option<DomainRecord>> {
        Ok(self.enter("domain")?.domains.get(uuid).cloned())
    }

    fn define_guest(&self, def: &GuestDefinition) -> Result<DomainRecord> {
        let mut state = self.enter("define_guest")?;
        if state.domains.values().any(|d| d.name == def.name) {
            return Err(Error::AlreadyExists(format!(
                "domain '{}' already exists",
                def.name
            )));
        }
        if state.domains.contains_key(&def.uuid) {
            return Err(Error::AlreadyExists(format!(
                "domain with uuid '{}' already exists",
                def.uuid
            )));
        }
        let uuid = def.uuid.clone();
        let mut drives: Vec<Drive> = def
            .disks
            .iter()
            .map(|d| Drive {
                dev: def.disk_bus.target(d.index),
                kind: DriveKind::Disk,
                path: d.path.clone(),
                bus: def.disk_bus.word().into(),
                format: d.format.clone(),
            })
            .collect();
        if let Some(Cdrom::File(path)) = &def.cdrom {
            drives.push(Drive {
                dev: "hdc".into(),
                kind: DriveKind::Cdrom,
                path: path.clone(),
                bus: "ide".into(),
                format: "raw".into(),
            });
        }
        let record = DomainRecord {
            uuid: uuid.clone(),
            name: def.name.clone(),
            state: VmState::Shutoff,
            memory_mib: def.memory_mib,
            cpus: def.cpus,
            autostart: false,
            title: String::new(),
            description: String::new(),
            pending_changes: false,
            graphics_type: "vnc".into(),
            nics: def
                .network
                .iter()
                .map(|network| Nic {
                    mac: format!("52:54:00:00:01:{:02x}", state.next_uuid),
                    kind: "network".into(),
                    network: network.clone(),
                    model: def.nic_model.clone(),
                })
                .collect(),
            drives,
            icon: def.icon.clone(),
            created_volumes: def.created_volumes.clone(),
        };
        state.domains.insert(uuid, record.clone());
        Ok(record)
    }

    fn power(&self, uuid: &str, power: Power) -> Result<DomainRecord> {
        use VmState::*;
        let mut state = self.enter("power")?;
        let deaf = state.deaf.iter().any(|d| d == uuid);
        let dom = state.domain(uuid)?;
        let refuse = |why: &str| {
            Err(Error::InvalidState(format!(
                "Requested operation is not valid: {why}"
            )))
        };
        dom.state = match (power, dom.state) {
            (Power::On, Shutoff | Crashed) => {
                dom.pending_changes = false;
                Running
            }
            (Power::On, _) => return refuse("domain is already running"),
            (_, Shutoff) => return refuse("domain is not running"),
            (Power::Off, _) => Shutoff,
            (Power::Shutdown, _) if deaf => dom.state,
            (Power::Shutdown, _) => Shutoff,
            (Power::Reboot | Power::Reset, s) => s,
            (Power::Suspend, Running) => Paused,
            (Power::Suspend, _) => return refuse("domain is already suspended"),
            (Power::Resume, Paused) => Running,
            (Power::Resume, _) => return refuse("domain is not paused"),
        };
        Ok(dom.clone())
    }

    fn change_domain(&self, uuid: &str, change: &DomainChange) -> Result<DomainRecord> {
        let mut state = self.enter("change_domain")?;
        if let Some(name) = &change.name {
            if state.domains.values().any(|d| d.name == *name) {
                return Err(Error::AlreadyExists(format!(
                    "domain '{name}' already exists"
                )));
            }
        }
        let dom = state.domain(uuid)?;
        let running = dom.state != VmState::Shutoff;
        if let Some(name) = &change.name {
            dom.name = name.clone();
        }
        // A running sim guest keeps its CPUs and memory until it is powered on again.
        if let Some(cpus) = change.cpus {
            if running {
                dom.pending_changes |= cpus != dom.cpus;
            } else {
                dom.cpus = cpus;
            }
        }
        if let Some(memory) = change.memory_mib {
            if running {
                dom.pending_changes |= memory != dom.memory_mib;
            } else {
                dom.memory_mib = memory;
            }
        }
        if let Some(autostart) = change.autostart {
            dom.autostart = autostart;
        }
        if let Some(title) = &change.title {
            dom.title = title.clone();
        }
        if let Some(description) = &change.description {
            dom.description = description.clone();
        }
        Ok(dom.clone())
    }

    fn set_metadata(&self, uuid: &str, icon: &str, created_volumes: &[String]) -> Result<()> {
        let mut state = self.enter("set_metadata")?;
        let dom = state.domain(uuid)?;
        dom.icon = icon.to_owned();
        dom.created_volumes = created_volumes.to_vec();
        Ok(())
    }

    /// A running sim guest has one lease per NIC on `192.168.122.0/24`.
    fn nic_addresses(&self, uuid: &str) -> Result<Vec<(String, Vec<String>)>> {
        let mut state = self.enter("nic_addresses")?;
        let dom = state.domain(uuid)?;
        Ok(dom
            .nics
            .iter()
            .enumerate()
            .map(|(i, nic)| (nic.mac.clone(), vec![format!("192.168.122.{}", i + 10)]))
            .collect())
    }

    fn attach_nic(&self, uuid: &str, nic: &NicDefinition, apply: Apply) -> Result<DomainRecord> {
        self.change_devices("attach_nic", uuid, apply, |dom| {
            dom.nics.push(sim_nic(nic));
            Ok(())
        })
    }

    fn update_nic(&self, uuid: &str, nic: &NicDefinition, apply: Apply) -> Result<DomainRecord> {
        self.change_devices("update_nic", uuid, apply, |dom| {
            let old = dom
                .nics
                .iter_mut()
                .find(|n| n.mac == nic.mac)
                .ok_or_else(|| Error::NotFound(format!("no device with MAC {}", nic.mac)))?;
            *old = sim_nic(nic);
            Ok(())
        })
    }

    fn detach_nic(&self, uuid: &str, nic: &Nic, apply: Apply) -> Result<DomainRecord> {
        self.change_devices("detach_nic", uuid, apply, |dom| {
            dom.nics.retain(|n| n.mac != nic.mac);
            Ok(())
        })
    }

    fn attach_drive(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord> {
        self.change_devices("attach_drive", uuid, apply, |dom| {
            dom.drives.push(drive.clone());
            Ok(())
        })
    }

    fn change_media(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord> {
        self.change_devices("change_media", uuid, apply, |dom| {
            let old = dom
                .drives
                .iter_mut()
                .find(|d| d.dev == drive.dev)
                .ok_or_else(|| Error::NotFound(format!("no drive {}", drive.dev)))?;
            *old = drive.clone();
            Ok(())
        })
    }

    fn detach_drive(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord> {
        self.change_devices("detach_drive", uuid, apply, |dom| {
            dom.drives.retain(|d| d.dev != drive.dev);
            Ok(())
        })
    }

    fn undefine(&self, uuid: &str) -> Result<()> {
        let mut state = self.enter("undefine")?;
        state.domain(uuid)?;
        state.domains.remove(uuid);
        Ok(())
    }

    fn screenshot(&self, uuid: &str) -> Result<(Vec<u8>, String)> {
        let mut state = self.enter("screenshot")?;
        if !state.domain(uuid)?.state.has_screen() {
            return Err(Error::InvalidState("domain is not running".into()));
        }
        Ok((SCREEN.to_vec(), "image/png".into()))
    }

    fn open_console(&self, uuid: &str) -> Result<OwnedFd> {
        let mut state = self.enter("open_console")?;
        state.domain(uuid)?;
        let file = std::fs::File::open("/dev/null")
            .map_err(|e| Error::Internal(format!("/dev/null: {e}")))?;
        Ok(OwnedFd::from(file))
    }

    fn network_exists(&self, name: &str) -> Result<bool> {
        Ok(self.enter("network_exists")?.networks.contains_key(name))
    }

    fn sample_stats(&self) -> Result<Vec<DomainCounters>> {
        drop(self.enter("sample_stats")?);
        Ok(Vec::new())
    }

    fn probe_capabilities(&self) -> Result<HostCapabilities> {
        Ok(self.enter("probe_capabilities")?.capabilities.clone())
    }

    fn list_pools(&self) -> Result<Vec<PoolRecord>> {
        Ok(self
            .enter("list_pools")?
            .pools
            .values()
            .map(SimPool::current)
            .collect())
    }

    fn pool(&self, uuid: &str) -> Result<Option<PoolRecord>> {
        Ok(self
            .enter("pool")?
            .pools
            .values()
            .find(|p| p.record.uuid == uuid)
            .map(SimPool::current))
    }

    fn pool_by_name(&self, name: &str) -> Result<PoolRecord> {
        Ok(self.enter("pool_by_name")?.pool(name)?.current())
    }

    fn define_pool(&self, def: &PoolDefinition) -> Result<PoolRecord> {
        let (name, pool_type, target) = (def.name(), def.kind(), def.target_path());
        let source = match def {
            PoolDefinition::Dir { .. } => PoolSource::default(),
            PoolDefinition::Netfs {
                host, source_path, ..
            } => PoolSource {
                host: host.clone(),
                dir: source_path.clone(),
                ..PoolSource::default()
            },
            PoolDefinition::Logical { name, devices } => PoolSource {
                name: name.clone(),
                devices: devices.clone(),
                ..PoolSource::default()
            },
        };
        let mut state = self.enter("define_pool")?;
        // libvirt's duplicate checks, as the adapter reports them.
        if state.pools.contains_key(name) {
            return Err(Error::AlreadyExists(format!(
                "operation failed: pool '{name}' already exists"
            )));
        }
        let clash = state.pools.values().find(|p| {
            (p.record.pool_type == "dir" && pool_type == "dir" && p.record.target_path == target)
                || source
                    .devices
                    .iter()
                    .any(|d| p.record.source.devices.contains(d))
        });
        if let Some(other) = clash {
            return Err(Error::AlreadyExists(format!(
                "operation failed: Storage source conflict with pool: '{}'",
                other.record.name
            )));
        }
        state.insert_pool(name, pool_type, target, source, false);
        Ok(state.pool(name)?.current())
    }

    fn activate_pool(&self, name: &str) -> Result<PoolRecord> {
        let mut state = self.enter("activate_pool")?;
        let pool = state.pool(name)?;
        if pool.record.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{name}' is already active"
            )));
        }
        pool.start();
        Ok(pool.current())
    }

    fn deactivate_pool(&self, name: &str) -> Result<PoolRecord> {
        let mut state = self.enter("deactivate_pool")?;
        let pool = state.pool(name)?;
        if !pool.record.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{name}' is not active"
            )));
        }
        pool.record.state = PoolState::Inactive;
        pool.record.capacity = 0;
        pool.record.available = 0;
        Ok(pool.current())
    }

    fn undefine_pool(&self, name: &str) -> Result<()> {
        let mut state = self.enter("undefine_pool")?;
        if state.pool(name)?.record.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{name}' is active; deactivate it before deleting it"
            )));
        }
        state.pools.remove(name);
        Ok(())
    }

    fn pool_volumes(&self, pool: &str) -> Result<(PoolRecord, Vec<VolumeRecord>)> {
        let mut state = self.enter("pool_volumes")?;
        let pool = state.active_pool(pool)?;
        Ok((pool.current(), pool.volumes.values().cloned().collect()))
    }

    fn volume(&self, pool: &str, name: &str) -> Result<VolumeRecord> {
        let mut state = self.enter("volume")?;
        state.active_pool(pool)?.volume(name).cloned()
    }

    fn check_volume_name_free(&self, pool: &str, name: &str) -> Result<()> {
        let mut state = self.enter("check_volume_name_free")?;
        state.active_pool(pool)?.check_free(name)
    }

    fn check_volume_inside(&self, pool: &str, name: &str) -> Result<()> {
        let mut state = self.enter("check_volume_inside")?;
        state.active_pool(pool)?.volume(name).map(drop)
    }

    fn create_volume(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeRecord> {
        let mut state = self.enter("create_volume")?;
        let pool = state.active_pool(pool)?;
        pool.check_free(&spec.name)?;
        let vol = VolumeRecord {
            allocation: spec.allocation_mib * MIB,
            ..volume(&pool.record, &spec.name, &spec.format, spec.capacity_mib)
        };
        pool.volumes.insert(spec.name.clone(), vol.clone());
        Ok(vol)
    }

    fn clone_volume(&self, pool: &str, source: &str, copy: &VolumeSpec) -> Result<VolumeRecord> {
        let mut state = self.enter("clone_volume")?;
        let pool = state.active_pool(pool)?;
        pool.check_free(&copy.name)?;
        let source_mib = pool.volume(source)?.capacity.div_ceil(MIB);
        let capacity_mib = copy.capacity_mib.max(source_mib);
        let vol = volume(&pool.record, &copy.name, &copy.format, capacity_mib);
        pool.volumes.insert(copy.name.clone(), vol.clone());
        Ok(vol)
    }

    fn resize_volume(
        &self,
        pool: &str,
        name: &str,
        capacity_mib: u64,
        _shrink: bool,
    ) -> Result<()> {
        let mut state = self.enter("resize_volume")?;
        let pool = state.active_pool(pool)?;
        pool.file_volume(name)?;
        pool.volumes.get_mut(name).expect("checked").capacity = capacity_mib * MIB;
        Ok(())
    }

    fn wipe_volume(&self, pool: &str, name: &str, format: &str, capacity: u64) -> Result<()> {
        let mut state = self.enter("wipe_volume")?;
        let pool = state.active_pool(pool)?;
        pool.file_volume(name)?;
        let volume = pool.volumes.get_mut(name).expect("looked up above");
        volume.format = format.to_owned();
        volume.capacity = capacity;
        volume.allocation = 0;
        Ok(())
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<()> {
        let mut state = self.enter("delete_volume")?;
        let pool = state.active_pool(pool)?;
        pool.file_volume(name)?;
        pool.volumes.remove(name);
        Ok(())
    }

    fn delete_volume_at(&self, path: &str) -> Result<()> {
        let mut state = self.enter("delete_volume_at")?;
        for pool in state.pools.values_mut() {
            pool.volumes.retain(|_, v| v.path != path);
        }
        Ok(())
    }

    fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        Ok(self
            .enter("list_networks")?
            .networks
            .values()
            .cloned()
            .collect())
    }

    fn network(&self, uuid: &str) -> Result<Option<NetworkRecord>> {
        let state = self.enter("network")?;
        Ok(state.networks.values().find(|n| n.uuid == uuid).cloned())
    }

    fn define_network(&self, def: &NetworkDefinition) -> Result<NetworkRecord> {
        let mut state = self.enter("define_network")?;
        if state.networks.contains_key(&def.name) {
            return Err(Error::Libvirt {
                code: 9,
                domain: 19,
                message: format!("operation failed: network '{}' already exists", def.name),
            });
        }
        let uuid = def.uuid.clone().unwrap_or_else(|| state.new_uuid());
        let (connection, interfaces) = match &def.forward {
            Forward::Nat => ("nat", Vec::new()),
            Forward::Isolated => ("isolated", Vec::new()),
            Forward::Bridge { bridge } => ("bridge", vec![bridge.clone()]),
            Forward::Macvtap { device } => ("macvtap", vec![device.clone()]),
        };
        let (subnet, dhcp_start, dhcp_end) = match &def.address {
            Some(a) => {
                let base = u32::from(a.gateway) - 1;
                let (start, end) = a.dhcp.expect("sim networks serve DHCP");
                (
                    format!("{}/{}", std::net::Ipv4Addr::from(base), a.prefix),
                    start.to_string(),
                    end.to_string(),
                )
            }
            None => Default::default(),
        };
        let record = NetworkRecord {
            uuid,
            name: def.name.clone(),
            active: false,
            autostart: false,
            persistent: true,
            connection: connection.into(),
            subnet,
            dhcp_start,
            dhcp_end,
            interfaces,
            vlan_id: 0,
        };
        state.networks.insert(def.name.clone(), record.clone());
        Ok(record)
    }

    fn activate_network(&self, name: &str) -> Result<NetworkRecord> {
        let mut state = self.enter("activate_network")?;
        let network = state.network(name)?;
        if network.active {
            return Err(Error::InvalidState(format!(
                "network '{name}' is already active"
            )));
        }
        network.active = true;
        Ok(network.clone())
    }

    fn deactivate_network(&self, name: &str) -> Result<NetworkRecord> {
        let mut state = self.enter("deactivate_network")?;
        let network = state.network(name)?;
        if !network.active {
            return Err(Error::InvalidState(format!(
                "network '{name}' is not active"
            )));
        }
        network.active = false;
        Ok(network.clone())
    }

    fn undefine_network(&self, name: &str) -> Result<()> {
        let mut state = self.enter("undefine_network")?;
        if state.network(name)?.active {
            return Err(Error::InvalidState(format!(
                "network '{name}' is active; deactivate it before deleting it"
            )));
        }
        state.networks.remove(name);
        Ok(())
    }

    fn set_network_autostart(&self, name: &str, autostart: bool) -> Result<NetworkRecord> {
        let mut state = self.enter("set_network_autostart")?;
        let network = state.network(name)?;
        network.autostart = autostart;
        Ok(network.clone())
    }

    fn host_interfaces(&self) -> Result<Vec<HostInterface>> {
        Ok(self.enter("host_interfaces")?.interfaces.clone())
    }

    fn host_routes(&self) -> Result<Vec<String>> {
        Ok(self.enter("host_routes")?.routes.clone())
    }
}

/// An engine over a fresh `Sim`, connected and synced, with its template store in a
/// directory of its own.
pub struct Harness {
    pub engine: Arc<super::Engine>,
    pub sim: Arc<Sim>,
    pub changes: tokio::sync::mpsc::UnboundedReceiver<super::model::Change>,
    pub state_dir: tempfile::TempDir,
}

pub async fn harness() -> Harness {
    let state_dir = tempfile::tempdir().expect("temporary directory");
    harness_with(Sim::new(), state_dir).await
}

/// An engine over `sim` keeping its state in `state_dir` (where a previous run may
/// have left something), connected and synced, the URL check service served in this
/// process as the socket unit would.
pub async fn harness_with(sim: Arc<Sim>, state_dir: tempfile::TempDir) -> Harness {
    crate::url_check::tests::helper_at(&state_dir.path().join(URL_CHECK_SOCKET));
    let (engine, changes) = engine_over(&sim, state_dir.path());
    engine
        .model
        .apply(super::hypervisor::HostEvent::Connected)
        .await;
    Harness {
        engine,
        sim,
        changes,
        state_dir,
    }
}

/// Where in its state directory a test engine asks for URL checks.
const URL_CHECK_SOCKET: &str = "url-check.sock";

/// An engine over `sim` keeping its state in `state_dir`, not yet connected; nothing
/// answers its URL checks unless the caller serves them.
pub fn engine_over(
    sim: &Arc<Sim>,
    state_dir: &std::path::Path,
) -> (
    Arc<super::Engine>,
    tokio::sync::mpsc::UnboundedReceiver<super::model::Change>,
) {
    let (tx, changes) = tokio::sync::mpsc::unbounded_channel();
    let url_check_socket = state_dir.join(URL_CHECK_SOCKET);
    let settings = super::Settings {
        state_dir,
        // No osinfo-db: every OS is unknown and gets Kimchi's fallbacks.
        osinfo_dir: state_dir,
        url_check_socket: &url_check_socket,
        session_idle: std::time::Duration::from_secs(60),
        session_max: std::time::Duration::from_secs(600),
        gateway_uid: Some(990),
    };
    let engine = super::Engine::new(sim.clone(), settings, tx).expect("engine");
    (engine, changes)
}
