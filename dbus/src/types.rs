use serde::{Deserialize, Serialize};
use zbus::{OwnedObjectPath, Type};

use crate::{NetworkState, PoolState, TaskState, VmState};

/// Whether libvirt screenshots work on this host, as probed once by kimchid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Type)]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum ScreenshotSupport {
    /// Not probed yet (libvirt not reachable so far).
    Unknown,
    Yes,
    No,
}

impl ScreenshotSupport {
    /// Kimchi's tri-state: true, false, or null while untested.
    pub fn as_option(self) -> Option<bool> {
        match self {
            ScreenshotSupport::Unknown => None,
            ScreenshotSupport::Yes => Some(true),
            ScreenshotSupport::No => Some(false),
        }
    }
}

/// What the host can do, public by design (Kimchi's `/config/capabilities`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Capabilities {
    /// Network protocols QEMU on this host can stream an ISO from.
    pub stream_protocols: Vec<String>,
    pub screenshot: ScreenshotSupport,
}

/// The identity a web session stands for, as kimchid resolved it at login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SessionInfo {
    pub user: String,
    pub uid: u32,
    pub groups: Vec<String>,
}

/// One virtual machine as kimchid's model knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
pub struct VmInfo {
    pub path: OwnedObjectPath,
    pub name: String,
    pub uuid: String,
    pub state: VmState,
    /// Memory assigned to the guest, MiB.
    pub memory_mib: u64,
    /// `vnc`, or empty when the guest has no VNC graphics.
    pub graphics_type: String,
    /// The icon of the template the VM was created from, or empty.
    pub icon: String,
    pub stats: VmStats,
    /// Virtual CPUs the guest has now.
    pub cpus: u32,
    /// Started when the host boots.
    pub autostart: bool,
    pub title: String,
    pub description: String,
    /// The stored definition differs from what the running guest has (CPUs, memory,
    /// NICs or disks changed that could not be applied live); the next power-on
    /// applies it.
    pub pending_changes: bool,
}

/// One network interface of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VmIface {
    pub mac: String,
    /// libvirt's interface type: network, bridge, user, direct, …
    pub iface_type: String,
    /// The libvirt network of a `network` interface, else empty.
    pub network: String,
    /// The emulated NIC model (virtio, e1000, rtl8139, …), or empty when unset.
    pub model: String,
    /// IPv4 addresses from the network's DHCP leases; empty when unknown.
    pub ips: Vec<String>,
}

/// A NIC to add to a VM: only `network` interfaces are made by kimchid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VmIfaceSpec {
    /// `network` (the only type kimchid adds).
    pub iface_type: String,
    pub network: String,
    /// Empty: the model of the VM's other NICs, else virtio.
    pub model: String,
}

/// One disk or CD-ROM drive of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VmStorage {
    /// The target device name (`vda`, `hdc`, …), which names it in the API.
    pub dev: String,
    /// disk or cdrom.
    pub storage_type: String,
    /// The host file or device; empty for an empty CD-ROM drive.
    pub path: String,
    /// virtio, ide, scsi, sata, …
    pub bus: String,
    /// The image format (qcow2, raw, …), or empty when unset.
    pub format: String,
}

/// A drive to add to a VM: a CD-ROM (`path` names an ISO file or a `kimchi_isos`
/// volume), an existing volume (`pool`, `volume`) or a new one of `size_mib` in `pool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VmStorageSpec {
    /// disk or cdrom.
    pub storage_type: String,
    pub path: String,
    pub pool: String,
    pub volume: String,
    /// MiB of a new volume made for the VM (and deleted with it); 0 otherwise.
    pub size_mib: u64,
}

/// One disk of a template: a new empty disk of `size_gb`, or, when `volume` names a
/// volume of the VM's storage pool, a copy of it (at least `size_gb` large).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TemplateDisk {
    /// The disk's position on its bus (0 is the first disk).
    pub index: u32,
    /// GiB; 0 when the size comes from `volume`.
    pub size_gb: u64,
    /// Empty for a new empty disk.
    pub volume: String,
}

/// What a template says. On create and update, what is left empty or 0 is filled in
/// by kimchid from the operating system's defaults (osinfo-db); `os_distro` and
/// `os_version` come from the `cdrom` ISO when it identifies itself. The default is
/// all empty: kimchid chooses everything but the name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TemplateSpec {
    pub name: String,
    /// A virtual path to organise templates in a UI, one element per component.
    pub folder: Vec<String>,
    pub icon: String,
    pub os_distro: String,
    pub os_version: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// An absolute path to an ISO image, or an http(s) or ftp URL of one.
    pub cdrom: String,
    pub disks: Vec<TemplateDisk>,
}

/// A stored template with the device models kimchid chose for its OS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TemplateInfo {
    pub path: OwnedObjectPath,
    pub spec: TemplateSpec,
    /// virtio or ide.
    pub disk_bus: String,
    /// virtio or e1000.
    pub nic_model: String,
}

/// What to define as a new storage pool. Source fields are used by the types that
/// need them (`netfs`: host and path; `logical`: devices) and must be empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PoolSpec {
    pub name: String,
    /// dir, netfs or logical.
    pub pool_type: String,
    /// Target directory (dir, netfs) or volume group path (logical).
    pub path: String,
    pub source_host: String,
    pub source_path: String,
    pub source_devices: Vec<String>,
}

/// One storage pool; sizes in MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PoolInfo {
    pub path: OwnedObjectPath,
    pub name: String,
    pub state: PoolState,
    /// The pool's directory on the host.
    pub target_path: String,
    /// libvirt pool type (dir, netfs, logical, …), or `kimchi-iso` for the ISO view.
    pub pool_type: String,
    pub capacity_mib: u64,
    pub allocated_mib: u64,
    pub available_mib: u64,
    /// 0 for inactive pools.
    pub nr_volumes: u32,
}

/// What to create as a new volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VolumeSpec {
    pub name: String,
    pub capacity_mib: u64,
    /// MiB written out at creation (preallocated); 0 for a sparse volume.
    pub allocation_mib: u64,
    /// qcow2 or raw.
    pub format: String,
}

/// One storage volume; sizes in MiB. ISO fields are meaningful only when `iso` is true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VolumeInfo {
    pub pool: String,
    pub name: String,
    /// file, block, dir, network, …
    pub vol_type: String,
    pub capacity_mib: u64,
    pub allocation_mib: u64,
    pub format: String,
    /// Full path of the volume on the host.
    pub file_path: String,
    pub iso: bool,
    pub os_distro: String,
    pub os_version: String,
    pub bootable: bool,
}

/// One long-running operation, kept for a while after it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
pub struct TaskInfo {
    pub path: OwnedObjectPath,
    pub id: u32,
    /// What runs, e.g. `storagevolume.wipe`.
    pub operation: String,
    pub state: TaskState,
    pub message: String,
    /// The API path of the object the task works on.
    pub target_uri: String,
    /// 0 to 1 (libvirt reports no intermediate progress for these operations).
    pub progress: f64,
    /// Unix time in microseconds; `end_usec` is 0 while running.
    pub start_usec: u64,
    pub end_usec: u64,
}

/// A running guest's recent activity, sampled every few seconds in one bulk libvirt
/// call; all zero (peaks 100, Kimchi's chart scale) for a guest that is not running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct VmStats {
    /// 0 to 100, over all of the guest's vCPUs.
    pub cpu_utilization: f64,
    /// KB/s received and sent over all interfaces.
    pub net_throughput: f64,
    /// The highest recent `net_throughput`, at least 100.
    pub net_throughput_peak: f64,
    /// KB/s read and written over all disks.
    pub io_throughput: f64,
    /// The highest recent `io_throughput`, at least 100.
    pub io_throughput_peak: f64,
}

impl Default for VmStats {
    fn default() -> Self {
        VmStats {
            cpu_utilization: 0.0,
            net_throughput: 0.0,
            net_throughput_peak: 100.0,
            io_throughput: 0.0,
            io_throughput_peak: 100.0,
        }
    }
}

/// What to define as a new virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct NetworkSpec {
    pub name: String,
    /// nat, isolated, bridge or macvtap.
    pub connection: String,
    /// IPv4 `address/prefix` (nat, isolated); empty: kimchid picks a free /24.
    pub subnet: String,
    /// The host interface a bridge or macvtap network uses (exactly one).
    pub interfaces: Vec<String>,
    /// 0: no VLAN.
    pub vlan_id: u32,
}

/// One virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct NetworkInfo {
    pub path: OwnedObjectPath,
    pub name: String,
    pub uuid: String,
    pub state: NetworkState,
    pub autostart: bool,
    pub persistent: bool,
    /// nat, isolated, bridge or macvtap (`route`/`open` networks defined elsewhere
    /// show libvirt's word).
    pub connection: String,
    /// `192.168.122.0/24`, or empty for networks without an address of their own.
    pub subnet: String,
    /// The DHCP range; both empty when the network serves no DHCP.
    pub dhcp_start: String,
    pub dhcp_end: String,
    /// Host interfaces the network is attached to (bridge, macvtap).
    pub interfaces: Vec<String>,
    /// 0: no VLAN.
    pub vlan_id: u32,
    /// Whether a guest is attached.
    pub in_use: bool,
    /// Names of the guests attached.
    pub vms: Vec<String>,
}

/// One network interface of the host, read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct InterfaceInfo {
    pub name: String,
    /// nic, bridge, vlan or bond.
    pub iface_type: String,
    /// active (up) or inactive.
    pub status: String,
    /// The first IPv4 address, or empty.
    pub ipaddr: String,
    /// Its netmask (`255.255.255.0`), or empty.
    pub netmask: String,
    /// The kernel driver of a nic, or empty.
    pub module: String,
}
