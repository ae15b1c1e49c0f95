//! Domains in libvirt: reading them into records, defining, power, undefining,
//! screenshots and console descriptors.

use std::os::fd::{FromRawFd, OwnedFd};

use kimchi_dbus::VmState;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::enumutil::Enum;
use virt::stream::Stream;
use virt::sys;

use super::domain_xml;
use crate::engine::hypervisor::{DomainRecord, GuestDefinition, Power};
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
    }
    read(&dom)
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

fn read(dom: &Domain) -> Result<DomainRecord> {
    // info() reports a vanished domain as an error, unlike state() (virt 0.5 drops it).
    let info = dom.info()?;
    let xml = dom.xml_desc(0)?;
    let doc = roxmltree::Document::parse(&xml)
        .map_err(|e| Error::Internal(format!("libvirt sent unreadable domain XML: {e}")))?;
    let (icon, created_volumes) = domain_xml::read_metadata(&doc);
    Ok(DomainRecord {
        uuid: dom.uuid_string()?,
        name: dom.name()?,
        state: vm_state(info.state),
        memory_mib: info.memory / 1024,
        graphics_type: graphics_type(&doc),
        disk_paths: disk_paths(&doc),
        icon,
        created_volumes,
        networks: networks(&doc),
    })
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

fn disk_paths(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("source") && n.parent().is_some_and(|p| p.has_tag_name("disk")))
        .filter_map(|n| n.attribute("file").or_else(|| n.attribute("dev")))
        .map(str::to_owned)
        .collect()
}

/// The libvirt networks the guest's NICs are plugged into, each once, in order.
fn networks(doc: &roxmltree::Document) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let sources = doc
        .descendants()
        .filter(|n| n.has_tag_name("interface") && n.attribute("type") == Some("network"))
        .filter_map(|n| n.children().find(|c| c.has_tag_name("source")))
        .filter_map(|s| s.attribute("network"));
    for name in sources {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphics_type_finds_vnc_among_displays() {
        let xml = "<domain><devices><graphics type='spice'/><graphics type='vnc' port='-1'/></devices></domain>";
        assert_eq!(graphics_type(&parse(xml)), "vnc");
    }

    #[test]
    fn disk_paths_cover_files_and_block_devices() {
        let xml = "<domain><devices>\
            <disk type='file'><source file='/p/a.qcow2'/><target dev='vda'/></disk>\
            <disk type='block'><source dev='/dev/vg/b'/></disk>\
            <disk type='file' device='cdrom'><target dev='hdc'/></disk>\
            <interface type='network'><source network='default'/></interface>\
            </devices></domain>";
        assert_eq!(disk_paths(&parse(xml)), ["/p/a.qcow2", "/dev/vg/b"]);
    }

    #[test]
    fn networks_are_those_of_network_interfaces() {
        let xml = "<domain><devices>\
            <disk type='file'><source file='/p/a.qcow2'/></disk>\
            <interface type='network'><source network='default'/><model type='virtio'/></interface>\
            <interface type='bridge'><source bridge='br0'/></interface>\
            <interface type='network'>\
              <source network='lab&amp;1' portid='1b2c' bridge='virbr1'/></interface>\
            <interface type='network'><source network='default'/></interface>\
            <interface type='user'/>\
            </devices></domain>";
        assert_eq!(networks(&parse(xml)), ["default", "lab&1"]);
        assert!(networks(&parse("<domain><devices/></domain>")).is_empty());
    }

    #[test]
    fn graphics_type_is_empty_without_vnc() {
        assert_eq!(graphics_type(&parse("<domain><devices/></domain>")), "");
    }

    fn parse(xml: &str) -> roxmltree::Document<'_> {
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
