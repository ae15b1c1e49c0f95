//! Virtual networks as Kimchi presents them: definitions checked before libvirt sees
//! them (nat and isolated networks get a free private /24 unless given a subnet that
//! overlaps nothing; bridge and macvtap networks use one suitable host interface),
//! lists from the model, and which guests use each network.

use std::net::Ipv4Addr;
use std::sync::Arc;

use kimchi_dbus::{
    network_path, InterfaceInfo, NetworkInfo, NetworkPatch, NetworkSpec, NetworkState,
};
use zbus::OwnedObjectPath;

use super::hypervisor::{
    Backend, Forward, HostInterface, NetworkAddress, NetworkDefinition, NetworkRecord,
};
use super::model::Model;
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
use crate::names::check_name;

/// Prefixes accepted for a network's subnet: large enough for a DHCP range, small
/// enough not to swallow a site's address plan.
const PREFIXES: std::ops::RangeInclusive<u8> = 16..=30;

pub struct Networks {
    backend: Arc<Backend>,
    model: Arc<Model>,
    /// Serializes definitions: each checks names and subnets against the others, so
    /// two at once could take the same name or the same free /24.
    defining: tokio::sync::Mutex<()>,
}

impl Networks {
    pub fn new(backend: Arc<Backend>, model: Arc<Model>) -> Self {
        Networks {
            backend,
            model,
            defining: tokio::sync::Mutex::new(()),
        }
    }

    /// Every network by name.
    pub fn list(&self) -> Vec<NetworkInfo> {
        self.model.networks().iter().map(|n| self.info(n)).collect()
    }

    pub fn get(&self, name: &str) -> Result<NetworkInfo> {
        Ok(self.info(&self.model.network_by_name(name)?))
    }

    /// The network a bus object stands for.
    pub fn by_uuid(&self, uuid: &str) -> Option<NetworkInfo> {
        let network = self.model.network_by_uuid(uuid)?;
        Some(self.info(&network))
    }

    fn info(&self, n: &NetworkRecord) -> NetworkInfo {
        let vms = self.model.vms_on_network(&n.name);
        NetworkInfo {
            path: OwnedObjectPath::try_from(network_path(&n.uuid)).expect("UUIDs make valid paths"),
            name: n.name.clone(),
            uuid: n.uuid.clone(),
            state: if n.active {
                NetworkState::Active
            } else {
                NetworkState::Inactive
            },
            autostart: n.autostart,
            persistent: n.persistent,
            connection: n.connection.clone(),
            subnet: n.subnet.clone(),
            dhcp_start: n.dhcp_start.clone(),
            dhcp_end: n.dhcp_end.clone(),
            interfaces: n.interfaces.clone(),
            vlan_id: n.vlan_id,
            in_use: !vms.is_empty(),
            vms,
        }
    }

    /// Checks the request against the host and the other networks, then defines the
    /// network, inactive.
    pub async fn create(&self, spec: NetworkSpec) -> Result<NetworkInfo> {
        let _defining = self.defining.lock().await;
        check_name("network", &spec.name)?;
        if self.model.network_by_name(&spec.name).is_ok() {
            return Err(Error::AlreadyExists(format!(
                "a network named '{}' already exists",
                spec.name
            )));
        }
        let (interfaces, routes) = self.host().await?;
        let def = definition(&spec, &self.model.networks(), &interfaces, &routes)?;
        let record = self.backend.run(move |hv| hv.define_network(&def)).await?;
        self.model.upsert_network(record.clone());
        Ok(self.info(&record))
    }

    pub async fn activate(&self, name: &str) -> Result<NetworkInfo> {
        self.set_active(name, true).await
    }

    pub async fn deactivate(&self, name: &str) -> Result<NetworkInfo> {
        self.set_active(name, false).await
    }

    async fn set_active(&self, name: &str, active: bool) -> Result<NetworkInfo> {
        let name = self.model.network_by_name(name)?.name;
        let record = self
            .backend
            .run(move |hv| {
                if active {
                    hv.activate_network(&name)
                } else {
                    hv.deactivate_network(&name)
                }
            })
            .await?;
        self.model.upsert_network(record.clone());
        Ok(self.info(&record))
    }

    /// Renames the network or changes its subnet (inactive networks only: libvirt
    /// defines them anew, keeping the UUID), and sets whether it starts with the host.
    pub async fn update(&self, name: &str, patch: NetworkPatch) -> Result<NetworkInfo> {
        let _defining = self.defining.lock().await;
        let current = self.model.network_by_name(name)?;
        let redefine = patch.name.as_ref().is_some_and(|n| *n != current.name)
            || patch.subnet.as_ref().is_some_and(|s| *s != current.subnet);
        let mut record = current.clone();
        if redefine {
            record = self.redefine(&current, &patch).await?;
        }
        if let Some(autostart) = patch.autostart {
            let name = record.name.clone();
            record = self
                .backend
                .run(move |hv| hv.set_network_autostart(&name, autostart))
                .await?;
            self.model.upsert_network(record.clone());
        }
        Ok(self.info(&record))
    }

    async fn redefine(
        &self,
        current: &NetworkRecord,
        patch: &NetworkPatch,
    ) -> Result<NetworkRecord> {
        if current.active {
            return Err(Error::InvalidState(format!(
                "network '{}' is active; deactivate it before renaming it or changing its subnet",
                current.name
            )));
        }
        let mut spec = spec_of(current)?;
        if let Some(new) = &patch.name {
            check_name("network", new)?;
            if *new != current.name && self.model.network_by_name(new).is_ok() {
                return Err(Error::AlreadyExists(format!(
                    "cannot rename network '{}': '{new}' already exists",
                    current.name
                )));
            }
            spec.name = new.clone();
        }
        if let Some(subnet) = &patch.subnet {
            spec.subnet = subnet.clone();
        }
        let (interfaces, routes) = self.host().await?;
        let others: Vec<NetworkRecord> = self
            .model
            .networks()
            .into_iter()
            .filter(|n| n.uuid != current.uuid)
            .collect();
        let mut new = definition(&spec, &others, &interfaces, &routes)?;
        new.uuid = Some(current.uuid.clone());
        let mut old = definition(&spec_of(current)?, &[], &interfaces, &[])?;
        old.uuid = Some(current.uuid.clone());
        let old_name = current.name.clone();
        let record = self
            .backend
            .run(move |hv| {
                hv.undefine_network(&old_name)?;
                hv.define_network(&new).inspect_err(|_| {
                    // Put the network back as it was: a failed change loses nothing.
                    if let Err(e) = hv.define_network(&old) {
                        tracing::error!(network = %old_name, "cannot restore the network: {e}");
                    }
                })
            })
            .await?;
        self.model.upsert_network(record.clone());
        Ok(record)
    }

    /// Undefines an inactive network no guest uses.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let network = self.model.network_by_name(name)?;
        if network.active {
            return Err(Error::InvalidState(format!(
                "network '{name}' is active; deactivate it before deleting it"
            )));
        }
        let vms = self.model.vms_on_network(name);
        if !vms.is_empty() {
            return Err(Error::InvalidState(format!(
                "network '{name}' is used by {}; detach them first",
                vms.join(", ")
            )));
        }
        let owned = name.to_owned();
        self.backend
            .run(move |hv| hv.undefine_network(&owned))
            .await?;
        self.model.remove_network(&network.uuid);
        Ok(())
    }

    /// The host's interfaces, for a client to offer as bridge and macvtap choices.
    pub async fn interfaces(&self) -> Result<Vec<InterfaceInfo>> {
        let interfaces = self.backend.run(|hv| hv.host_interfaces()).await?;
        Ok(interfaces
            .into_iter()
            .map(|i| InterfaceInfo {
                name: i.name,
                iface_type: i.kind,
                status: if i.up { "active" } else { "inactive" }.to_owned(),
                ipaddr: i.ipaddr,
                netmask: i.netmask,
                module: i.module,
            })
            .collect())
    }

    async fn host(&self) -> Result<(Vec<HostInterface>, Vec<String>)> {
        self.backend
            .run(|hv| Ok((hv.host_interfaces()?, hv.host_routes()?)))
            .await
    }
}

/// An IPv4 network: its address (host bits clear) and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/p` as a user gives it: host bits must be clear.
    pub fn parse(text: &str) -> Result<Subnet> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!("invalid subnet '{}': {why}", excerpt(text)))
        };
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected an address and a prefix, like 192.168.100.0/24"))?;
        let network: Ipv4Addr = address
            .parse()
            .map_err(|_| bad("the address is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !PREFIXES.contains(&prefix) {
            return Err(bad(&format!(
                "the prefix must be between /{} and /{}",
                PREFIXES.start(),
                PREFIXES.end()
            )));
        }
        let subnet = Subnet { network, prefix };
        if subnet.base() != network {
            return Err(bad(&format!(
                "host bits are set (the network is {}/{prefix})",
                subnet.base()
            )));
        }
        Ok(subnet)
    }

    /// A route or network as libvirt and the kernel give it (no prefix limits).
    fn read(text: &str) -> Option<Subnet> {
        let (address, prefix) = text.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        let network = address.parse().ok()?;
        Some(Subnet { network, prefix }.normalized())
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    fn base(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) & self.mask())
    }

    fn normalized(self) -> Subnet {
        Subnet {
            network: self.base(),
            ..self
        }
    }

    fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn overlaps(self, other: Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// The host's address on the network (the first), and the DHCP range: the rest
    /// but the broadcast address.
    pub fn address(self) -> NetworkAddress {
        let first = u32::from(self.network) + 1;
        NetworkAddress {
            gateway: Ipv4Addr::from(first),
            prefix: self.prefix,
            dhcp: Some((
                Ipv4Addr::from(first + 1),
                Ipv4Addr::from(u32::from(self.broadcast()) - 1),
            )),
        }
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The first private /24 in 192.168.100–254 that overlaps no other network and no
/// route of the host.
fn free_subnet(taken: &[(String, Subnet)]) -> Result<Subnet> {
    (100..=254u8)
        .map(|third| Subnet {
            network: Ipv4Addr::new(192, 168, third, 0),
            prefix: 24,
        })
        .find(|s| !taken.iter().any(|(_, t)| t.overlaps(*s)))
        .ok_or_else(|| {
            Error::InvalidState(
                "no free 192.168.x.0/24 subnet is left for a new network; give a subnet".into(),
            )
        })
}

/// The definition `spec` asks for, checked against the other networks, the host's
/// interfaces and its routes.
pub fn definition(
    spec: &NetworkSpec,
    others: &[NetworkRecord],
    interfaces: &[HostInterface],
    routes: &[String],
) -> Result<NetworkDefinition> {
    if spec.vlan_id != 0 {
        return Err(Error::InvalidArgument(
            "vlan_id is not supported: tagged networks need Open vSwitch or a VLAN interface \
             on the host, which kimchid does not create; leave vlan_id out"
                .into(),
        ));
    }
    let (forward, address) = match spec.connection.as_str() {
        "nat" | "isolated" => {
            if !spec.interfaces.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "interfaces apply to bridge and macvtap networks, not to {} ones",
                    spec.connection
                )));
            }
            let taken: Vec<(String, Subnet)> = others
                .iter()
                .filter_map(|n| Some((format!("network '{}'", n.name), Subnet::read(&n.subnet)?)))
                .chain(
                    routes.iter().filter_map(|r| {
                        Some((format!("a route of the host ({r})"), Subnet::read(r)?))
                    }),
                )
                .collect();
            let subnet = if spec.subnet.is_empty() {
                free_subnet(&taken)?
            } else {
                let subnet = Subnet::parse(&spec.subnet)?;
                if let Some((what, _)) = taken.iter().find(|(_, t)| t.overlaps(subnet)) {
                    return Err(Error::InvalidArgument(format!(
                        "subnet {subnet} overlaps {what}"
                    )));
                }
                subnet
            };
            let forward = if spec.connection == "nat" {
                Forward::Nat
            } else {
                Forward::Isolated
            };
            (forward, Some(subnet.address()))
        }
        "bridge" | "macvtap" => {
            if !spec.subnet.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "a {} network takes its addresses from the host's network; leave subnet out",
                    spec.connection
                )));
            }
            let [name] = spec.interfaces.as_slice() else {
                return Err(Error::InvalidArgument(format!(
                    "a {} network needs exactly one host interface in interfaces",
                    spec.connection
                )));
            };
            let interface = interfaces.iter().find(|i| i.name == *name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the host has no network interface '{}'",
                    excerpt(name)
                ))
            })?;
            let forward = match (spec.connection.as_str(), interface.kind.as_str()) {
                ("bridge", "bridge") => Forward::Bridge {
                    bridge: name.clone(),
                },
                ("bridge", kind) => {
                    return Err(Error::InvalidArgument(format!(
                        "'{name}' is a {kind}, not a Linux bridge; bridge networks join an \
                         existing bridge (creating one could cut the host off its network)"
                    )))
                }
                (_, "bridge") => {
                    return Err(Error::InvalidArgument(format!(
                        "'{name}' is a bridge; macvtap networks need a nic, bond or vlan"
                    )))
                }
                _ => Forward::Macvtap {
                    device: name.clone(),
                },
            };
            (forward, None)
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown connection type '{}' (known: nat, isolated, bridge, macvtap)",
                excerpt(other)
            )))
        }
    };
    Ok(NetworkDefinition {
        name: spec.name.clone(),
        uuid: None,
        forward,
        address,
    })
}

/// The spec that defines `network` again, for networks of the four kinds kimchid makes.
fn spec_of(network: &NetworkRecord) -> Result<NetworkSpec> {
    if !["nat", "isolated", "bridge", "macvtap"].contains(&network.connection.as_str()) {
        return Err(Error::NotSupported(format!(
            "network '{}' is a {} network, which kimchid does not redefine",
            network.name, network.connection
        )));
    }
    Ok(NetworkSpec {
        name: network.name.clone(),
        connection: network.connection.clone(),
        subnet: network.subnet.clone(),
        interfaces: if matches!(network.connection.as_str(), "bridge" | "macvtap") {
            network.interfaces.clone()
        } else {
            Vec::new()
        },
        vlan_id: 0,
    })
}
