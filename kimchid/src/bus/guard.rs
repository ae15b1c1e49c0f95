//! What it takes to call each method: the whole access policy of the bus interface in
//! one place (`access`), and the one helper every method calls first (parse options,
//! authorize).

use std::sync::Arc;
use std::time::Duration;

use kimchi_dbus::{
    CallOptions, Error as BusError, MANAGER_INTERFACE, SESSIONS_INTERFACE, VM_INTERFACE,
};
use zbus::message::Header;
use zbus::names::OwnedUniqueName;

use super::Options;
use crate::authority::{Action, Authority};
use crate::engine::tasks::Wait;
use crate::error::Error;

/// What a method demands of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: public by design (Kimchi's `/config/capabilities`), for any caller the
    /// bus policy lets through, the gateway without a web session included.
    Public,
    /// Root or the gateway's uid; the sessions service checks which (PAM follows).
    Login,
    /// The gateway's uid alone.
    Gateway,
    /// polkit's yes to this action (web users through their session).
    Polkit(Action),
}

/// Every method kimchid serves, by what it takes. A method missing here is refused,
/// never open.
fn access(interface: &str, member: &str) -> Option<Access> {
    use Access::{Gateway, Login, Polkit, Public};
    use Action::*;
    let access = match (interface, member) {
        (MANAGER_INTERFACE, "GetCapabilities") => Public,
        (MANAGER_INTERFACE, "OpenGatewayLink") => Gateway,
        (SESSIONS_INTERFACE, "Login" | "Logout") => Login,
        (
            MANAGER_INTERFACE,
            "ListVMs" | "GetVM" | "LookupVM" | "ListTemplates" | "GetTemplate" | "LookupTemplate"
            | "ListStoragePools" | "GetStoragePool" | "ListStorageVolumes" | "GetStorageVolume"
            | "ListTasks" | "GetTask" | "ListNetworks" | "GetNetwork" | "LookupNetwork"
            | "ListInterfaces" | "ListVMIfaces" | "ListVMStorages",
        ) => Polkit(Read),
        (
            MANAGER_INTERFACE,
            "StartVM" | "StopVM" | "ShutdownVM" | "RebootVM" | "ResetVM" | "SuspendVM" | "ResumeVM",
        ) => Polkit(VmLifecycle),
        (
            MANAGER_INTERFACE,
            "CreateVM" | "DeleteVM" | "UpdateVM" | "AttachVMIface" | "UpdateVMIface"
            | "DetachVMIface" | "AttachVMStorage" | "UpdateVMStorage" | "DetachVMStorage",
        ) => Polkit(VmManage),
        (MANAGER_INTERFACE, "GetVMScreenshot") | (VM_INTERFACE, "OpenConsole") => Polkit(VmConsole),
        (MANAGER_INTERFACE, "CreateTemplate" | "UpdateTemplate" | "DeleteTemplate") => {
            Polkit(TemplateManage)
        }
        (
            MANAGER_INTERFACE,
            "CreateStoragePool"
            | "ActivateStoragePool"
            | "DeactivateStoragePool"
            | "DeleteStoragePool",
        ) => Polkit(PoolManage),
        (
            MANAGER_INTERFACE,
            "CreateStorageVolume"
            | "ResizeStorageVolume"
            | "WipeStorageVolume"
            | "DeleteStorageVolume",
        ) => Polkit(VolumeManage),
        (
            MANAGER_INTERFACE,
            "CreateNetwork" | "ActivateNetwork" | "DeactivateNetwork" | "UpdateNetwork"
            | "DeleteNetwork",
        ) => Polkit(NetworkManage),
        _ => return None,
    };
    Some(access)
}

/// What a call is about, named in polkit's details so administrators can write
/// targeted rules.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    Nothing,
    Vm(&'a str),
    Template(&'a str),
    Pool(&'a str),
    Volume { pool: &'a str, name: &'a str },
    Network(&'a str),
}

impl<'a> Object<'a> {
    fn details(self) -> Vec<(&'static str, &'a str)> {
        match self {
            Object::Nothing => Vec::new(),
            Object::Vm(name) => vec![("kimchi.vm.name", name)],
            Object::Template(name) => vec![("kimchi.template.name", name)],
            Object::Pool(name) => vec![("kimchi.pool.name", name)],
            Object::Volume { pool, name } => {
                vec![("kimchi.pool.name", pool), ("kimchi.volume.name", name)]
            }
            Object::Network(name) => vec![("kimchi.network.name", name)],
        }
    }
}

pub struct Guard {
    authority: Arc<Authority>,
    peer: Peer,
}

/// Whose calls a guard judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Each message's sender on the bus.
    Bus,
    /// Everything on the gateway's link comes from the bus name that opened it.
    Link(OwnedUniqueName),
}

impl Guard {
    pub fn new(authority: Arc<Authority>) -> Self {
        Guard {
            authority,
            peer: Peer::Bus,
        }
    }

    /// The guard of a link opened by `opener`: the same authority, one caller.
    pub fn for_link(&self, opener: OwnedUniqueName) -> Self {
        Guard {
            authority: self.authority.clone(),
            peer: Peer::Link(opener),
        }
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Who sent the call `hdr` belongs to, as the bus knows it.
    pub fn sender(&self, hdr: &Header<'_>) -> Result<OwnedUniqueName, BusError> {
        match &self.peer {
            Peer::Link(opener) => Ok(opener.clone()),
            Peer::Bus => hdr
                .sender()
                .map(|s| OwnedUniqueName::from(s.to_owned()))
                .ok_or_else(|| Error::NotAuthorized("message has no sender".into()).into()),
        }
    }

    /// Parses the options and applies the method's `access`: the first thing
    /// every method does.
    pub async fn check(
        &self,
        hdr: &Header<'_>,
        options: &Options,
        object: Object<'_>,
    ) -> Result<CallOptions, BusError> {
        let opts = CallOptions::from_dict(options)?;
        match method_access(hdr)? {
            Access::Public => {}
            Access::Login => {
                return Err(Error::Internal("login methods use `caller`".into()).into())
            }
            Access::Gateway => {
                let sender = self.sender(hdr)?;
                self.authority.check_gateway(&sender).await?;
            }
            Access::Polkit(action) => {
                if let Some(id) = &opts.request_id {
                    tracing::debug!(request_id = %id, action = action.id(), "authorizing");
                }
                let sender = self.sender(hdr)?;
                self.authority
                    .authorize(&sender, &opts, action, &object.details())
                    .await?;
            }
        }
        Ok(opts)
    }

    /// The caller's uid, for the login methods (the sessions service judges it).
    pub async fn caller(&self, hdr: &Header<'_>, options: &Options) -> Result<u32, BusError> {
        CallOptions::from_dict(options)?;
        match method_access(hdr)? {
            Access::Login => {
                let sender = self.sender(hdr)?;
                Ok(self.authority.caller_uid(&sender).await?)
            }
            _ => Err(Error::Internal("only login methods identify callers this way".into()).into()),
        }
    }
}

fn method_access(hdr: &Header<'_>) -> Result<Access, Error> {
    let interface = hdr.interface().map(|i| i.as_str()).unwrap_or_default();
    let member = hdr.member().map(|m| m.as_str()).unwrap_or_default();
    access(interface, member)
        .ok_or_else(|| Error::NotAuthorized(format!("no access rule for {interface}.{member}")))
}

/// How long a method that starts a task waits for it (`kimchi.wait`,
/// `kimchi.wait-timeout`).
pub fn wait(opts: &CallOptions) -> Wait {
    match (opts.wait, opts.wait_timeout_secs) {
        (false, _) => Wait::No,
        (true, None) => Wait::Ended,
        (true, Some(secs)) => Wait::AtMost(Duration::from_secs(secs.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in description of the bus interface: every method it lists must
    /// have a rule, and every rule a method.
    fn described_methods() -> Vec<(String, String)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dbus/org.kimchi.Kimchi1.xml"
        );
        let xml = std::fs::read_to_string(path).unwrap();
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(&xml, options).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("method"))
            .filter_map(|m| {
                let iface = m.parent()?.attribute("name")?;
                let name = m.attribute("name")?;
                iface
                    .starts_with("org.kimchi.")
                    .then(|| (iface.to_owned(), name.to_owned()))
            })
            .collect()
    }

    #[test]
    fn every_described_method_has_a_rule() {
        let methods = described_methods();
        assert!(methods.len() > 30, "{methods:?}");
        for (iface, member) in &methods {
            assert!(
                access(iface, member).is_some(),
                "{iface}.{member} has no rule"
            );
        }
    }

    #[test]
    fn unknown_methods_get_no_access() {
        assert_eq!(access(MANAGER_INTERFACE, "FormatHost"), None);
        assert_eq!(access("org.example.Other", "ListVMs"), None);
        assert_eq!(access(VM_INTERFACE, "Login"), None);
    }

    #[test]
    fn only_capabilities_are_public_and_changes_need_their_action() {
        let public: Vec<String> = described_methods()
            .into_iter()
            .filter(|(i, m)| access(i, m) == Some(Access::Public))
            .map(|(_, m)| m)
            .collect();
        assert_eq!(public, ["GetCapabilities"]);
        assert_eq!(
            access(MANAGER_INTERFACE, "WipeStorageVolume"),
            Some(Access::Polkit(Action::VolumeManage))
        );
        assert_eq!(
            access(VM_INTERFACE, "OpenConsole"),
            Some(Access::Polkit(Action::VmConsole))
        );
        assert_eq!(access(SESSIONS_INTERFACE, "Logout"), Some(Access::Login));
    }

    #[test]
    fn volume_details_name_the_pool_too() {
        let details = Object::Volume {
            pool: "fast",
            name: "a.img",
        }
        .details();
        assert_eq!(
            details,
            [
                ("kimchi.pool.name", "fast"),
                ("kimchi.volume.name", "a.img")
            ]
        );
        assert!(Object::Nothing.details().is_empty());
    }

    #[test]
    fn wait_follows_the_options() {
        let mut opts = CallOptions::default();
        assert_eq!(wait(&opts), Wait::No);
        opts.wait = true;
        assert_eq!(wait(&opts), Wait::Ended);
        opts.wait_timeout_secs = Some(5);
        assert_eq!(wait(&opts), Wait::AtMost(Duration::from_secs(5)));
    }
}
