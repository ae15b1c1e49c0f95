//! A VM's network interfaces: listed with the addresses the networks' DHCP leases
//! give them, added (always into a libvirt network), re-plugged or re-modelled, and
//! removed; live on a running guest where QEMU can, else in its stored definition.

use kimchi_dbus::{VmIface, VmIfaceSpec};

use super::{live, Vms};
use crate::engine::hypervisor::{Apply, DomainRecord, Nic, NicDefinition};
use crate::error::{Error, Result};
use crate::excerpt::excerpt;

/// NIC models QEMU emulates on x86 that a guest may be given.
const NIC_MODELS: &[&str] = &[
    "virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet", "i82551", "i82557b", "i82559er",
];
const DEFAULT_MODEL: &str = "virtio";
/// QEMU's own prefix: MACs a guest gets here look like those libvirt chooses.
const MAC_PREFIX: [u8; 3] = [0x52, 0x54, 0x00];

impl Vms {
    pub async fn ifaces(&self, name: &str) -> Result<Vec<VmIface>> {
        let vm = self.model.vm_by_name(name)?;
        let leases = if live(&vm) == Apply::LiveAndStored {
            let uuid = vm.uuid.clone();
            // Addresses are a courtesy: a guest without leases still lists its NICs.
            self.backend
                .run(move |hv| hv.nic_addresses(&uuid))
                .await
                .unwrap_or_else(|e| {
                    tracing::debug!(vm = name, "no DHCP leases: {e}");
                    Vec::new()
                })
        } else {
            Vec::new()
        };
        Ok(vm
            .nics
            .iter()
            .map(|nic| {
                let ips = leases
                    .iter()
                    .find(|(mac, _)| mac.eq_ignore_ascii_case(&nic.mac))
                    .map(|(_, ips)| ips.clone())
                    .unwrap_or_default();
                iface(nic, ips)
            })
            .collect())
    }

    /// Plugs a new NIC into `spec.network`, with a fresh MAC.
    pub async fn attach_iface(&self, name: &str, spec: VmIfaceSpec) -> Result<VmIface> {
        let (vm, _in_use) = self.changeable(name)?;
        if spec.iface_type != "network" {
            return Err(Error::InvalidArgument(format!(
                "interface type '{}' cannot be attached; use 'network'",
                excerpt(&spec.iface_type)
            )));
        }
        let apply = live(&vm);
        self.check_network(&spec.network, apply)?;
        let model = if spec.model.is_empty() {
            vm.nics
                .iter()
                .map(|n| n.model.as_str())
                .find(|m| !m.is_empty())
                .unwrap_or(DEFAULT_MODEL)
                .to_owned()
        } else {
            check_model(&spec.model)?;
            spec.model
        };
        let nic = NicDefinition {
            mac: self.free_mac(),
            network: spec.network,
            model,
        };
        let uuid = vm.uuid.clone();
        let def = nic.clone();
        let record = self
            .backend
            .run(move |hv| hv.attach_nic(&uuid, &def, apply))
            .await?;
        self.changed(record, &nic.mac)
    }

    /// Plugs the NIC into another network (live too) and/or gives it another model
    /// (which a running guest gets at its next power-on); empty means unchanged.
    pub async fn update_iface(
        &self,
        name: &str,
        mac: &str,
        network: &str,
        model: &str,
    ) -> Result<VmIface> {
        let (vm, _in_use) = self.changeable(name)?;
        let nic = find_nic(&vm, mac)?.clone();
        if nic.kind != "network" {
            return Err(Error::InvalidState(format!(
                "interface {} of VM '{name}' is of type '{}'; only 'network' interfaces \
                 can be changed",
                nic.mac, nic.kind
            )));
        }
        let apply = live(&vm);
        let network = if network.is_empty() || network == nic.network {
            nic.network.clone()
        } else {
            self.check_network(network, apply)?;
            network.to_owned()
        };
        let model = if model.is_empty() || model == nic.model {
            nic.model.clone()
        } else {
            check_model(model)?;
            model.to_owned()
        };
        let uuid = vm.uuid.clone();
        let (replug, remodel) = (network != nic.network, model != nic.model);
        let record = self
            .backend
            .run(move |hv| {
                let mut record = None;
                // QEMU changes a running NIC's network but not its model.
                if replug {
                    let moved = NicDefinition {
                        mac: nic.mac.clone(),
                        network: network.clone(),
                        model: nic.model.clone(),
                    };
                    record = Some(hv.update_nic(&uuid, &moved, apply)?);
                }
                if remodel {
                    let def = NicDefinition {
                        mac: nic.mac.clone(),
                        network,
                        model,
                    };
                    record = Some(hv.update_nic(&uuid, &def, Apply::Stored)?);
                }
                Ok(record)
            })
            .await?;
        match record {
            Some(record) => self.changed(record, mac),
            None => Ok(iface(find_nic(&vm, mac)?, Vec::new())),
        }
    }

    pub async fn detach_iface(&self, name: &str, mac: &str) -> Result<()> {
        let (vm, _in_use) = self.changeable(name)?;
        let nic = find_nic(&vm, mac)?.clone();
        let (uuid, apply) = (vm.uuid.clone(), live(&vm));
        let record = self
            .backend
            .run(move |hv| hv.detach_nic(&uuid, &nic, apply))
            .await?;
        self.model.upsert(record);
        Ok(())
    }

    /// A network a NIC may be plugged into: it exists, and is active for a running guest.
    fn check_network(&self, network: &str, apply: Apply) -> Result<()> {
        let record = self.model.network_by_name(network).map_err(|_| {
            Error::InvalidArgument(format!("there is no network named '{}'", excerpt(network)))
        })?;
        if apply == Apply::LiveAndStored && !record.active {
            return Err(Error::InvalidState(format!(
                "network '{network}' is not active; activate it first"
            )));
        }
        Ok(())
    }

    /// A MAC no guest has.
    fn free_mac(&self) -> String {
        let taken: Vec<String> = self
            .model
            .vms()
            .iter()
            .flat_map(|vm| vm.nics.iter().map(|n| n.mac.to_ascii_lowercase()))
            .collect();
        loop {
            let tail: [u8; 3] = rand::random();
            let mac = MAC_PREFIX
                .iter()
                .chain(&tail)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            if !taken.contains(&mac) {
                return mac;
            }
        }
    }

    /// Records the guest as it is now and returns its NIC `mac`.
    fn changed(&self, record: DomainRecord, mac: &str) -> Result<VmIface> {
        self.model.upsert(record.clone());
        Ok(iface(find_nic(&record, mac)?, Vec::new()))
    }
}

fn find_nic<'a>(vm: &'a DomainRecord, mac: &str) -> Result<&'a Nic> {
    vm.nic(mac).ok_or_else(|| {
        Error::NotFound(format!(
            "VM '{}' has no network interface with MAC {}",
            vm.name,
            excerpt(mac)
        ))
    })
}

fn check_model(model: &str) -> Result<()> {
    if NIC_MODELS.contains(&model) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "unknown NIC model '{}'; use one of {}",
            excerpt(model),
            NIC_MODELS.join(", ")
        )))
    }
}

fn iface(nic: &Nic, ips: Vec<String>) -> VmIface {
    VmIface {
        mac: nic.mac.clone(),
        iface_type: nic.kind.clone(),
        network: nic.network.clone(),
        model: nic.model.clone(),
        ips,
    }
}
