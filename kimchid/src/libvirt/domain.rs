//! Domains in libvirt: reading them into records, defining, power, settings,
//! devices, undefining, screenshots and console descriptors.

use std::os::fd::{FromRawFd, OwnedFd};

use kimchi_dbus::{VmState, MIB};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::enumutil::Enum;
use virt::stream::Stream;
use virt::sys;

use super::domain_xml::{self, Namespace, METADATA_KEY, METADATA_NS};
use super::xml::Element;
use crate::engine::hypervisor::{
    Apply, DomainChange, DomainRecord, Drive, DriveKind, GuestDefinition, Nic, Power,
};
use crate::error::{Error, Result};

/// Screenshots are small; anything bigger than this is not a sane screen.
const MAX_SCREENSHOT_BYTES: usize = 32 << 20;

pub fn list_all(conn: &Connect) -> Result<Vec<DomainRecord>> {
    super::read_listed(conn.list_all_domains(0)?, read)
}

pub fn by_uuid(conn: &Connect, uuid: &str) -> Result<Option<DomainRecord>> {
    let dom = match conn.lookup_domain_by_uuid_string(uuid) {
        Ok(d) => d,
        Err(e) => {
            return match Error::from(e) {
                Error::NotFound(_) => Ok(None),
                other => Err(other),
            };
        }
    };
    match read(&dom) {
        Ok(r) => Ok(Some(r)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn network_exists(conn: &Connect, name: &str) -> Result<bool> {
    match conn.lookup_network_by_name(name) {
        Ok(_) => Ok(true),
        Err(e) => match Error::from(e) {
            Error::NotFound(_) => Ok(false),
            other => Err(other),
        },
    }
}

/// Defines a new persistent guest (not started).
pub fn define(conn: &Connect, def: &GuestDefinition) -> Result<DomainRecord> {
    // Validated against libvirt's schema: a mistake here fails the define, not the boot.
    let dom =
        conn.define_domain_xml_flags(&domain_xml::guest_xml(def), sys::VIR_DOMAIN_DEFINE_VALIDATE)?;
    read(&dom)
}

pub fn power(conn: &Connect, uuid: &str, power: Power) -> Result<DomainRecord> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    match power {
        Power::On => dom.create()?,
        Power::Off => dom.destroy()?,
        Power::Shutdown => dom.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)?,
        Power::Reboot => dom.reboot(sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)?,
        Power::Reset => dom.reset()?,
        Power::Suspend => dom.suspend()?,
        Power::Resume => dom.resume()?,
    }
    read(&dom)
}

pub fn change(conn: &Connect, uuid: &str, change: &DomainChange) -> Result<DomainRecord> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    if let Some(name) = &change.name {
        dom.rename(name, 0)?;
    }
    let config = sys::VIR_DOMAIN_AFFECT_CONFIG;
    // The maximum first: it bounds the current value (and lowering it lowers that).
    if let Some(cpus) = change.cpus {
        dom.set_vcpus_flags(cpus, config | sys::VIR_DOMAIN_VCPU_MAXIMUM)?;
        dom.set_vcpus_flags(cpus, config)?;
    }
    if let Some(memory_mib) = change.memory_mib {
        let kib = memory_mib * (MIB / 1024);
        dom.set_memory_flags(kib, config | sys::VIR_DOMAIN_MEM_MAXIMUM)?;
        dom.set_memory_flags(kib, config)?;
    }
    if let Some(autostart) = change.autostart {
        dom.set_autostart(autostart)?;
    }
    let now = settings_flags(&dom)?;
    for (kind, text) in [
        (sys::VIR_DOMAIN_METADATA_TITLE, &change.title),
        (sys::VIR_DOMAIN_METADATA_DESCRIPTION, &change.description),
    ] {
        if let Some(text) = text {
            let text = (!text.is_empty()).then_some(text.as_str());
            dom.set_metadata(kind as i32, text, None, None, now)?;
        }
    }
    read(&dom)
}

pub fn set_metadata(
    conn: &Connect,
    uuid: &str,
    icon: &str,
    created_volumes: &[String],
) -> Result<()> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    let xml = domain_xml::metadata_xml(Namespace::Injected, icon, created_volumes).render();
    dom.set_metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(&xml),
        Some(METADATA_KEY),
        Some(METADATA_NS),
        settings_flags(&dom)?,
    )?;
    Ok(())
}

/// Settings that need no restart go to the stored definition and, when the guest
/// runs, to it too.
fn settings_flags(dom: &Domain) -> Result<u32> {
    let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
    if dom.is_active()? {
        flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    Ok(flags)
}

/// The IPv4 addresses of each MAC of a running guest, from the DHCP leases of the
/// libvirt networks it is plugged into.
pub fn nic_addresses(conn: &Connect, uuid: &str) -> Result<Vec<(String, Vec<String>)>> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    let ifaces = dom.interface_addresses(sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)?;
    Ok(ifaces
        .into_iter()
        .filter_map(|iface| {
            let mac = iface.hwaddr?;
            let ips = iface
                .addrs
                .into_iter()
                .filter(|a| a.typed == i64::from(sys::VIR_IP_ADDR_TYPE_IPV4))
                .map(|a| a.addr)
                .collect();
            Some((mac, ips))
        })
        .collect())
}

/// Adds the device `xml` describes.
pub fn attach(conn: &Connect, uuid: &str, xml: &Element, apply: Apply) -> Result<DomainRecord> {
    let xml = xml.render();
    device(conn, uuid, apply, |dom, flags| {
        dom.attach_device_flags(&xml, flags)
    })
}

/// Replaces the device `xml` names (a NIC by MAC, a drive by target) with it.
pub fn update(conn: &Connect, uuid: &str, xml: &Element, apply: Apply) -> Result<DomainRecord> {
    let xml = xml.render();
    device(conn, uuid, apply, |dom, flags| {
        dom.update_device_flags(&xml, flags)
    })
}

pub fn detach_nic(conn: &Connect, uuid: &str, nic: &Nic, apply: Apply) -> Result<DomainRecord> {
    let mac = nic.mac.to_ascii_lowercase();
    device(conn, uuid, apply, |dom, flags| {
        let xml = stored_element(dom, |n| {
            n.has_tag_name("interface")
                && n.children().any(|c| {
                    c.has_tag_name("mac")
                        && c.attribute("address")
                            .is_some_and(|a| a.eq_ignore_ascii_case(&mac))
                })
        })?;
        dom.detach_device_flags(&xml, flags)
    })
}

pub fn detach_drive(
    conn: &Connect,
    uuid: &str,
    drive: &Drive,
    apply: Apply,
) -> Result<DomainRecord> {
    device(conn, uuid, apply, |dom, flags| {
        let xml = stored_element(dom, |n| {
            n.has_tag_name("disk")
                && n.children().any(|c| {
                    c.has_tag_name("target") && c.attribute("dev") == Some(drive.dev.as_str())
                })
        })?;
        dom.detach_device_flags(&xml, flags)
    })
}

/// Runs one device call with the flags `apply` stands for, then reads the guest.
fn device(
    conn: &Connect,
    uuid: &str,
    apply: Apply,
    call: impl FnOnce(&Domain, u32) -> std::result::Result<(), virt::error::Error>,
) -> Result<DomainRecord> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    let flags = match apply {
        Apply::Stored => sys::VIR_DOMAIN_AFFECT_CONFIG,
        Apply::LiveAndStored => sys::VIR_DOMAIN_AFFECT_CONFIG | sys::VIR_DOMAIN_AFFECT_LIVE,
    };
    call(&dom, flags)?;
    read(&dom)
}

/// The device element that `matches`, as libvirt wrote it in the stored definition
/// (or, for a device only the running guest has, in the live one): a detach names the
/// device exactly as libvirt has it (type, source, address).
fn stored_element(
    dom: &Domain,
    matches: impl Fn(&roxmltree::Node) -> bool,
) -> std::result::Result<String, virt::error::Error> {
    for flags in [sys::VIR_DOMAIN_XML_INACTIVE, 0] {
        let xml = dom.xml_desc(flags)?;
        let Ok(doc) = roxmltree::Document::parse(&xml) else {
            continue;
        };
        let found = doc
            .descendants()
            .find(|n| n.parent().is_some_and(|p| p.has_tag_name("devices")) && matches(n));
        if let Some(node) = found {
            return Ok(xml[node.range()].to_owned());
        }
    }
    // The engine looked the device up in the model first; libvirt names what is wrong.
    Ok(String::new())
}

/// Stops the guest if it runs and removes its definition, with any saved state,
/// snapshot metadata and firmware variables libvirt keeps for it.
pub fn undefine(conn: &Connect, uuid: &str) -> Result<()> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    if dom.is_active()? {
        match dom.destroy() {
            // Stopped in the meantime: fine.
            Err(e) if !dom.is_active().unwrap_or(true) => {
                tracing::debug!(uuid, "guest stopped before destroy: {e}")
            }
            other => other?,
        }
    }
    let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
    Ok(dom.undefine_flags(flags)?)
}

/// The running guest's primary screen, as the image bytes libvirt sends and their
/// MIME type (QEMU sends PNG or PPM).
pub fn screenshot(conn: &Connect, uuid: &str) -> Result<(Vec<u8>, String)> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    let stream = Stream::new(conn, 0)?;
    let mime = dom.screenshot(&stream, 0, 0)?;
    let mut image = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.recv(&mut buf)? as usize;
        if n == 0 {
            break;
        }
        image.extend_from_slice(&buf[..n]);
        if image.len() > MAX_SCREENSHOT_BYTES {
            let _ = stream.abort();
            return Err(Error::Internal("screenshot larger than 32 MiB".into()));
        }
    }
    stream.finish()?;
    Ok((image, mime))
}

/// A socket connected to the guest's VNC server, as `virDomainOpenGraphicsFD` gives it.
pub fn open_console(conn: &Connect, uuid: &str) -> Result<OwnedFd> {
    let dom = conn.lookup_domain_by_uuid_string(uuid)?;
    let fd = dom.open_graphics_fd(0, 0)?;
    // SAFETY: libvirt hands over a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A guest's record: its state, screen and metadata as it runs now, its devices as
/// its stored definition has them (what changes are made against, and what its next
/// boot has; `pending_changes` tells when the running guest differs).
fn read(dom: &Domain) -> Result<DomainRecord> {
    // info() reports a vanished domain as an error, unlike state() (virt 0.5 drops it).
    let info = dom.info()?;
    let xml = dom.xml_desc(0)?;
    let doc = parse(&xml)?;
    // A shut-off guest's XML is its stored definition; only a running one has two.
    let stored_xml = if dom.is_active()? {
        Some(dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)?)
    } else {
        None
    };
    let stored_doc = stored_xml.as_deref().map(parse).transpose()?;
    let stored = stored_doc.as_ref().unwrap_or(&doc);
    let (icon, created_volumes) = domain_xml::read_metadata(&doc);
    Ok(DomainRecord {
        uuid: dom.uuid_string()?,
        name: dom.name()?,
        state: vm_state(info.state),
        memory_mib: info.memory / 1024,
        cpus: info.nr_virt_cpu,
        autostart: dom.autostart()?,
        title: root_text(&doc, "title"),
        description: root_text(&doc, "description"),
        pending_changes: stored_doc.is_some() && hardware(&doc) != hardware(stored),
        graphics_type: graphics_type(&doc),
        nics: nics(stored),
        drives: drives(stored),
        icon,
        created_volumes,
    })
}

fn parse(xml: &str) -> Result<roxmltree::Document<'_>> {
    roxmltree::Document::parse(xml)
        .map_err(|e| Error::Internal(format!("libvirt sent unreadable domain XML: {e}")))
}

fn vm_state(state: DomainStateEnum) -> VmState {
    match state {
        Enum::Known(DomainState::Running) => VmState::Running,
        Enum::Known(DomainState::Blocked) => VmState::Blocked,
        Enum::Known(DomainState::Paused) => VmState::Paused,
        Enum::Known(DomainState::Shutdown) => VmState::Shutdown,
        Enum::Known(DomainState::Shutoff) => VmState::Shutoff,
        Enum::Known(DomainState::Crashed) => VmState::Crashed,
        Enum::Known(DomainState::PMSuspended) => VmState::PmSuspended,
        Enum::Known(DomainState::NoState) | Enum::Unknown(_) => VmState::NoState,
    }
}

fn graphics_type(doc: &roxmltree::Document) -> String {
    doc.descendants()
        .filter(|n| n.has_tag_name("graphics"))
        .filter_map(|n| n.attribute("type"))
        .find(|t| *t == "vnc")
        .unwrap_or_default()
        .to_owned()
}

/// The devices of `<devices>` with this tag.
fn devices<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    tag: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children())
        .filter(move |n| n.has_tag_name(tag))
}

/// The text of the domain's top-level element `tag` (`<title>`, `<memory>`), or empty.
fn root_text(doc: &roxmltree::Document, tag: &str) -> String {
    doc.root_element()
        .children()
        .find(|n| n.has_tag_name(tag))
        .and_then(|n| n.text())
        .unwrap_or_default()
        .to_owned()
}

/// An attribute of the first child element named `tag`, or empty.
fn child_attr(node: roxmltree::Node, tag: &str, attr: &str) -> String {
    node.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.attribute(attr))
        .unwrap_or_default()
        .to_owned()
}

fn nics(doc: &roxmltree::Document) -> Vec<Nic> {
    devices(doc, "interface")
        .map(|n| {
            let kind = n.attribute("type").unwrap_or_default().to_owned();
            Nic {
                mac: child_attr(n, "mac", "address"),
                network: if kind == "network" {
                    child_attr(n, "source", "network")
                } else {
                    String::new()
                },
                model: child_attr(n, "model", "type"),
                kind,
            }
        })
        .collect()
}

/// Disks and CD-ROM drives (floppies and LUN passthrough are not shown).
fn drives(doc: &roxmltree::Document) -> Vec<Drive> {
    devices(doc, "disk")
        .filter_map(|n| {
            let kind = match n.attribute("device").unwrap_or("disk") {
                "disk" => DriveKind::Disk,
                "cdrom" => DriveKind::Cdrom,
                _ => return None,
            };
            let source = n.children().find(|c| c.has_tag_name("source"));
            let path = source
                .and_then(|s| {
                    s.attribute("file")
                        .or_else(|| s.attribute("dev"))
                        .or_else(|| s.attribute("name"))
                })
                .unwrap_or_default()
                .to_owned();
            Some(Drive {
                dev: child_attr(n, "target", "dev"),
                kind,
                path,
                bus: child_attr(n, "target", "bus"),
                format: child_attr(n, "driver", "type"),
            })
        })
        .collect()
}

/// What a restart would change: memory, CPUs, NICs and drives.
#[derive(Debug, PartialEq, Eq)]
struct Hardware {
    memory: String,
    vcpu: String,
    vcpu_current: String,
    nics: Vec<(String, String, String)>,
    drives: Vec<(String, String)>,
}

fn hardware(doc: &roxmltree::Document) -> Hardware {
    Hardware {
        memory: root_text(doc, "memory"),
        vcpu: root_text(doc, "vcpu"),
        vcpu_current: child_attr(doc.root_element(), "vcpu", "current"),
        nics: nics(doc)
            .into_iter()
            .map(|n| (n.mac, n.network, n.model))
            .collect(),
        drives: drives(doc).into_iter().map(|d| (d.dev, d.path)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphics_type_finds_vnc_among_displays() {
        let xml = "<domain><devices><graphics type='spice'/><graphics type='vnc' port='-1'/></devices></domain>";
        assert_eq!(graphics_type(&doc(xml)), "vnc");
    }

    #[test]
    fn drives_cover_files_block_devices_and_empty_cdroms() {
        let xml = "<domain><devices>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
              <source file='/p/a.qcow2'/><target dev='vda' bus='virtio'/></disk>\
            <disk type='block'><source dev='/dev/vg/b'/><target dev='vdb' bus='virtio'/></disk>\
            <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>\
            <disk type='file' device='floppy'><target dev='fda' bus='fdc'/></disk>\
            <interface type='network'><source network='default'/></interface>\
            </devices></domain>";
        let drives = drives(&doc(xml));
        let summary: Vec<_> = drives
            .iter()
            .map(|d| {
                (
                    d.dev.as_str(),
                    d.kind,
                    d.path.as_str(),
                    d.bus.as_str(),
                    d.format.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("vda", DriveKind::Disk, "/p/a.qcow2", "virtio", "qcow2"),
                ("vdb", DriveKind::Disk, "/dev/vg/b", "virtio", ""),
                ("hdc", DriveKind::Cdrom, "", "ide", ""),
            ]
        );
    }

    #[test]
    fn nics_keep_type_mac_network_and_model() {
        let xml = "<domain><devices>\
            <interface type='network'><mac address='52:54:00:00:00:01'/>\
              <source network='lab&amp;1' portid='1b2c' bridge='virbr1'/><model type='virtio'/></interface>\
            <interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>\
            <interface type='user'/>\
            </devices></domain>";
        let nics = nics(&doc(xml));
        let summary: Vec<_> = nics
            .iter()
            .map(|n| {
                (
                    n.mac.as_str(),
                    n.kind.as_str(),
                    n.network.as_str(),
                    n.model.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("52:54:00:00:00:01", "network", "lab&1", "virtio"),
                ("52:54:00:00:00:02", "bridge", "", ""),
                ("", "user", "", ""),
            ]
        );
    }

    #[test]
    fn hardware_differs_in_what_a_restart_changes_only() {
        let live = "<domain><memory unit='KiB'>524288</memory><vcpu current='1'>2</vcpu>\
            <devices><interface type='network'><mac address='52:54:00:00:00:01'/>\
            <source network='default' portid='x' bridge='virbr0'/><alias name='net0'/></interface>\
            </devices></domain>";
        let same = "<domain><memory unit='KiB'>524288</memory><vcpu current='1'>2</vcpu>\
            <devices><interface type='network'><mac address='52:54:00:00:00:01'/>\
            <source network='default'/></interface></devices></domain>";
        assert_eq!(hardware(&doc(live)), hardware(&doc(same)));
        let more_cpus = same.replace("current='1'>2", "current='2'>2");
        assert_ne!(hardware(&doc(live)), hardware(&doc(&more_cpus)));
        let other_network = same.replace("network='default'", "network='lab'");
        assert_ne!(hardware(&doc(live)), hardware(&doc(&other_network)));
    }

    #[test]
    fn graphics_type_is_empty_without_vnc() {
        assert_eq!(graphics_type(&doc("<domain><devices/></domain>")), "");
    }

    fn doc(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).unwrap()
    }

    #[test]
    fn test_driver_domains_are_listed_with_state_and_memory() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        let doms = list_all(&conn).unwrap();
        let test = doms.iter().find(|d| d.name == "test").expect("test domain");
        assert_eq!(test.state, VmState::Running);
        assert!(test.memory_mib > 0);
        let again = by_uuid(&conn, &test.uuid).unwrap().unwrap();
        assert_eq!(&again, test);
        assert!(by_uuid(&conn, "00000000-0000-0000-0000-000000000000")
            .unwrap()
            .is_none());
    }

    #[test]
    fn network_exists_on_the_test_driver() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        assert!(network_exists(&conn, "default").unwrap());
        assert!(!network_exists(&conn, "kimchi-unit-no-such-network").unwrap());
    }
}
