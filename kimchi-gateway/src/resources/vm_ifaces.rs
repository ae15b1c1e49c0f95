//! `/vms/:name/ifaces` and `/vms/:name/ifaces/:mac`: a VM's network interfaces
//! (Kimchi 2's API). kimchid checks networks and models and plugs NICs live where the
//! guest allows it; here the JSON is parsed into types. kimchid lists a VM's NICs in
//! one call; a single one is found in that list.

use hyper::StatusCode;
use kimchi_dbus::{VmIface, VmIfaceSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{self, Text};
use crate::error::{quote, Error};
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::router;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Iface {
    mac: String,
    /// libvirt's interface type: network, bridge, user, direct, …
    #[serde(rename = "type")]
    kind: String,
    /// The libvirt network of a `network` NIC, else null.
    network: Option<String>,
    /// null when unset.
    model: Option<String>,
    /// IPv4 addresses from the network's DHCP leases; `[]` when unknown.
    ips: Vec<String>,
}

impl From<VmIface> for Iface {
    fn from(info: VmIface) -> Self {
        let optional = |s: String| (!s.is_empty()).then_some(s);
        Iface {
            mac: info.mac,
            kind: info.iface_type,
            network: optional(info.network),
            model: optional(info.model),
            ips: info.ips,
        }
    }
}

/// `POST /vms/:name/ifaces`. Other fields are ignored, as on every creation.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewIface {
    /// `network`, the only type kimchid attaches; kimchid says so for others.
    #[serde(rename = "type")]
    kind: Text,
    network: Text,
    /// Left out: the model of the VM's other NICs, else virtio.
    model: Option<Text>,
}

impl From<NewIface> for VmIfaceSpec {
    fn from(new: NewIface) -> Self {
        VmIfaceSpec {
            iface_type: new.kind.into(),
            network: new.network.into(),
            model: new.model.map(String::from).unwrap_or_default(),
        }
    }
}

/// The body of `PUT /vms/:name/ifaces/:mac`: strict, so a misspelt field is a 400
/// rather than a change silently not made.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = IfaceChanges)]
pub(crate) struct Changes {
    network: Option<Text>,
    model: Option<Text>,
}

impl Changes {
    /// `UpdateVMIface`'s `network` and `model`, empty for what stays as it is.
    fn into_arguments(self) -> (String, String) {
        let text = |t: Option<Text>| t.map(String::from).unwrap_or_default();
        (text(self.network), text(self.model))
    }
}

async fn all(kimchid: &Kimchid, call: &Call<'_>, vm: &str) -> Result<Vec<VmIface>, Error> {
    Ok(kimchid
        .manager()
        .await?
        .list_vm_ifaces(vm, call.options())
        .await?)
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>, vm: &str) -> Result<Reply, Error> {
    let ifaces: Vec<Iface> = all(kimchid, call, vm)
        .await?
        .into_iter()
        .map(Iface::from)
        .collect();
    Ok(Reply::ok(&ifaces))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, vm: &str, mac: &str) -> Result<Reply, Error> {
    let iface = find(all(kimchid, call, vm).await?, vm, mac)?;
    Ok(Reply::ok(&Iface::from(iface)))
}

/// The NIC with this MAC, or 404. MACs are compared as hex digits are, ignoring case,
/// since clients write them either way.
fn find(ifaces: Vec<VmIface>, vm: &str, mac: &str) -> Result<VmIface, Error> {
    ifaces
        .into_iter()
        .find(|i| i.mac.eq_ignore_ascii_case(mac))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "VM '{vm}' has no network interface with MAC address '{}'",
                quote(mac)
            ))
        })
}

/// 201 with the new NIC and its `Location`.
pub async fn create(
    kimchid: &Kimchid,
    call: &Call<'_>,
    vm: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let spec = VmIfaceSpec::from(body::json::<NewIface>(body)?);
    let info = kimchid
        .manager()
        .await?
        .attach_vm_iface(vm, spec, call.options())
        .await?;
    let uri = router::vm_iface_uri(vm, &info.mac);
    Ok(Reply::json(StatusCode::CREATED, &Iface::from(info)).with_location(&uri))
}

/// 200 with the changed NIC.
pub async fn update(
    kimchid: &Kimchid,
    call: &Call<'_>,
    vm: &str,
    mac: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let (network, model) = body::json::<Changes>(body)?.into_arguments();
    let info = kimchid
        .manager()
        .await?
        .update_vm_iface(vm, mac, &network, &model, call.options())
        .await?;
    Ok(Reply::ok(&Iface::from(info)))
}

pub async fn delete(
    kimchid: &Kimchid,
    call: &Call<'_>,
    vm: &str,
    mac: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    body::no_parameters(body)?;
    kimchid
        .manager()
        .await?
        .detach_vm_iface(vm, mac, call.options())
        .await?;
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(mac: &str) -> VmIface {
        VmIface {
            mac: mac.into(),
            iface_type: "network".into(),
            network: "default".into(),
            model: "virtio".into(),
            ips: vec!["192.168.122.10".into()],
        }
    }

    #[test]
    fn iface_json_has_kimchi_keys() {
        assert_eq!(
            serde_json::to_value(Iface::from(info("52:54:00:12:34:56"))).unwrap(),
            serde_json::json!({
                "mac": "52:54:00:12:34:56", "type": "network", "network": "default",
                "model": "virtio", "ips": ["192.168.122.10"]
            })
        );
    }

    #[test]
    fn what_a_nic_lacks_is_null_or_empty() {
        let bridge = VmIface {
            iface_type: "bridge".into(),
            network: String::new(),
            model: String::new(),
            ips: Vec::new(),
            ..info("52:54:00:12:34:56")
        };
        assert_eq!(
            serde_json::to_value(Iface::from(bridge)).unwrap(),
            serde_json::json!({
                "mac": "52:54:00:12:34:56", "type": "bridge", "network": null,
                "model": null, "ips": []
            })
        );
    }

    #[test]
    fn one_nic_is_found_by_its_mac_in_any_case() {
        let list = || vec![info("52:54:00:aa:bb:01"), info("52:54:00:aa:bb:02")];
        for mac in ["52:54:00:aa:bb:02", "52:54:00:AA:BB:02"] {
            assert_eq!(find(list(), "web", mac).unwrap().mac, "52:54:00:aa:bb:02");
        }
        for missing in ["52:54:00:aa:bb:03", "52:54:00:aa:bb", ""] {
            let err = find(list(), "web", missing).unwrap_err();
            assert_eq!(err.status(), StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(
                err.to_string(),
                format!("VM 'web' has no network interface with MAC address '{missing}'")
            );
        }
    }

    fn spec(body: &str) -> Result<VmIfaceSpec, Error> {
        body::json::<NewIface>(body.as_bytes()).map(VmIfaceSpec::from)
    }

    #[test]
    fn create_body_becomes_a_spec_ignoring_other_fields() {
        assert_eq!(
            spec(r#"{"type": "network", "network": "default"}"#).unwrap(),
            VmIfaceSpec {
                iface_type: "network".into(),
                network: "default".into(),
                model: String::new(),
            }
        );
        assert_eq!(
            spec(r#"{"type": "network", "network": "n 1", "model": "e1000", "mac": "x"}"#).unwrap(),
            VmIfaceSpec {
                iface_type: "network".into(),
                network: "n 1".into(),
                model: "e1000".into(),
            }
        );
    }

    #[test]
    fn bad_create_bodies_are_400() {
        for (body, what) in [
            (r#"{"network": "default"}"#, "missing field `type`"),
            (r#"{"type": "network"}"#, "missing field `network`"),
            (r#"{"type": "network", "network": 1}"#, "invalid type"),
            (
                r#"{"type": "network", "network": "n", "model": ["virtio"]}"#,
                "invalid type",
            ),
            (r#"{"type": "network", "network": "n\u0000"}"#, "NUL"),
            ("", "JSON object"),
        ] {
            let err = spec(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }

    fn changes(body: &str) -> Result<(String, String), Error> {
        body::json::<Changes>(body.as_bytes()).map(Changes::into_arguments)
    }

    #[test]
    fn put_body_leaves_what_it_omits_empty() {
        assert_eq!(
            changes(r#"{"network": "n2", "model": "e1000"}"#).unwrap(),
            ("n2".into(), "e1000".into())
        );
        assert_eq!(
            changes(r#"{"model": "rtl8139"}"#).unwrap(),
            (String::new(), "rtl8139".into())
        );
        assert_eq!(changes("{}").unwrap(), (String::new(), String::new()));
    }

    #[test]
    fn put_is_strict() {
        for (body, what) in [
            (
                r#"{"network": "n", "type": "bridge"}"#,
                "unknown field `type`",
            ),
            (r#"{"mac": "52:54:00:12:34:56"}"#, "unknown field `mac`"),
            (r#"{"model": 1}"#, "invalid type"),
            (r#"{"network": "a\u0000"}"#, "NUL"),
            ("", "JSON object"),
        ] {
            let err = changes(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }
}
