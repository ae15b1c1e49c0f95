use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::enumutil::Enum;

use crate::error::{Error, Result};

/// What the model keeps of a libvirt domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    pub uuid: String,
    pub name: String,
    pub state: &'static str,
    pub memory_mib: u64,
    /// `vnc`, or empty when the guest has no VNC display.
    pub graphics_type: String,
    /// Host paths of the guest's disks and CD-ROMs.
    pub disk_paths: Vec<String>,
}

pub fn list_all(conn: &Connect) -> Result<Vec<DomainRecord>> {
    let mut records = Vec::new();
    for dom in conn.list_all_domains(0)? {
        match read(&dom) {
            Ok(r) => records.push(r),
            // Undefined between listing and reading: the event for it follows.
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(records)
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

fn read(dom: &Domain) -> Result<DomainRecord> {
    // info() reports a vanished domain as an error, unlike state() (virt 0.5 drops it).
    let info = dom.info()?;
    let xml = dom.xml_desc(0)?;
    Ok(DomainRecord {
        uuid: dom.uuid_string()?,
        name: dom.name()?,
        state: state_word(info.state),
        memory_mib: info.memory / 1024,
        graphics_type: graphics_type(&xml),
        disk_paths: disk_paths(&xml),
    })
}

fn state_word(state: DomainStateEnum) -> &'static str {
    match state {
        Enum::Known(DomainState::NoState) => "nostate",
        Enum::Known(DomainState::Running) => "running",
        Enum::Known(DomainState::Blocked) => "blocked",
        Enum::Known(DomainState::Paused) => "paused",
        Enum::Known(DomainState::Shutdown) => "shutdown",
        Enum::Known(DomainState::Shutoff) => "shutoff",
        Enum::Known(DomainState::Crashed) => "crashed",
        Enum::Known(DomainState::PMSuspended) => "pmsuspended",
        Enum::Unknown(_) => "nostate",
    }
}

fn graphics_type(xml: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return String::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("graphics"))
        .filter_map(|n| n.attribute("type"))
        .find(|t| *t == "vnc")
        .unwrap_or_default()
        .to_owned()
}

fn disk_paths(xml: &str) -> Vec<String> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("source") && n.parent().is_some_and(|p| p.has_tag_name("disk")))
        .filter_map(|n| n.attribute("file").or_else(|| n.attribute("dev")))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphics_type_finds_vnc_among_displays() {
        let xml = "<domain><devices><graphics type='spice'/><graphics type='vnc' port='-1'/></devices></domain>";
        assert_eq!(graphics_type(xml), "vnc");
    }

    #[test]
    fn disk_paths_cover_files_and_block_devices() {
        let xml = "<domain><devices>\
            <disk type='file'><source file='/p/a.qcow2'/><target dev='vda'/></disk>\
            <disk type='block'><source dev='/dev/vg/b'/></disk>\
            <disk type='file' device='cdrom'><target dev='hdc'/></disk>\
            <interface type='network'><source network='default'/></interface>\
            </devices></domain>";
        assert_eq!(disk_paths(xml), ["/p/a.qcow2", "/dev/vg/b"]);
    }

    #[test]
    fn graphics_type_is_empty_without_vnc() {
        assert_eq!(graphics_type("<domain><devices/></domain>"), "");
        assert_eq!(graphics_type("not xml"), "");
    }

    #[test]
    fn test_driver_domains_are_listed_with_state_and_memory() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        let doms = list_all(&conn).unwrap();
        let test = doms.iter().find(|d| d.name == "test").expect("test domain");
        assert_eq!(test.state, "running");
        assert!(test.memory_mib > 0);
        let again = by_uuid(&conn, &test.uuid).unwrap().unwrap();
        assert_eq!(&again, test);
        assert!(by_uuid(&conn, "00000000-0000-0000-0000-000000000000")
            .unwrap()
            .is_none());
    }
}
