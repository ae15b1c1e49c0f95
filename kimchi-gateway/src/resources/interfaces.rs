//! `/interfaces` and `/interfaces/:name`: the host's network interfaces, read-only
//! (the router refuses every other method). kimchid has one call for them, the list;
//! a single interface is found in it.

use kimchi_dbus::InterfaceInfo;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{quote, Error};
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;

/// Kimchi's keys. kimchid sends an empty string for what an interface does not have;
/// that is null here (Kimchi sent ""), so that no client takes "" for an address or
/// a driver.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Interface {
    name: String,
    /// nic, bridge, vlan or bond.
    #[serde(rename = "type")]
    kind: String,
    /// active (up) or inactive.
    status: String,
    /// The first IPv4 address; null when there is none.
    ipaddr: Option<String>,
    /// Its netmask (`255.255.255.0`); null when there is no address.
    netmask: Option<String>,
    /// The kernel driver of a nic; null for other kinds, or when unknown.
    module: Option<String>,
}

impl From<InterfaceInfo> for Interface {
    fn from(info: InterfaceInfo) -> Self {
        let optional = |s: String| (!s.is_empty()).then_some(s);
        Interface {
            name: info.name,
            kind: info.iface_type,
            status: info.status,
            ipaddr: optional(info.ipaddr),
            netmask: optional(info.netmask),
            module: optional(info.module),
        }
    }
}

async fn all(kimchid: &Kimchid, call: &Call<'_>) -> Result<Vec<InterfaceInfo>, Error> {
    Ok(kimchid
        .manager()
        .await?
        .list_interfaces(call.options())
        .await?)
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>) -> Result<Reply, Error> {
    let interfaces: Vec<Interface> = all(kimchid, call)
        .await?
        .into_iter()
        .map(Interface::from)
        .collect();
    Ok(Reply::ok(&interfaces))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, name: &str) -> Result<Reply, Error> {
    let interface = find(all(kimchid, call).await?, name)?;
    Ok(Reply::ok(&Interface::from(interface)))
}

/// The interface named `name`, or 404.
fn find(interfaces: Vec<InterfaceInfo>, name: &str) -> Result<InterfaceInfo, Error> {
    interfaces
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| Error::NotFound(format!("no host interface named '{}'", quote(name))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, kind: &str) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            iface_type: kind.into(),
            status: "active".into(),
            ipaddr: "192.168.1.5".into(),
            netmask: "255.255.255.0".into(),
            module: "e1000e".into(),
        }
    }

    #[test]
    fn interface_json_has_kimchi_keys() {
        assert_eq!(
            serde_json::to_value(Interface::from(info("eth0", "nic"))).unwrap(),
            serde_json::json!({
                "name": "eth0", "type": "nic", "status": "active",
                "ipaddr": "192.168.1.5", "netmask": "255.255.255.0", "module": "e1000e"
            })
        );
    }

    #[test]
    fn what_an_interface_lacks_is_null() {
        let bare = InterfaceInfo {
            status: "inactive".into(),
            ipaddr: String::new(),
            netmask: String::new(),
            module: String::new(),
            ..info("br0", "bridge")
        };
        assert_eq!(
            serde_json::to_value(Interface::from(bare)).unwrap(),
            serde_json::json!({
                "name": "br0", "type": "bridge", "status": "inactive",
                "ipaddr": null, "netmask": null, "module": null
            })
        );
    }

    #[test]
    fn one_interface_is_found_by_its_exact_name() {
        let list = || vec![info("eth0", "nic"), info("br0", "bridge")];
        assert_eq!(find(list(), "br0").unwrap().iface_type, "bridge");
        for missing in ["eth1", "BR0", "br", ""] {
            let err = find(list(), missing).unwrap_err();
            assert_eq!(err.status().as_u16(), 404, "{missing}");
            assert_eq!(err.name(), "kimchi.gateway.NotFound");
            assert_eq!(
                err.to_string(),
                format!("no host interface named '{missing}'")
            );
        }
    }
}
