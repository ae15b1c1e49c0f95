//! Domain XML written with the escaping XML writer: a new guest's definition, the
//! devices added to or changed in a guest, kimchi's metadata; and that metadata read
//! back from a domain's XML.

use super::xml::Element;
use crate::engine::hypervisor::{Cdrom, Drive, DriveKind, GuestDefinition, NicDefinition};

/// Namespace of kimchi's `<metadata>` element in domain XML.
pub const METADATA_NS: &str = "https://kimchi-project.github.io/kimchi/metadata/vm/1";
/// The prefix libvirt gives that namespace when kimchid sets the metadata.
pub const METADATA_KEY: &str = "kimchi";

/// The libvirt definition of `def`.
pub fn guest_xml(def: &GuestDefinition) -> String {
    let mut devices = Element::new("devices");
    for disk in &def.disks {
        devices = devices.child(drive_xml(&Drive {
            dev: def.disk_bus.target(disk.index),
            kind: DriveKind::Disk,
            path: disk.path.clone(),
            bus: def.disk_bus.word().to_owned(),
            format: disk.format.clone(),
        }));
    }
    match &def.cdrom {
        Some(Cdrom::File(path)) => devices = devices.child(drive_xml(&cdrom(path))),
        Some(Cdrom::Remote {
            protocol,
            host,
            port,
            path,
        }) => devices = devices.child(remote_cdrom_xml(protocol, host, *port, path)),
        None => {}
    }
    if let Some(network) = &def.network {
        devices = devices.child(nic_xml(&NicDefinition {
            // libvirt chooses the MAC of a new guest's NIC.
            mac: String::new(),
            network: network.clone(),
            model: def.nic_model.clone(),
        }));
    }
    // The console reaches VNC through virDomainOpenGraphicsFD only: no TCP port.
    devices = devices
        .child(
            Element::new("graphics")
                .attr("type", "vnc")
                .child(Element::new("listen").attr("type", "none")),
        )
        .child(Element::new("video").child(Element::new("model").attr("type", "vga")))
        .child(
            Element::new("input")
                .attr("type", "tablet")
                .attr("bus", "usb"),
        )
        .child(Element::new("memballoon").attr("model", "virtio"));

    Element::new("domain")
        .attr("type", if def.kvm { "kvm" } else { "qemu" })
        .child(Element::leaf("name", def.name.as_str()))
        .child(Element::leaf("uuid", def.uuid.as_str()))
        .child(Element::new("metadata").child(metadata_xml(
            Namespace::Declared,
            &def.icon,
            &def.created_volumes,
        )))
        .child(Element::leaf("memory", def.memory_mib.to_string()).attr("unit", "MiB"))
        .child(Element::leaf("vcpu", def.cpus.to_string()))
        .child(
            Element::new("os")
                .child(Element::leaf("type", "hvm"))
                .child(Element::new("boot").attr("dev", "hd"))
                .child(Element::new("boot").attr("dev", "cdrom")),
        )
        .child(
            Element::new("features")
                .child(Element::new("acpi"))
                .child(Element::new("apic")),
        )
        .child(Element::new("clock").attr("offset", "utc"))
        .child(Element::leaf("on_poweroff", "destroy"))
        .child(Element::leaf("on_reboot", "restart"))
        .child(Element::leaf("on_crash", "restart"))
        .child(devices)
        .render()
}

/// The CD-ROM drive of a new guest: IDE `hdc`, as Kimchi made them.
fn cdrom(path: &str) -> Drive {
    Drive {
        dev: "hdc".into(),
        kind: DriveKind::Cdrom,
        path: path.to_owned(),
        bus: "ide".into(),
        format: "raw".into(),
    }
}

/// A `network` NIC; an empty MAC or model is left to libvirt.
pub fn nic_xml(nic: &NicDefinition) -> Element {
    let mut element = Element::new("interface").attr("type", "network");
    if !nic.mac.is_empty() {
        element = element.child(Element::new("mac").attr("address", nic.mac.as_str()));
    }
    element = element.child(Element::new("source").attr("network", nic.network.as_str()));
    if !nic.model.is_empty() {
        element = element.child(Element::new("model").attr("type", nic.model.as_str()));
    }
    element
}

/// A disk or CD-ROM drive; a path under `/dev/` is a block device, an empty one an
/// empty CD-ROM drive.
pub fn drive_xml(drive: &Drive) -> Element {
    let block = drive.path.starts_with("/dev/");
    let mut element = Element::new("disk")
        .attr("type", if block { "block" } else { "file" })
        .attr("device", drive.kind.word());
    if !drive.format.is_empty() {
        element = element.child(
            Element::new("driver")
                .attr("name", "qemu")
                .attr("type", drive.format.as_str()),
        );
    }
    if !drive.path.is_empty() {
        let attr = if block { "dev" } else { "file" };
        element = element.child(Element::new("source").attr(attr, drive.path.as_str()));
    }
    element = element.child(
        Element::new("target")
            .attr("dev", drive.dev.as_str())
            .attr("bus", drive.bus.as_str()),
    );
    if drive.kind == DriveKind::Cdrom {
        element = element.child(Element::new("readonly"));
    }
    element
}

/// A CD-ROM QEMU streams over the network.
fn remote_cdrom_xml(protocol: &str, host: &str, port: u16, path: &str) -> Element {
    Element::new("disk")
        .attr("type", "network")
        .attr("device", "cdrom")
        .child(
            Element::new("driver")
                .attr("name", "qemu")
                .attr("type", "raw"),
        )
        .child(
            Element::new("source")
                .attr("protocol", protocol)
                .attr("name", path)
                .child(
                    Element::new("host")
                        .attr("name", host)
                        .attr("port", port.to_string()),
                ),
        )
        .child(Element::new("target").attr("dev", "hdc").attr("bus", "ide"))
        .child(Element::new("readonly"))
}

/// How kimchi's metadata element names its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Declared on the element, for a whole domain definition.
    Declared,
    /// Left out: `virDomainSetMetadata` puts it on every element itself.
    Injected,
}

/// Kimchi's metadata: the template's icon and the volumes made for the guest.
pub fn metadata_xml(ns: Namespace, icon: &str, created_volumes: &[String]) -> Element {
    let (vm, icon_tag, volume_tag) = match ns {
        Namespace::Declared => ("kimchi:vm", "kimchi:icon", "kimchi:created-volume"),
        Namespace::Injected => ("vm", "icon", "created-volume"),
    };
    let mut metadata = Element::new(vm);
    if ns == Namespace::Declared {
        metadata = metadata.attr("xmlns:kimchi", METADATA_NS);
    }
    metadata = metadata.child(Element::leaf(icon_tag, icon));
    for volume in created_volumes {
        metadata = metadata.child(Element::leaf(volume_tag, volume.as_str()));
    }
    metadata
}

/// Kimchi's metadata in a domain's XML: the icon and the volumes it created.
pub fn read_metadata(doc: &roxmltree::Document) -> (String, Vec<String>) {
    let Some(vm) = doc
        .descendants()
        .find(|n| n.has_tag_name((METADATA_NS, "vm")))
    else {
        return (String::new(), Vec::new());
    };
    let texts = |tag: &'static str| {
        vm.children()
            .filter(move |n| n.has_tag_name((METADATA_NS, tag)))
            .map(|n| n.text().unwrap_or_default().to_owned())
    };
    let icon = texts("icon").next().unwrap_or_default();
    (icon, texts("created-volume").collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hypervisor::{DiskBus, GuestDisk};

    fn guest() -> GuestDefinition {
        GuestDefinition {
            name: "web<1>&'\"".into(),
            uuid: "0b6a7c52-3f0e-4d7a-9a57-0c6f1e2d3a4b".into(),
            kvm: true,
            memory_mib: 2048,
            cpus: 2,
            disk_bus: DiskBus::Virtio,
            disks: vec![
                GuestDisk {
                    index: 0,
                    path: "/var/lib/libvirt/images/web-0.img".into(),
                    format: "qcow2".into(),
                },
                GuestDisk {
                    index: 1,
                    path: "/p/web-1.img".into(),
                    format: "qcow2".into(),
                },
            ],
            cdrom: Some(Cdrom::File("/isos/a b.iso".into())),
            network: Some("default".into()),
            nic_model: "virtio".into(),
            icon: "images/icon-debian.png".into(),
            created_volumes: vec!["/var/lib/libvirt/images/web-0.img".into()],
        }
    }

    #[test]
    fn definition_carries_every_setting_and_escapes_names() {
        let xml = guest_xml(&guest());
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("type"), Some("kvm"));
        let text = |tag: &str| {
            root.children()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.text())
                .unwrap()
                .to_owned()
        };
        assert_eq!(text("name"), "web<1>&'\"");
        assert_eq!(text("memory"), "2048");
        assert_eq!(text("vcpu"), "2");
        let targets: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("target"))
            .map(|n| (n.attribute("dev").unwrap(), n.attribute("bus").unwrap()))
            .collect();
        assert_eq!(
            targets,
            [("vda", "virtio"), ("vdb", "virtio"), ("hdc", "ide")]
        );
        let nic = doc
            .descendants()
            .find(|n| n.has_tag_name("interface"))
            .unwrap();
        assert_eq!(nic.attribute("type"), Some("network"));
        let graphics = doc
            .descendants()
            .find(|n| n.has_tag_name("graphics"))
            .unwrap();
        assert_eq!(graphics.attribute("type"), Some("vnc"));
        assert_eq!(graphics.attribute("port"), None);
        assert_eq!(
            read_metadata(&doc),
            (
                "images/icon-debian.png".to_owned(),
                vec!["/var/lib/libvirt/images/web-0.img".to_owned()]
            )
        );
    }

    #[test]
    fn qemu_guest_without_network_or_cdrom() {
        let mut g = guest();
        g.kvm = false;
        g.network = None;
        g.cdrom = None;
        g.disk_bus = DiskBus::Ide;
        let xml = guest_xml(&g);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().attribute("type"), Some("qemu"));
        assert!(!doc.descendants().any(|n| n.has_tag_name("interface")));
        assert!(!doc
            .descendants()
            .any(|n| n.attribute("device") == Some("cdrom")));
        let devs: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("target"))
            .filter_map(|n| n.attribute("dev"))
            .collect();
        assert_eq!(devs, ["hda", "hdb"]);
    }

    #[test]
    fn remote_cdrom_is_a_network_disk() {
        let mut g = guest();
        g.cdrom = Some(Cdrom::Remote {
            protocol: "https".into(),
            host: "mirror.example.org".into(),
            port: 443,
            path: "/d/x.iso?a=1&b=2".into(),
        });
        let xml = guest_xml(&g);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let source = doc
            .descendants()
            .find(|n| n.has_tag_name("source") && n.attribute("protocol").is_some())
            .unwrap();
        assert_eq!(source.attribute("protocol"), Some("https"));
        assert_eq!(source.attribute("name"), Some("/d/x.iso?a=1&b=2"));
        let host = source.first_element_child().unwrap();
        assert_eq!(host.attribute("port"), Some("443"));
    }

    #[test]
    fn device_elements_escape_values_and_leave_empty_ones_to_libvirt() {
        let nic = nic_xml(&NicDefinition {
            mac: "52:54:00:00:00:01".into(),
            network: "lab'<1>".into(),
            model: String::new(),
        })
        .render();
        let doc = roxmltree::Document::parse(&nic).unwrap();
        let source = doc
            .descendants()
            .find(|n| n.has_tag_name("source"))
            .unwrap();
        assert_eq!(source.attribute("network"), Some("lab'<1>"));
        assert!(!doc.descendants().any(|n| n.has_tag_name("model")));

        let block = drive_xml(&Drive {
            dev: "vdb".into(),
            kind: DriveKind::Disk,
            path: "/dev/vg/data".into(),
            bus: "virtio".into(),
            format: "raw".into(),
        })
        .render();
        let doc = roxmltree::Document::parse(&block).unwrap();
        assert_eq!(doc.root_element().attribute("type"), Some("block"));
        let source = doc
            .descendants()
            .find(|n| n.has_tag_name("source"))
            .unwrap();
        assert_eq!(source.attribute("dev"), Some("/dev/vg/data"));

        let empty = drive_xml(&Drive {
            path: String::new(),
            ..cdrom("x")
        })
        .render();
        let doc = roxmltree::Document::parse(&empty).unwrap();
        assert!(!doc.descendants().any(|n| n.has_tag_name("source")));
        assert!(doc.descendants().any(|n| n.has_tag_name("readonly")));
    }

    #[test]
    fn metadata_for_libvirt_to_namespace_has_no_prefix() {
        let xml = metadata_xml(Namespace::Injected, "i.png", &["/p/v.img".into()]).render();
        assert_eq!(
            xml,
            "<vm><icon>i.png</icon><created-volume>/p/v.img</created-volume></vm>"
        );
    }

    #[test]
    fn foreign_domains_have_no_metadata() {
        let doc = roxmltree::Document::parse("<domain><metadata/></domain>").unwrap();
        assert_eq!(read_metadata(&doc), (String::new(), Vec::new()));
    }
}
