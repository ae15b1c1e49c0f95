//! Virtual networks: what a definition may ask for, the subnet chosen when none is
//! given, which guests use a network, and renames that keep the network's identity.

use kimchi_dbus::{NetworkInfo, NetworkPatch, NetworkSpec, NetworkState, VmState};

use super::{adopt, assert_error, drain};
use crate::engine::hypervisor::HostEvent;
use crate::engine::model::Change;
use crate::engine::networks::Subnet;
use crate::engine::sim::{harness, Harness};
use crate::error::Error;

fn spec(name: &str, connection: &str, subnet: &str, interfaces: &[&str]) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        connection: connection.into(),
        subnet: subnet.into(),
        interfaces: interfaces.iter().map(|i| i.to_string()).collect(),
        vlan_id: 0,
    }
}

/// A nat network `lab` with the subnet the engine picks.
async fn lab(h: &Harness) -> NetworkInfo {
    h.engine
        .networks
        .create(spec("lab", "nat", "", &[]))
        .await
        .unwrap()
}

fn rename(to: &str) -> NetworkPatch {
    NetworkPatch {
        name: Some(to.into()),
        ..NetworkPatch::default()
    }
}

#[tokio::test]
async fn a_nat_network_without_subnet_gets_the_first_free_private_24_and_its_dhcp_range() {
    let h = harness().await;
    let net = lab(&h).await;
    // 192.168.122.0/24 is `default`'s; 192.168.100.0/24 is the first candidate.
    assert_eq!(net.subnet, "192.168.100.0/24");
    assert_eq!(
        (net.dhcp_start.as_str(), net.dhcp_end.as_str()),
        ("192.168.100.2", "192.168.100.254")
    );
    assert_eq!(
        (net.state, net.connection.as_str()),
        (NetworkState::Inactive, "nat")
    );
    let next = h
        .engine
        .networks
        .create(spec("lab2", "isolated", "", &[]))
        .await
        .unwrap();
    assert_eq!(next.subnet, "192.168.101.0/24");
    let names: Vec<String> = h
        .engine
        .networks
        .list()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["default", "lab", "lab2"]);
}

#[tokio::test]
async fn a_definition_the_rules_refuse_is_invalid_argument_and_defines_nothing() {
    let h = harness().await;
    for (spec, message) in [
        (
            spec("n", "nat", "192.168.122.0/24", &[]),
            "subnet 192.168.122.0/24 overlaps network 'default'",
        ),
        (
            spec("n", "nat", "10.0.0.0/16", &[]),
            "subnet 10.0.0.0/16 overlaps a route of the host (10.0.2.0/24)",
        ),
        (
            spec("n", "nat", "10.9.0.0/8", &[]),
            "invalid subnet '10.9.0.0/8': the prefix must be between /16 and /30",
        ),
        (
            spec("n", "nat", "10.9.8.7/24", &[]),
            "invalid subnet '10.9.8.7/24': host bits are set (the network is 10.9.8.0/24)",
        ),
        (
            spec("n", "nat", "10.9.8.0", &[]),
            "invalid subnet '10.9.8.0': expected an address and a prefix, like 192.168.100.0/24",
        ),
        (
            spec("n", "nat", "", &["eth0"]),
            "interfaces apply to bridge and macvtap networks, not to nat ones",
        ),
        (
            spec("n", "vepa", "", &[]),
            "unknown connection type 'vepa' (known: nat, isolated, bridge, macvtap)",
        ),
        (
            spec("n", "bridge", "", &["eth0"]),
            "'eth0' is a nic, not a Linux bridge; bridge networks join an existing bridge \
             (creating one could cut the host off its network)",
        ),
        (
            spec("n", "macvtap", "", &["br0"]),
            "'br0' is a bridge; macvtap networks need a nic, bond or vlan",
        ),
        (
            spec("n", "bridge", "", &["nope0"]),
            "the host has no network interface 'nope0'",
        ),
        (
            spec("n", "macvtap", "", &[]),
            "a macvtap network needs exactly one host interface in interfaces",
        ),
        (
            spec("n", "bridge", "10.9.8.0/24", &["br0"]),
            "a bridge network takes its addresses from the host's network; leave subnet out",
        ),
        (
            spec("a/b", "nat", "", &[]),
            "invalid network name 'a/b': it contains '/'",
        ),
    ] {
        let case = format!("{spec:?}");
        assert_error!(
            h.engine.networks.create(spec).await,
            InvalidArgument,
            message,
            "{case}"
        );
    }
    // Only the sim's own `default` was ever defined.
    assert_eq!(h.sim.calls("define_network"), 1);
    assert_eq!(h.engine.networks.list().len(), 1);
}

#[tokio::test]
async fn bridge_and_macvtap_networks_use_one_suitable_host_interface() {
    let h = harness().await;
    let bridge = h
        .engine
        .networks
        .create(spec("br", "bridge", "", &["br0"]))
        .await
        .unwrap();
    assert_eq!(
        (bridge.connection.as_str(), bridge.interfaces.as_slice()),
        ("bridge", &["br0".to_string()][..])
    );
    assert_eq!(bridge.subnet, "");
    let macvtap = h
        .engine
        .networks
        .create(spec("direct", "macvtap", "", &["bond0"]))
        .await
        .unwrap();
    assert_eq!(macvtap.connection, "macvtap");
}

#[tokio::test]
async fn vlan_ids_are_refused_with_the_reason() {
    let h = harness().await;
    let tagged = NetworkSpec {
        vlan_id: 10,
        ..spec("v", "bridge", "", &["br0"])
    };
    assert_error!(
        h.engine.networks.create(tagged).await,
        InvalidArgument,
        "vlan_id is not supported: tagged networks need Open vSwitch or a VLAN interface on \
         the host, which kimchid does not create; leave vlan_id out"
    );
}

#[tokio::test]
async fn a_duplicate_name_is_already_exists() {
    let h = harness().await;
    assert_error!(
        h.engine
            .networks
            .create(spec("default", "nat", "", &[]))
            .await,
        AlreadyExists,
        "a network named 'default' already exists"
    );
}

#[tokio::test]
async fn guests_attached_make_a_network_in_use_and_undeletable() {
    let mut h = harness().await;
    let lab = lab(&h).await;
    drain(&mut h.changes);
    let uuid = h.sim.add_domain("web", VmState::Shutoff);
    h.sim.attach(&uuid, "lab");
    adopt_event(&h, &uuid).await;
    let net = h.engine.networks.get("lab").unwrap();
    assert_eq!(
        (net.in_use, net.vms.as_slice()),
        (true, &["web".to_string()][..])
    );
    assert!(drain(&mut h.changes).contains(&Change::NetworkChanged(lab.uuid.clone())));
    assert_error!(
        h.engine.networks.delete("lab").await,
        InvalidState,
        "network 'lab' is used by web; detach them first"
    );
    assert_eq!(h.sim.calls("undefine_network"), 0);
}

async fn adopt_event(h: &Harness, uuid: &str) {
    adopt(h, "unused", VmState::Shutoff).await;
    h.engine
        .model
        .apply(HostEvent::Domain {
            uuid: uuid.into(),
            event: crate::engine::hypervisor::DomainEvent::Changed,
        })
        .await;
}

#[tokio::test]
async fn an_active_network_cannot_be_deleted_renamed_or_resubnetted() {
    let h = harness().await;
    assert_error!(
        h.engine.networks.delete("default").await,
        InvalidState,
        "network 'default' is active; deactivate it before deleting it"
    );
    assert_error!(
        h.engine.networks.update("default", rename("other")).await,
        InvalidState,
        "network 'default' is active; deactivate it before renaming it or changing its subnet"
    );
}

#[tokio::test]
async fn activate_and_deactivate_say_when_the_state_is_already_so() {
    let h = harness().await;
    lab(&h).await;
    let nets = &h.engine.networks;
    for (active, state, refusal) in [
        (
            true,
            NetworkState::Active,
            "network 'lab' is already active",
        ),
        (false, NetworkState::Inactive, "network 'lab' is not active"),
    ] {
        let toggle = || async {
            if active {
                nets.activate("lab").await
            } else {
                nets.deactivate("lab").await
            }
        };
        assert_eq!(toggle().await.unwrap().state, state);
        assert_error!(toggle().await, InvalidState, refusal);
    }
    assert_error!(
        nets.activate("ghost").await,
        NotFound,
        "no network named 'ghost'"
    );
}

#[tokio::test]
async fn a_rename_keeps_the_networks_uuid_and_subnet() {
    let h = harness().await;
    let lab = lab(&h).await;
    let renamed = h
        .engine
        .networks
        .update("lab", rename("lab-b"))
        .await
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.uuid.as_str()),
        ("lab-b", lab.uuid.as_str())
    );
    assert_eq!(renamed.subnet, lab.subnet);
    assert_error!(
        h.engine.networks.get("lab"),
        NotFound,
        "no network named 'lab'"
    );
    assert_error!(
        h.engine.networks.update("lab-b", rename("default")).await,
        AlreadyExists,
        "cannot rename network 'lab-b': 'default' already exists"
    );
}

#[tokio::test]
async fn a_new_subnet_is_checked_like_a_new_network() {
    let h = harness().await;
    lab(&h).await;
    let moved = NetworkPatch {
        subnet: Some("172.20.0.0/24".into()),
        ..NetworkPatch::default()
    };
    let lab = h.engine.networks.update("lab", moved).await.unwrap();
    assert_eq!(
        (lab.subnet.as_str(), lab.dhcp_start.as_str()),
        ("172.20.0.0/24", "172.20.0.2")
    );
    let clash = NetworkPatch {
        subnet: Some("192.168.122.0/25".into()),
        ..NetworkPatch::default()
    };
    assert_error!(
        h.engine.networks.update("lab", clash).await,
        InvalidArgument,
        "subnet 192.168.122.0/25 overlaps network 'default'"
    );
    assert_eq!(
        h.engine.networks.get("lab").unwrap().subnet,
        "172.20.0.0/24"
    );
}

#[tokio::test]
async fn a_rename_libvirt_refuses_puts_the_network_back() {
    let h = harness().await;
    let lab = lab(&h).await;
    h.sim
        .fail_next("define_network", Error::Internal("disk full".into()));
    assert_error!(
        h.engine.networks.update("lab", rename("lab-b")).await,
        Internal,
        "disk full"
    );
    h.engine
        .model
        .apply(HostEvent::Network {
            uuid: lab.uuid.clone(),
        })
        .await;
    let back = h.engine.networks.get("lab").unwrap();
    assert_eq!((back.uuid, back.subnet), (lab.uuid, lab.subnet));
}

#[tokio::test]
async fn autostart_changes_on_active_networks_too() {
    let h = harness().await;
    let on = NetworkPatch {
        autostart: Some(true),
        ..NetworkPatch::default()
    };
    assert!(
        h.engine
            .networks
            .update("default", on)
            .await
            .unwrap()
            .autostart
    );
}

#[tokio::test]
async fn a_network_changed_behind_kimchids_back_is_seen_on_its_event() {
    let mut h = harness().await;
    drain(&mut h.changes);
    let uuid = h.sim.add_network("outside", "10.99.0.0/24", false);
    h.engine
        .model
        .apply(HostEvent::Network { uuid: uuid.clone() })
        .await;
    assert_eq!(drain(&mut h.changes), [Change::NetworkAdded(uuid.clone())]);
    use crate::engine::hypervisor::Hypervisor;
    h.sim.activate_network("outside").unwrap();
    h.engine
        .model
        .apply(HostEvent::Network { uuid: uuid.clone() })
        .await;
    assert_eq!(
        h.engine.networks.get("outside").unwrap().state,
        NetworkState::Active
    );
    assert_eq!(
        drain(&mut h.changes),
        [Change::NetworkChanged(uuid.clone())]
    );
    h.sim.deactivate_network("outside").unwrap();
    h.sim.undefine_network("outside").unwrap();
    h.engine
        .model
        .apply(HostEvent::Network { uuid: uuid.clone() })
        .await;
    assert_eq!(drain(&mut h.changes), [Change::NetworkRemoved(uuid)]);
}

#[tokio::test]
async fn host_interfaces_are_listed_with_their_kind_and_state() {
    let h = harness().await;
    let interfaces = h.engine.networks.interfaces().await.unwrap();
    let eth0 = interfaces.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(
        (
            eth0.iface_type.as_str(),
            eth0.status.as_str(),
            eth0.ipaddr.as_str(),
            eth0.netmask.as_str(),
            eth0.module.as_str()
        ),
        ("nic", "active", "10.0.2.15", "255.255.255.0", "e1000")
    );
}

#[test]
fn subnets_overlap_when_either_contains_the_other() {
    let s = |t: &str| Subnet::parse(t).unwrap();
    assert!(s("10.1.0.0/16").overlaps(s("10.1.2.0/24")));
    assert!(s("10.1.2.0/24").overlaps(s("10.1.0.0/16")));
    assert!(!s("10.1.2.0/24").overlaps(s("10.1.3.0/24")));
    let small = s("10.1.2.4/30").address();
    assert_eq!(
        (
            small.gateway.to_string(),
            small.dhcp.map(|(a, b)| (a.to_string(), b.to_string()))
        ),
        (
            "10.1.2.5".to_string(),
            Some(("10.1.2.6".to_string(), "10.1.2.6".to_string()))
        )
    );
}

#[tokio::test]
async fn networks_created_at_once_get_different_subnets() {
    let h = harness().await;
    let nets = &h.engine.networks;
    let (a, b) = tokio::join!(
        nets.create(spec("a", "nat", "", &[])),
        nets.create(spec("b", "nat", "", &[]))
    );
    assert_ne!(a.unwrap().subnet, b.unwrap().subnet);
}
