//! The seam between the engine's rules and the hypervisor: what the engine needs
//! from libvirt, as a trait with plain-data records. `libvirt/` implements it for real;
//! `sim.rs` implements it in memory so every rule can be tested without root.
//!
//! The methods block (libvirt's API does); the engine calls them through
//! [`Backend::run`], on the blocking pool, a bounded number at a time.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use kimchi_dbus::{PoolState, VmState, VolumeSpec};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// At most this many hypervisor calls are in flight at once; the rest wait their turn.
const MAX_CONCURRENT_CALLS: usize = 8;

/// What the engine keeps of a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    pub uuid: String,
    pub name: String,
    pub state: VmState,
    pub memory_mib: u64,
    pub cpus: u32,
    pub autostart: bool,
    pub title: String,
    pub description: String,
    /// The stored definition differs from the running guest in CPUs, memory, NICs or
    /// drives: the next power-on changes it.
    pub pending_changes: bool,
    /// `vnc`, or empty when the guest has no VNC display.
    pub graphics_type: String,
    /// The guest's NICs and drives as it has them now (live when it runs).
    pub nics: Vec<Nic>,
    pub drives: Vec<Drive>,
    /// From kimchi's metadata: the template's icon (or empty) …
    pub icon: String,
    /// … and the volumes kimchid created for the guest.
    pub created_volumes: Vec<String>,
}

impl DomainRecord {
    /// Host paths of the guest's disks and CD-ROM media.
    pub fn disk_paths(&self) -> impl Iterator<Item = &str> {
        self.drives
            .iter()
            .map(|d| d.path.as_str())
            .filter(|p| !p.is_empty())
    }

    /// The libvirt networks its NICs are plugged into, each once, in order.
    pub fn networks(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for nic in &self.nics {
            if !nic.network.is_empty() && !names.contains(&nic.network) {
                names.push(nic.network.clone());
            }
        }
        names
    }

    pub fn nic(&self, mac: &str) -> Option<&Nic> {
        self.nics.iter().find(|n| n.mac.eq_ignore_ascii_case(mac))
    }

    pub fn drive(&self, dev: &str) -> Option<&Drive> {
        self.drives.iter().find(|d| d.dev == dev)
    }
}

/// A guest's network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub mac: String,
    /// libvirt's interface type: network, bridge, user, …
    pub kind: String,
    /// The libvirt network of a `network` interface, else empty.
    pub network: String,
    /// The emulated model, or empty when unset.
    pub model: String,
}

/// A NIC to plug in: always into a libvirt network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicDefinition {
    pub mac: String,
    pub network: String,
    pub model: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveKind {
    Disk,
    Cdrom,
}

impl DriveKind {
    pub fn word(self) -> &'static str {
        match self {
            DriveKind::Disk => "disk",
            DriveKind::Cdrom => "cdrom",
        }
    }
}

/// A guest's disk or CD-ROM drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Target device name (`vda`, `hdc`), unique in the guest.
    pub dev: String,
    pub kind: DriveKind,
    /// Host file or block device; empty for an empty CD-ROM drive.
    pub path: String,
    /// virtio, ide, scsi, sata, …
    pub bus: String,
    /// Image format, or empty when unset.
    pub format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    /// At once, like pulling the plug (libvirt's destroy).
    Off,
    /// Asks the guest to power off (ACPI power button); returns at once.
    Shutdown,
    /// Asks the guest to reboot (ACPI); returns at once.
    Reboot,
    /// At once, like the reset button.
    Reset,
    /// Pauses the guest's CPUs.
    Suspend,
    Resume,
}

/// Where a device change goes: the stored definition only, or the running guest too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Stored,
    LiveAndStored,
}

/// A change to a guest's settings; what is `None` stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainChange {
    pub name: Option<String>,
    /// CPUs and memory change the stored definition only.
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub autostart: Option<bool>,
    pub title: Option<String>,
    pub description: Option<String>,
}

/// The bus of a guest's hard disks; the CD-ROM is always IDE (`hdc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Ide,
}

impl DiskBus {
    pub fn word(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Ide => "ide",
        }
    }

    /// Linux-style target name for the disk at `index`: `vda`, `hdb`, …
    pub fn target(self, index: u32) -> String {
        let prefix = match self {
            DiskBus::Virtio => "vd",
            DiskBus::Ide => "hd",
        };
        target_name(prefix, index)
    }
}

/// The Linux-style name of the drive at `index` after `prefix` (`vd`, `hd`, `sd`):
/// a..z, then aa, ab, … as Linux names devices past the 26th.
pub fn target_name(prefix: &str, index: u32) -> String {
    let mut n = index + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(char::from(b'a' + rem as u8));
        n = (n - 1) / 26;
    }
    format!("{prefix}{}", letters.iter().rev().collect::<String>())
}

/// Where the installation medium comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cdrom {
    /// An image file on this host.
    File(String),
    /// An image QEMU streams over the network.
    Remote {
        protocol: String,
        host: String,
        port: u16,
        /// Path and query on the server, starting with `/`.
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDisk {
    pub index: u32,
    pub path: String,
    pub format: String,
}

/// Everything a new guest's definition is made from. Values are used as data only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDefinition {
    pub name: String,
    /// Chosen by kimchid, so that a creation cut short can find what it defined.
    pub uuid: String,
    /// Hardware virtualization usable: `type='kvm'`, else QEMU emulation.
    pub kvm: bool,
    pub memory_mib: u64,
    pub cpus: u32,
    pub disk_bus: DiskBus,
    pub disks: Vec<GuestDisk>,
    pub cdrom: Option<Cdrom>,
    /// libvirt network for the guest's NIC; no NIC without one.
    pub network: Option<String>,
    pub nic_model: String,
    /// Kept in the metadata: the template's icon …
    pub icon: String,
    /// … and the volumes created for this guest, which deleting it removes.
    pub created_volumes: Vec<String>,
}

/// A pool definition that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolDefinition {
    Dir {
        name: String,
        path: String,
    },
    Netfs {
        name: String,
        path: String,
        host: String,
        source_path: String,
    },
    Logical {
        name: String,
        devices: Vec<String>,
    },
}

impl PoolDefinition {
    pub fn name(&self) -> &str {
        match self {
            PoolDefinition::Dir { name, .. }
            | PoolDefinition::Netfs { name, .. }
            | PoolDefinition::Logical { name, .. } => name,
        }
    }

    /// libvirt's pool type.
    pub fn kind(&self) -> &'static str {
        match self {
            PoolDefinition::Dir { .. } => "dir",
            PoolDefinition::Netfs { .. } => "netfs",
            PoolDefinition::Logical { .. } => "logical",
        }
    }

    /// Where the pool's volumes appear: its directory, or a logical pool's volume
    /// group under /dev.
    pub fn target_path(&self) -> String {
        match self {
            PoolDefinition::Dir { path, .. } | PoolDefinition::Netfs { path, .. } => path.clone(),
            PoolDefinition::Logical { name, .. } => format!("/dev/{name}"),
        }
    }
}

/// A storage pool; sizes in bytes, zero while inactive (libvirt keeps stale ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub uuid: String,
    pub name: String,
    pub state: PoolState,
    pub pool_type: String,
    pub target_path: String,
    pub capacity: u64,
    pub allocation: u64,
    pub available: u64,
    pub nr_volumes: u32,
    pub source: PoolSource,
}

/// Where a pool's storage comes from, as far as two pools can clash over it (empty
/// fields where the type has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSource {
    /// The server of a network file system.
    pub host: String,
    /// The exported directory of a network file system.
    pub dir: String,
    /// The volume group of a logical pool.
    pub name: String,
    /// Block devices (logical, fs, disk and iSCSI pools).
    pub devices: Vec<String>,
}

impl PoolRecord {
    pub fn active(&self) -> bool {
        self.state == PoolState::Active
    }
}

/// A storage volume; sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub pool: String,
    pub name: String,
    pub kind: &'static str,
    pub capacity: u64,
    pub allocation: u64,
    pub format: String,
    pub path: String,
}

impl VolumeRecord {
    pub fn is_iso(&self) -> bool {
        self.format == "iso"
    }
}

/// How a virtual network reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Routed through the host with address translation.
    Nat,
    /// Guests reach each other and the host only.
    Isolated,
    /// Guests join an existing Linux bridge of the host.
    Bridge { bridge: String },
    /// Guests get macvtap devices on a host interface.
    Macvtap { device: String },
}

/// An IPv4 network of the host side: the gateway address (the host's, on the network's
/// bridge), the prefix and the DHCP range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAddress {
    pub gateway: std::net::Ipv4Addr,
    pub prefix: u8,
    pub dhcp: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
}

/// A network definition that passed validation. `uuid` keeps a network's identity
/// (and object path) when it is defined anew under another name or subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDefinition {
    pub name: String,
    pub uuid: Option<String>,
    pub forward: Forward,
    /// Nat and isolated networks only.
    pub address: Option<NetworkAddress>,
}

/// A virtual network as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub uuid: String,
    pub name: String,
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
    /// nat, isolated, bridge, macvtap, or libvirt's own word for other forward modes.
    pub connection: String,
    /// `a.b.c.d/p` of the network (not the gateway), or empty.
    pub subnet: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
    /// The host interface of a bridge or macvtap network.
    pub interfaces: Vec<String>,
    pub vlan_id: u32,
}

/// One network interface of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    /// nic, bridge, vlan or bond.
    pub kind: String,
    pub up: bool,
    /// The first IPv4 address and its netmask, or empty.
    pub ipaddr: String,
    pub netmask: String,
    /// The kernel driver of a nic, or empty.
    pub module: String,
}

/// What the host can do, probed once per connection until it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapabilities {
    pub stream_protocols: Vec<String>,
    pub screenshot: bool,
    pub kvm: bool,
    /// The host's memory, MiB.
    pub memory_mib: u64,
}

/// One running domain's counters since it started.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainCounters {
    pub uuid: String,
    pub cpu_time_ns: u64,
    pub vcpus: u32,
    /// Received plus sent, over all interfaces.
    pub net_bytes: u64,
    /// Read plus written, over all disks.
    pub block_bytes: u64,
}

/// What happened to a domain, as far as a lifecycle event tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainEvent {
    /// It is now in this state (started, stopped, paused, …).
    Became(VmState),
    Undefined,
    /// Defined anew or changed otherwise: only a re-read tells.
    Changed,
}

/// What the hypervisor tells the model, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    Connected,
    Disconnected(String),
    Domain {
        uuid: String,
        event: DomainEvent,
    },
    /// A pool was defined, undefined, started or stopped; re-read it.
    Pool {
        uuid: String,
    },
    /// A network was defined, undefined, started or stopped; re-read it.
    Network {
        uuid: String,
    },
}

/// Everything the engine asks of the hypervisor. Names come checked; failures are
/// the crate's `Error` (the implementation maps its own codes once).
pub trait Hypervisor: Send + Sync + 'static {
    fn uri(&self) -> &str;

    fn list_domains(&self) -> Result<Vec<DomainRecord>>;
    /// The domain's current record, or `None` when it no longer exists.
    fn domain(&self, uuid: &str) -> Result<Option<DomainRecord>>;
    /// Defines a new persistent guest (not started).
    fn define_guest(&self, def: &GuestDefinition) -> Result<DomainRecord>;
    fn power(&self, uuid: &str, power: Power) -> Result<DomainRecord>;
    /// Applies `change` in the order name, CPUs, memory, autostart, title, description.
    fn change_domain(&self, uuid: &str, change: &DomainChange) -> Result<DomainRecord>;
    /// Rewrites kimchi's metadata (icon, created volumes) in the stored definition.
    fn set_metadata(&self, uuid: &str, icon: &str, created_volumes: &[String]) -> Result<()>;
    /// The IPv4 addresses the networks' DHCP leases give each MAC of a running guest.
    fn nic_addresses(&self, uuid: &str) -> Result<Vec<(String, Vec<String>)>>;
    fn attach_nic(&self, uuid: &str, nic: &NicDefinition, apply: Apply) -> Result<DomainRecord>;
    /// Replaces the NIC with the same MAC.
    fn update_nic(&self, uuid: &str, nic: &NicDefinition, apply: Apply) -> Result<DomainRecord>;
    fn detach_nic(&self, uuid: &str, nic: &Nic, apply: Apply) -> Result<DomainRecord>;
    fn attach_drive(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord>;
    /// Changes a CD-ROM's medium (`drive.path`, empty: none).
    fn change_media(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord>;
    fn detach_drive(&self, uuid: &str, drive: &Drive, apply: Apply) -> Result<DomainRecord>;
    /// Stops the guest if it runs and removes its definition with everything libvirt
    /// keeps for it (saved state, snapshot metadata, firmware variables).
    fn undefine(&self, uuid: &str) -> Result<()>;
    /// The image bytes of the guest's screen and their MIME type.
    fn screenshot(&self, uuid: &str) -> Result<(Vec<u8>, String)>;
    /// A socket connected to the guest's VNC server.
    fn open_console(&self, uuid: &str) -> Result<OwnedFd>;
    fn network_exists(&self, name: &str) -> Result<bool>;
    /// The counters of every running domain, in one bulk call.
    fn sample_stats(&self) -> Result<Vec<DomainCounters>>;
    fn probe_capabilities(&self) -> Result<HostCapabilities>;

    fn list_pools(&self) -> Result<Vec<PoolRecord>>;
    /// The pool's current record, or `None` when it no longer exists.
    fn pool(&self, uuid: &str) -> Result<Option<PoolRecord>>;
    /// The pool as it is now (an active pool re-reads its directory first).
    fn pool_by_name(&self, name: &str) -> Result<PoolRecord>;
    fn define_pool(&self, def: &PoolDefinition) -> Result<PoolRecord>;
    /// Starts the pool, building its target first when it does not exist.
    fn activate_pool(&self, name: &str) -> Result<PoolRecord>;
    fn deactivate_pool(&self, name: &str) -> Result<PoolRecord>;
    /// Forgets an inactive pool; its files stay.
    fn undefine_pool(&self, name: &str) -> Result<()>;
    /// Re-reads the active pool's directory once; the pool as it is then and its
    /// volumes, by name.
    fn pool_volumes(&self, pool: &str) -> Result<(PoolRecord, Vec<VolumeRecord>)>;
    fn volume(&self, pool: &str, name: &str) -> Result<VolumeRecord>;
    /// Refuses a name that a volume, or any file, in the pool already has.
    fn check_volume_name_free(&self, pool: &str, name: &str) -> Result<()>;
    /// Refuses changes to a volume that is not a regular file inside its pool.
    fn check_volume_inside(&self, pool: &str, name: &str) -> Result<()>;
    fn create_volume(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeRecord>;
    /// A new volume holding a copy of `source` (same pool), at least as large.
    fn clone_volume(&self, pool: &str, source: &str, copy: &VolumeSpec) -> Result<VolumeRecord>;
    fn resize_volume(&self, pool: &str, name: &str, capacity_mib: u64, shrink: bool) -> Result<()>;
    /// Zeroes the volume, keeping it usable: afterwards it is an empty image of
    /// `format` and `capacity` bytes, what it was before (a wipe cut short and done
    /// again finds it zeroed, looking raw).
    fn wipe_volume(&self, pool: &str, name: &str, format: &str, capacity: u64) -> Result<()>;
    fn delete_volume(&self, pool: &str, name: &str) -> Result<()>;
    /// Deletes the volume at `path`; one the hypervisor no longer knows is gone already.
    fn delete_volume_at(&self, path: &str) -> Result<()>;

    fn list_networks(&self) -> Result<Vec<NetworkRecord>>;
    /// The network's current record, or `None` when it no longer exists.
    fn network(&self, uuid: &str) -> Result<Option<NetworkRecord>>;
    /// Defines a persistent network (not started).
    fn define_network(&self, def: &NetworkDefinition) -> Result<NetworkRecord>;
    /// Starts the network; an active one is `InvalidState`.
    fn activate_network(&self, name: &str) -> Result<NetworkRecord>;
    /// Stops the network; an inactive one is `InvalidState`.
    fn deactivate_network(&self, name: &str) -> Result<NetworkRecord>;
    /// Forgets an inactive network.
    fn undefine_network(&self, name: &str) -> Result<()>;
    fn set_network_autostart(&self, name: &str, autostart: bool) -> Result<NetworkRecord>;
    /// The host's network interfaces (not libvirt's networks' own bridges).
    fn host_interfaces(&self) -> Result<Vec<HostInterface>>;
    /// The IPv4 destinations the host routes (`a.b.c.d/p`), default route excluded.
    fn host_routes(&self) -> Result<Vec<String>>;
}

/// The hypervisor as the engine uses it: blocking calls on tokio's blocking pool,
/// never on the async workers, at most `MAX_CONCURRENT_CALLS` at once.
pub struct Backend {
    hypervisor: Arc<dyn Hypervisor>,
    permits: Semaphore,
}

impl Backend {
    pub fn new(hypervisor: Arc<dyn Hypervisor>) -> Arc<Self> {
        Arc::new(Backend {
            hypervisor,
            permits: Semaphore::new(MAX_CONCURRENT_CALLS),
        })
    }

    pub fn uri(&self) -> &str {
        self.hypervisor.uri()
    }

    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Hypervisor) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("hypervisor call pool closed".into()))?;
        let hypervisor = self.hypervisor.clone();
        tokio::task::spawn_blocking(move || f(&*hypervisor))
            .await
            .map_err(|e| Error::Internal(format!("hypervisor call panicked: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_letters_continue_past_z() {
        assert_eq!(DiskBus::Virtio.target(0), "vda");
        assert_eq!(DiskBus::Virtio.target(25), "vdz");
        assert_eq!(DiskBus::Virtio.target(26), "vdaa");
        assert_eq!(DiskBus::Ide.target(3), "hdd");
    }
}
