use std::sync::Arc;

use kimchi_dbus::NetworkInfo;
use zbus::interface;

use crate::engine::Engine;

/// One exported virtual network; properties read the engine, so they are never stale.
pub struct Network {
    uuid: String,
    engine: Arc<Engine>,
}

impl Network {
    pub fn new(uuid: String, engine: Arc<Engine>) -> Self {
        Network { uuid, engine }
    }

    fn read<T: Default>(&self, f: impl FnOnce(NetworkInfo) -> T) -> T {
        self.engine
            .networks
            .by_uuid(&self.uuid)
            .map(f)
            .unwrap_or_default()
    }
}

#[interface(name = "org.kimchi.Kimchi1.Network")]
impl Network {
    #[zbus(property)]
    fn name(&self) -> String {
        self.read(|n| n.name)
    }

    #[zbus(property(emits_changed_signal = "const"), name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }

    /// active or inactive.
    #[zbus(property)]
    fn state(&self) -> String {
        self.read(|n| n.state.to_string())
    }

    #[zbus(property)]
    fn autostart(&self) -> bool {
        self.read(|n| n.autostart)
    }

    /// nat, isolated, bridge or macvtap.
    #[zbus(property)]
    fn connection(&self) -> String {
        self.read(|n| n.connection)
    }

    /// `a.b.c.d/p`, or empty.
    #[zbus(property)]
    fn subnet(&self) -> String {
        self.read(|n| n.subnet)
    }

    /// Host interfaces a bridge or macvtap network uses.
    #[zbus(property)]
    fn interfaces(&self) -> Vec<String> {
        self.read(|n| n.interfaces)
    }

    #[zbus(property)]
    fn in_use(&self) -> bool {
        self.read(|n| n.in_use)
    }

    /// Names of the guests attached.
    #[zbus(property, name = "VMs")]
    fn vms(&self) -> Vec<String> {
        self.read(|n| n.vms)
    }
}

/// What `PropertiesChanged` reports when the network or its guests change.
pub const ANNOUNCED: &[&str] = &[
    "Name",
    "State",
    "Autostart",
    "Connection",
    "Subnet",
    "Interfaces",
    "InUse",
    "VMs",
];
