//! Virtual networks in libvirt: reading them into records, defining, starting,
//! stopping, undefining, autostart. Callers pass names already checked; XML is built
//! with the writer only.

use std::net::Ipv4Addr;

use virt::connect::Connect;
use virt::network::Network;

use super::xml::Element;
use crate::engine::hypervisor::{Forward, NetworkDefinition, NetworkRecord};
use crate::error::{Error, Result};

pub fn list_networks(conn: &Connect) -> Result<Vec<NetworkRecord>> {
    super::read_listed(conn.list_all_networks(0)?, read)
}

/// The network's current record, or `None` when it no longer exists.
pub fn by_uuid(conn: &Connect, uuid: &str) -> Result<Option<NetworkRecord>> {
    let found = conn
        .lookup_network_by_uuid_string(uuid)
        .map_err(Error::from)
        .and_then(|net| read(&net));
    match found {
        Ok(record) => Ok(Some(record)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Defines a persistent network (not started).
pub fn define(conn: &Connect, def: &NetworkDefinition) -> Result<NetworkRecord> {
    let net = conn.define_network_xml(&network_xml(def))?;
    read(&net)
}

pub fn activate(conn: &Connect, name: &str) -> Result<NetworkRecord> {
    let net = lookup(conn, name)?;
    if net.is_active()? {
        return Err(Error::InvalidState(format!(
            "network '{name}' is already active"
        )));
    }
    net.create()?;
    read(&net)
}

pub fn deactivate(conn: &Connect, name: &str) -> Result<NetworkRecord> {
    let net = lookup(conn, name)?;
    if !net.is_active()? {
        return Err(Error::InvalidState(format!(
            "network '{name}' is not active"
        )));
    }
    let before = read(&net)?;
    net.destroy()?;
    match read(&net) {
        Ok(record) => Ok(record),
        // A transient network is gone once stopped; this is the last of it.
        Err(Error::NotFound(_)) => Ok(NetworkRecord {
            active: false,
            autostart: false,
            ..before
        }),
        Err(e) => Err(e),
    }
}

/// Forgets an inactive network.
pub fn undefine(conn: &Connect, name: &str) -> Result<()> {
    let net = lookup(conn, name)?;
    if net.is_active()? {
        return Err(Error::InvalidState(format!(
            "network '{name}' is active; deactivate it before deleting it"
        )));
    }
    Ok(net.undefine()?)
}

pub fn set_autostart(conn: &Connect, name: &str, autostart: bool) -> Result<NetworkRecord> {
    let net = lookup(conn, name)?;
    net.set_autostart(autostart)?;
    read(&net)
}

fn lookup(conn: &Connect, name: &str) -> Result<Network> {
    conn.lookup_network_by_name(name)
        .map_err(|e| match Error::from(e) {
            Error::NotFound(_) => Error::NotFound(format!("no network named '{name}'")),
            other => other,
        })
}

fn read(net: &Network) -> Result<NetworkRecord> {
    let xml = net.xml_desc(0)?;
    let facts = parse(&xml)?;
    Ok(NetworkRecord {
        uuid: net.uuid_string()?,
        name: net.name()?,
        active: net.is_active()?,
        autostart: net.autostart()?,
        persistent: net.is_persistent()?,
        connection: facts.connection,
        subnet: facts.subnet,
        dhcp_start: facts.dhcp_start,
        dhcp_end: facts.dhcp_end,
        interfaces: facts.interfaces,
        vlan_id: facts.vlan_id,
    })
}

/// What a network's XML says of how it is connected and addressed.
#[derive(Debug, Default, PartialEq, Eq)]
struct XmlFacts {
    connection: String,
    subnet: String,
    dhcp_start: String,
    dhcp_end: String,
    interfaces: Vec<String>,
    vlan_id: u32,
}

fn parse(xml: &str) -> Result<XmlFacts> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| Error::Internal(format!("libvirt sent unreadable network XML: {e}")))?;
    let root = doc.root_element();
    let forward = child(root, "forward");
    let bridge = child(root, "bridge").and_then(|b| b.attribute("name"));
    let mut forward_devs: Vec<String> = forward
        .into_iter()
        .flat_map(|f| f.children().filter(|n| n.has_tag_name("interface")))
        .filter_map(|n| n.attribute("dev"))
        .map(str::to_owned)
        .collect();
    // `<forward dev='eth0'>` is the short form of one `<interface dev='eth0'/>`.
    if forward_devs.is_empty() {
        forward_devs.extend(forward.and_then(|f| f.attribute("dev")).map(str::to_owned));
    }
    let connection = match forward.map(|f| f.attribute("mode").unwrap_or("nat")) {
        None => "isolated",
        Some("nat") => "nat",
        Some("bridge") if bridge.is_some() => "bridge",
        Some("bridge" | "private" | "vepa" | "passthrough") if !forward_devs.is_empty() => {
            "macvtap"
        }
        Some(mode) => mode,
    };
    let interfaces = match (connection, bridge) {
        ("bridge", Some(bridge)) => vec![bridge.to_owned()],
        _ => forward_devs,
    };

    let ip = root
        .children()
        .find(|n| n.has_tag_name("ip") && matches!(n.attribute("family"), None | Some("ipv4")));
    let subnet = ip.and_then(subnet).unwrap_or_default();
    let range = ip
        .and_then(|ip| child(ip, "dhcp"))
        .and_then(|dhcp| child(dhcp, "range"));
    let range_end = |end: &str| {
        range
            .and_then(|r| r.attribute(end))
            .unwrap_or_default()
            .to_owned()
    };
    let vlan_id = child(root, "vlan")
        .and_then(|v| child(v, "tag"))
        .and_then(|t| t.attribute("id"))
        .and_then(|id| id.parse().ok())
        .unwrap_or(0);
    Ok(XmlFacts {
        connection: connection.to_owned(),
        subnet,
        dhcp_start: range_end("start"),
        dhcp_end: range_end("end"),
        interfaces,
        vlan_id,
    })
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

/// `a.b.c.d/p` of the network an `<ip address netmask|prefix>` element is in.
fn subnet(ip: roxmltree::Node<'_, '_>) -> Option<String> {
    let address: Ipv4Addr = ip.attribute("address")?.parse().ok()?;
    let prefix = match (ip.attribute("prefix"), ip.attribute("netmask")) {
        (Some(prefix), _) => prefix.parse::<u32>().ok().filter(|p| *p <= 32)?,
        (None, Some(netmask)) => u32::from(netmask.parse::<Ipv4Addr>().ok()?).leading_ones(),
        // libvirt's default: the address's classful prefix.
        (None, None) => match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let network = Ipv4Addr::from(u32::from(address) & mask);
    Some(format!("{network}/{prefix}"))
}

/// The libvirt definition of `def`. For nat and isolated networks libvirt picks the
/// bridge (`virbrN`) itself.
fn network_xml(def: &NetworkDefinition) -> String {
    let mut network = Element::new("network").child(Element::leaf("name", def.name.as_str()));
    if let Some(uuid) = &def.uuid {
        network = network.child(Element::leaf("uuid", uuid.as_str()));
    }
    let with_address = match &def.forward {
        Forward::Nat => {
            network = network.child(Element::new("forward").attr("mode", "nat"));
            true
        }
        Forward::Isolated => true,
        Forward::Bridge { bridge } => {
            network = network
                .child(Element::new("forward").attr("mode", "bridge"))
                .child(Element::new("bridge").attr("name", bridge.as_str()));
            false
        }
        // libvirt's macvtap in bridge mode: guests reach each other and the outside.
        Forward::Macvtap { device } => {
            network = network.child(
                Element::new("forward")
                    .attr("mode", "bridge")
                    .child(Element::new("interface").attr("dev", device.as_str())),
            );
            false
        }
    };
    if let Some(address) = def.address.as_ref().filter(|_| with_address) {
        let mut ip = Element::new("ip")
            .attr("address", address.gateway.to_string())
            .attr("prefix", address.prefix.to_string());
        if let Some((start, end)) = address.dhcp {
            ip = ip.child(
                Element::new("dhcp").child(
                    Element::new("range")
                        .attr("start", start.to_string())
                        .attr("end", end.to_string()),
                ),
            );
        }
        network = network.child(ip);
    }
    network.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_error;
    use crate::engine::hypervisor::NetworkAddress;

    fn facts(xml: &str) -> XmlFacts {
        parse(xml).unwrap()
    }

    #[test]
    fn nat_network_with_netmask_and_dhcp() {
        let xml = "<network><name>default</name><uuid>u</uuid>\
            <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>\
            <bridge name='virbr0' stp='on' delay='0'/>\
            <ip address='192.168.122.1' netmask='255.255.255.0'>\
              <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip>\
            </network>";
        assert_eq!(
            facts(xml),
            XmlFacts {
                connection: "nat".into(),
                subnet: "192.168.122.0/24".into(),
                dhcp_start: "192.168.122.2".into(),
                dhcp_end: "192.168.122.254".into(),
                interfaces: vec![],
                vlan_id: 0,
            }
        );
    }

    #[test]
    fn forward_without_mode_is_nat_and_no_forward_is_isolated() {
        let nat = facts("<network><forward/><ip address='10.1.2.129' prefix='25'/></network>");
        assert_eq!(nat.connection, "nat");
        assert_eq!(nat.subnet, "10.1.2.128/25");
        assert_eq!((nat.dhcp_start.as_str(), nat.dhcp_end.as_str()), ("", ""));
        let isolated = facts(
            "<network><bridge name='virbr3'/>\
             <ip family='ipv6' address='fd00::1' prefix='64'/>\
             <ip address='172.16.5.1' prefix='16'/></network>",
        );
        assert_eq!(isolated.connection, "isolated");
        assert_eq!(isolated.subnet, "172.16.0.0/16");
        assert!(isolated.interfaces.is_empty());
    }

    #[test]
    fn bridge_and_macvtap_networks_name_their_host_interface() {
        let bridge = facts(
            "<network><forward mode='bridge'/><bridge name='br0'/>\
             <vlan><tag id='42'/></vlan></network>",
        );
        assert_eq!(bridge.connection, "bridge");
        assert_eq!(bridge.interfaces, ["br0"]);
        assert_eq!(bridge.vlan_id, 42);
        assert_eq!(bridge.subnet, "");

        let macvtap = facts(
            "<network><forward mode='bridge'>\
             <interface dev='eth0'/><interface dev='eth1'/></forward></network>",
        );
        assert_eq!(macvtap.connection, "macvtap");
        assert_eq!(macvtap.interfaces, ["eth0", "eth1"]);
        for mode in ["private", "vepa", "passthrough"] {
            let xml = "<network><forward mode='M' dev='enp1s0'/></network>".replace('M', mode);
            let f = facts(&xml);
            assert_eq!(f.connection, "macvtap", "{mode}");
            assert_eq!(f.interfaces, ["enp1s0"], "{mode}");
        }
    }

    #[test]
    fn other_forward_modes_keep_libvirts_word() {
        let f = facts(
            "<network><forward mode='route' dev='eth0'/>\
             <ip address='10.0.0.1' netmask='255.0.0.0'/></network>",
        );
        assert_eq!(f.connection, "route");
        assert_eq!(f.interfaces, ["eth0"]);
        assert_eq!(f.subnet, "10.0.0.0/8");
        assert_eq!(
            facts("<network><forward mode='open'/></network>").connection,
            "open"
        );
        // An address libvirt would not give leaves the subnet empty, not an error.
        assert_eq!(
            facts("<network><ip address='x' prefix='24'/></network>").subnet,
            ""
        );
    }

    fn definition(forward: Forward) -> NetworkDefinition {
        NetworkDefinition {
            name: "lab<&'\">".into(),
            uuid: None,
            forward,
            address: Some(NetworkAddress {
                gateway: Ipv4Addr::new(192, 168, 50, 1),
                prefix: 24,
                dhcp: Some((
                    Ipv4Addr::new(192, 168, 50, 10),
                    Ipv4Addr::new(192, 168, 50, 99),
                )),
            }),
        }
    }

    #[test]
    fn nat_definition_has_forward_address_and_dhcp_and_escapes_the_name() {
        let mut def = definition(Forward::Nat);
        def.uuid = Some("0b6ad4a1-7c1f-4a0e-9d3c-8a1d2b3c4d5e".into());
        let xml = network_xml(&def);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "network");
        let tags: Vec<_> = root.children().map(|n| n.tag_name().name()).collect();
        assert_eq!(tags, ["name", "uuid", "forward", "ip"]);
        let text = |tag: &str| {
            root.children()
                .find(|n| n.has_tag_name(tag))
                .unwrap()
                .text()
        };
        assert_eq!(text("name"), Some("lab<&'\">"));
        assert_eq!(text("uuid"), Some("0b6ad4a1-7c1f-4a0e-9d3c-8a1d2b3c4d5e"));
        let forward = root.children().find(|n| n.has_tag_name("forward")).unwrap();
        assert_eq!(forward.attribute("mode"), Some("nat"));
        let ip = root.children().find(|n| n.has_tag_name("ip")).unwrap();
        assert_eq!(ip.attribute("address"), Some("192.168.50.1"));
        assert_eq!(ip.attribute("prefix"), Some("24"));
        let range = ip.descendants().find(|n| n.has_tag_name("range")).unwrap();
        assert_eq!(range.parent().unwrap().tag_name().name(), "dhcp");
        assert_eq!(range.attribute("start"), Some("192.168.50.10"));
        assert_eq!(range.attribute("end"), Some("192.168.50.99"));
        // What is written reads back the same.
        let f = facts(&xml);
        assert_eq!(f.connection, "nat");
        assert_eq!(f.subnet, "192.168.50.0/24");
    }

    #[test]
    fn isolated_definition_has_no_forward_and_dhcp_only_when_asked() {
        let mut def = definition(Forward::Isolated);
        def.address.as_mut().unwrap().dhcp = None;
        let xml = network_xml(&def);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let tags: Vec<_> = doc
            .root_element()
            .children()
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(tags, ["name", "ip"]);
        assert!(!doc.descendants().any(|n| n.has_tag_name("dhcp")));
        assert_eq!(facts(&xml).connection, "isolated");
    }

    #[test]
    fn bridge_and_macvtap_definitions_carry_no_address() {
        let xml = network_xml(&definition(Forward::Bridge {
            bridge: "br0\"/><x".into(),
        }));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        let tags: Vec<_> = root.children().map(|n| n.tag_name().name()).collect();
        assert_eq!(tags, ["name", "forward", "bridge"]);
        let bridge = root.children().find(|n| n.has_tag_name("bridge")).unwrap();
        assert_eq!(bridge.attribute("name"), Some("br0\"/><x"));
        assert_eq!(facts(&xml).connection, "bridge");

        let xml = network_xml(&definition(Forward::Macvtap {
            device: "eth0".into(),
        }));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let forward = doc
            .descendants()
            .find(|n| n.has_tag_name("forward"))
            .unwrap();
        assert_eq!(forward.attribute("mode"), Some("bridge"));
        let dev: Vec<_> = forward
            .children()
            .map(|n| (n.tag_name().name(), n.attribute("dev")))
            .collect();
        assert_eq!(dev, [("interface", Some("eth0"))]);
        assert!(!doc.descendants().any(|n| n.has_tag_name("ip")));
        assert!(!doc.descendants().any(|n| n.has_tag_name("bridge")));
        let f = facts(&xml);
        assert_eq!(
            (f.connection.as_str(), f.interfaces),
            ("macvtap", vec!["eth0".to_owned()])
        );
    }

    fn test_driver() -> Connect {
        Connect::open(Some("test:///default")).unwrap()
    }

    #[test]
    fn test_driver_default_network_is_listed() {
        let conn = test_driver();
        let nets = list_networks(&conn).unwrap();
        let default = nets.iter().find(|n| n.name == "default").expect("default");
        assert!(default.active);
        assert_eq!(default.connection, "nat");
        assert_eq!(default.subnet, "192.168.122.0/24");
        assert_eq!(
            by_uuid(&conn, &default.uuid).unwrap().as_ref(),
            Some(default)
        );
        assert_eq!(
            by_uuid(&conn, "00000000-0000-0000-0000-000000000000").unwrap(),
            None
        );
    }

    #[test]
    fn network_lifecycle_on_the_test_driver() {
        let conn = test_driver();
        let name = format!("kimchi-unit-net-{}", std::process::id());
        let mut def = definition(Forward::Nat);
        def.name = name.clone();
        let net = define(&conn, &def).unwrap();
        assert!(!net.active && net.persistent && !net.autostart);
        assert_eq!(net.connection, "nat");
        assert_eq!(net.subnet, "192.168.50.0/24");
        assert_eq!(
            (net.dhcp_start.as_str(), net.dhcp_end.as_str()),
            ("192.168.50.10", "192.168.50.99")
        );
        assert_error!(
            deactivate(&conn, &name),
            InvalidState,
            format!("network '{name}' is not active")
        );
        assert!(activate(&conn, &name).unwrap().active);
        assert_error!(
            activate(&conn, &name),
            InvalidState,
            format!("network '{name}' is already active")
        );
        assert!(set_autostart(&conn, &name, true).unwrap().autostart);
        assert!(!set_autostart(&conn, &name, false).unwrap().autostart);
        assert_error!(
            undefine(&conn, &name),
            InvalidState,
            format!("network '{name}' is active; deactivate it before deleting it")
        );
        let stopped = deactivate(&conn, &name).unwrap();
        assert!(!stopped.active);
        assert_eq!(stopped.uuid, net.uuid);

        // Defined anew under another name with the same uuid: same identity.
        undefine(&conn, &name).unwrap();
        assert_eq!(by_uuid(&conn, &net.uuid).unwrap(), None);
        let renamed = format!("{name}-b");
        def.name = renamed.clone();
        def.uuid = Some(net.uuid.clone());
        def.forward = Forward::Isolated;
        let again = define(&conn, &def).unwrap();
        assert_eq!(
            (again.uuid.as_str(), again.connection.as_str()),
            (net.uuid.as_str(), "isolated")
        );
        undefine(&conn, &renamed).unwrap();

        assert_error!(
            activate(&conn, &name),
            NotFound,
            format!("no network named '{name}'")
        );
        assert_error!(
            undefine(&conn, &name),
            NotFound,
            format!("no network named '{name}'")
        );
    }

    #[test]
    fn bridge_and_macvtap_networks_on_the_test_driver() {
        let conn = test_driver();
        let pid = std::process::id();
        for (suffix, forward, connection, interface) in [
            (
                "br",
                Forward::Bridge {
                    bridge: "br0".into(),
                },
                "bridge",
                "br0",
            ),
            (
                "mv",
                Forward::Macvtap {
                    device: "eth0".into(),
                },
                "macvtap",
                "eth0",
            ),
        ] {
            let mut def = definition(forward);
            def.name = format!("kimchi-unit-{suffix}-{pid}");
            let net = define(&conn, &def).unwrap();
            assert_eq!(net.connection, connection);
            assert_eq!(net.interfaces, [interface]);
            assert_eq!(net.subnet, "");
            undefine(&conn, &def.name).unwrap();
        }
    }
}
