//! The libvirt definition of a new guest, written with the escaping XML writer, and
//! the kimchi metadata read back from a domain's XML.

use super::xml::Element;
use crate::engine::hypervisor::{Cdrom, GuestDefinition};

/// Namespace of kimchi's `<metadata>` element in domain XML.
pub const METADATA_NS: &str = "https://kimchi-project.github.io/kimchi/metadata/vm/1";

/// The libvirt definition of `def`.
pub fn guest_xml(def: &GuestDefinition) -> String {
    let mut devices = Element::new("devices");
    for disk in &def.disks {
        devices = devices.child(
            Element::new("disk")
                .attr("type", "file")
                .attr("device", "disk")
                .child(
                    Element::new("driver")
                        .attr("name", "qemu")
                        .attr("type", disk.format.as_str()),
                )
                .child(Element::new("source").attr("file", disk.path.as_str()))
                .child(
                    Element::new("target")
                        .attr("dev", def.disk_bus.target(disk.index))
                        .attr("bus", def.disk_bus.word()),
                ),
        );
    }
    if let Some(cdrom) = &def.cdrom {
        devices = devices.child(cdrom_xml(cdrom));
    }
    if let Some(network) = &def.network {
        devices = devices.child(
            Element::new("interface")
                .attr("type", "network")
                .child(Element::new("source").attr("network", network.as_str()))
                .child(Element::new("model").attr("type", def.nic_model.as_str())),
        );
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

    let mut metadata = Element::new("kimchi:vm")
        .attr("xmlns:kimchi", METADATA_NS)
        .child(Element::leaf("kimchi:icon", def.icon.as_str()));
    for volume in &def.created_volumes {
        metadata = metadata.child(Element::leaf("kimchi:created-volume", volume.as_str()));
    }

    Element::new("domain")
        .attr("type", if def.kvm { "kvm" } else { "qemu" })
        .child(Element::leaf("name", def.name.as_str()))
        .child(Element::new("metadata").child(metadata))
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

fn cdrom_xml(cdrom: &Cdrom) -> Element {
    let disk = match cdrom {
        Cdrom::File(path) => Element::new("disk")
            .attr("type", "file")
            .child(Element::new("source").attr("file", path.as_str())),
        Cdrom::Remote {
            protocol,
            host,
            port,
            path,
        } => Element::new("disk").attr("type", "network").child(
            Element::new("source")
                .attr("protocol", protocol.as_str())
                .attr("name", path.as_str())
                .child(
                    Element::new("host")
                        .attr("name", host.as_str())
                        .attr("port", port.to_string()),
                ),
        ),
    };
    disk.attr("device", "cdrom")
        .child(
            Element::new("driver")
                .attr("name", "qemu")
                .attr("type", "raw"),
        )
        .child(Element::new("target").attr("dev", "hdc").attr("bus", "ide"))
        .child(Element::new("readonly"))
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
    fn foreign_domains_have_no_metadata() {
        let doc = roxmltree::Document::parse("<domain><metadata/></domain>").unwrap();
        assert_eq!(read_metadata(&doc), (String::new(), Vec::new()));
    }
}
