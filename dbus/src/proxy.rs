//! Client side of the contract: the gateway and the tests call kimchid through these.

use std::collections::HashMap;

use zbus::{proxy, OwnedVariant};

use crate::{Error, ScreenshotSupport, SessionInfo, VmInfo};

type Options = HashMap<String, OwnedVariant>;

#[proxy(
    interface = "org.kimchi.Kimchi1.Manager",
    default_service = "org.kimchi.Kimchi1",
    default_path = "/org/kimchi/Kimchi1/Manager"
)]
pub trait Manager {
    /// All defined VMs (action `org.kimchi.read`).
    #[zbus(name = "ListVMs")]
    fn list_vms(&self, options: Options) -> Result<Vec<VmInfo>, Error>;

    /// One VM by name (action `org.kimchi.read`).
    #[zbus(name = "GetVM")]
    fn get_vm(&self, name: &str, options: Options) -> Result<VmInfo, Error>;

    /// The object path of the VM with this name or UUID (action `org.kimchi.read`).
    #[zbus(name = "LookupVM")]
    fn lookup_vm(&self, name: &str, options: Options) -> Result<zbus::OwnedObjectPath, Error>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn libvirt_uri(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn libvirt_connected(&self) -> zbus::Result<bool>;

    /// Network protocols QEMU on this host can stream an ISO from.
    #[zbus(property)]
    fn stream_protocols(&self) -> zbus::Result<Vec<String>>;

    #[zbus(property)]
    fn screenshot(&self) -> zbus::Result<ScreenshotSupport>;
}

#[proxy(
    interface = "org.kimchi.Kimchi1.Sessions",
    default_service = "org.kimchi.Kimchi1",
    default_path = "/org/kimchi/Kimchi1/Sessions"
)]
pub trait Sessions {
    /// Checks the password with PAM (service `kimchi`) and mints an opaque token.
    fn login(
        &self,
        user: &str,
        password: &str,
        options: Options,
    ) -> Result<(String, SessionInfo), Error>;

    fn logout(&self, token: &str, options: Options) -> Result<(), Error>;
}
