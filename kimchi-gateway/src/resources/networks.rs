//! `/networks`, `/networks/:name` and its actions (Kimchi's later API, without its
//! `/plugins/kimchi` prefix). kimchid checks names, connections, subnets and the
//! host interfaces, tells a duplicate, and refuses changes the network's state or
//! its guests forbid; here the JSON is parsed into types. A `PUT` sends kimchid only
//! the fields it names, as an `a{sv}` of changes, so one call does it.

use hyper::StatusCode;
use kimchi_dbus::{NetworkInfo, NetworkPatch, NetworkSpec, NetworkState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{self, Integer, Interfaces, List, Text};
use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::router::{self, NetworkAction};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Network {
    name: String,
    /// active or inactive.
    state: NetworkState,
    autostart: bool,
    /// Whether the network outlives a stop or a reboot (all networks kimchid creates do).
    persistent: bool,
    /// nat, isolated, bridge or macvtap (libvirt's word for networks defined elsewhere).
    connection: String,
    /// `192.168.122.0/24`; empty for networks without an address of their own
    /// (bridge, macvtap), as in Kimchi.
    subnet: String,
    /// null when the network serves no DHCP.
    dhcp: Option<Dhcp>,
    /// The host interfaces a bridge or macvtap network uses.
    interfaces: Vec<String>,
    /// null when the network has no VLAN (kimchid's 0), so that a client never takes
    /// 0 for a VLAN tag. Always present, so the keys do not depend on the network.
    vlan_id: Option<u32>,
    /// Whether a guest is attached.
    in_use: bool,
    /// The names of the guests attached.
    vms: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Dhcp {
    start: String,
    end: String,
}

impl From<NetworkInfo> for Network {
    fn from(info: NetworkInfo) -> Self {
        let no_dhcp = info.dhcp_start.is_empty() && info.dhcp_end.is_empty();
        Network {
            name: info.name,
            state: info.state,
            autostart: info.autostart,
            persistent: info.persistent,
            connection: info.connection,
            subnet: info.subnet,
            dhcp: (!no_dhcp).then_some(Dhcp {
                start: info.dhcp_start,
                end: info.dhcp_end,
            }),
            interfaces: info.interfaces,
            vlan_id: (info.vlan_id != 0).then_some(info.vlan_id),
            in_use: info.in_use,
            vms: info.vms,
        }
    }
}

/// `POST /networks`. Other fields are ignored (and logged at debug), as on pool
/// creation: Kimchi's clients send what they have.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewNetwork {
    name: Text,
    /// nat, isolated, bridge or macvtap; kimchid says which it takes.
    connection: Text,
    /// Left out or empty: kimchid picks a free private /24 (nat, isolated).
    subnet: Option<Text>,
    /// The host interface of a bridge or macvtap network (Kimchi 3's list).
    interfaces: Option<List<Text, Interfaces>>,
    /// The same as one name, as Kimchi 2 took it; known so that its clients' bridge
    /// networks do not lose their interface to the leniency above.
    interface: Option<Text>,
    /// Left out, null or 0: no VLAN. kimchid checks the range.
    vlan_id: Option<Integer<u32>>,
}

impl TryFrom<NewNetwork> for NetworkSpec {
    type Error = Error;

    fn try_from(new: NewNetwork) -> Result<Self, Error> {
        let interfaces = match (new.interfaces, new.interface) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidBody(
                    "give the host interface as `interfaces` or as `interface`, not both".into(),
                ))
            }
            (Some(list), None) => list.into_vec().into_iter().map(String::from).collect(),
            (None, Some(one)) => vec![one.into()],
            (None, None) => Vec::new(),
        };
        Ok(NetworkSpec {
            name: new.name.into(),
            connection: new.connection.into(),
            subnet: new.subnet.map(String::from).unwrap_or_default(),
            interfaces,
            vlan_id: new.vlan_id.map_or(0, Integer::get),
        })
    }
}

/// The body of `PUT /networks/:name`: strict, so a misspelt field is a 400 rather
/// than a change silently not made.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NetworkChanges)]
pub(crate) struct Changes {
    /// A new name: the network is renamed (inactive networks only).
    name: Option<Text>,
    /// Inactive networks only.
    subnet: Option<Text>,
    autostart: Option<bool>,
}

impl Changes {
    /// `UpdateNetwork`'s change: the fields given here, and only those.
    fn into_patch(self) -> NetworkPatch {
        NetworkPatch {
            name: self.name.map(String::from),
            subnet: self.subnet.map(String::from),
            autostart: self.autostart,
        }
    }
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>) -> Result<Reply, Error> {
    let networks: Vec<Network> = kimchid
        .manager()
        .await?
        .list_networks(call.options())
        .await?
        .into_iter()
        .map(Network::from)
        .collect();
    Ok(Reply::ok(&networks))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, name: &str) -> Result<Reply, Error> {
    let info = kimchid
        .manager()
        .await?
        .get_network(name, call.options())
        .await?;
    Ok(Reply::ok(&Network::from(info)))
}

/// 201 with the new (inactive) network and its `Location`.
pub async fn create(kimchid: &Kimchid, call: &Call<'_>, body: &[u8]) -> Result<Reply, Error> {
    let spec = NetworkSpec::try_from(body::json::<NewNetwork>(body)?)?;
    let info = kimchid
        .manager()
        .await?
        .create_network(spec, call.options())
        .await?;
    Ok(with_location(StatusCode::CREATED, info))
}

/// 200 with the changed network, or 303 to its new URI when it was renamed.
pub async fn update(
    kimchid: &Kimchid,
    call: &Call<'_>,
    name: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let changes = body::json::<Changes>(body)?.into_patch().to_dict();
    let info = kimchid
        .manager()
        .await?
        .update_network(name, changes, call.options())
        .await?;
    if info.name == name {
        Ok(Reply::ok(&Network::from(info)))
    } else {
        Ok(with_location(StatusCode::SEE_OTHER, info))
    }
}

pub async fn delete(
    kimchid: &Kimchid,
    call: &Call<'_>,
    name: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    body::no_parameters(body)?;
    kimchid
        .manager()
        .await?
        .delete_network(name, call.options())
        .await?;
    Ok(Reply::no_content())
}

/// 200 with the network as the action left it.
pub async fn action(
    kimchid: &Kimchid,
    call: &Call<'_>,
    name: &str,
    action: NetworkAction,
    body: &[u8],
) -> Result<Reply, Error> {
    body::action_without_parameters(body)?;
    let manager = kimchid.manager().await?;
    let info = match action {
        NetworkAction::Activate => manager.activate_network(name, call.options()).await?,
        NetworkAction::Deactivate => manager.deactivate_network(name, call.options()).await?,
    };
    Ok(Reply::ok(&Network::from(info)))
}

fn with_location(status: StatusCode, info: NetworkInfo) -> Reply {
    let uri = router::network_uri(&info.name);
    Reply::json(status, &Network::from(info)).with_location(&uri)
}

#[cfg(test)]
mod tests {

    use super::*;
    use hyper::header::LOCATION;

    fn info() -> NetworkInfo {
        NetworkInfo {
            path: zbus::OwnedObjectPath::try_from(kimchi_dbus::network_path("u-1")).unwrap(),
            name: "default".into(),
            uuid: "u-1".into(),
            state: NetworkState::Active,
            autostart: true,
            persistent: true,
            connection: "nat".into(),
            subnet: "192.168.122.0/24".into(),
            dhcp_start: "192.168.122.2".into(),
            dhcp_end: "192.168.122.254".into(),
            interfaces: Vec::new(),
            vlan_id: 0,
            in_use: true,
            vms: vec!["web-1".into()],
        }
    }

    fn json_of(info: NetworkInfo) -> serde_json::Value {
        serde_json::to_value(Network::from(info)).unwrap()
    }

    #[test]
    fn network_json_has_kimchi_keys() {
        assert_eq!(
            json_of(info()),
            serde_json::json!({
                "name": "default", "state": "active", "autostart": true, "persistent": true,
                "connection": "nat", "subnet": "192.168.122.0/24",
                "dhcp": {"start": "192.168.122.2", "end": "192.168.122.254"},
                "interfaces": [], "vlan_id": null, "in_use": true, "vms": ["web-1"]
            })
        );
    }

    #[test]
    fn network_without_dhcp_or_address_shows_null_dhcp_and_empty_subnet() {
        let bridge = NetworkInfo {
            state: NetworkState::Inactive,
            autostart: false,
            connection: "macvtap".into(),
            subnet: String::new(),
            dhcp_start: String::new(),
            dhcp_end: String::new(),
            interfaces: vec!["eth0".into()],
            vlan_id: 12,
            in_use: false,
            vms: Vec::new(),
            ..info()
        };
        assert_eq!(
            json_of(bridge),
            serde_json::json!({
                "name": "default", "state": "inactive", "autostart": false,
                "persistent": true, "connection": "macvtap", "subnet": "", "dhcp": null,
                "interfaces": ["eth0"], "vlan_id": 12, "in_use": false, "vms": []
            })
        );
    }

    fn spec(body: &str) -> Result<NetworkSpec, Error> {
        body::json::<NewNetwork>(body.as_bytes()).and_then(NetworkSpec::try_from)
    }

    #[test]
    fn interfaces_are_bounded() {
        let body = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!(r#""eth{i}""#)).collect();
            format!(
                r#"{{"name": "m", "connection": "macvtap", "interfaces": [{}]}}"#,
                names.join(",")
            )
        };
        assert_eq!(spec(&body(32)).unwrap().interfaces.len(), 32);
        let err = spec(&body(33)).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(
            err.to_string()
                .contains("interfaces takes at most 32 entries"),
            "{err}"
        );
    }

    #[test]
    fn create_body_becomes_a_spec() {
        assert_eq!(
            spec(r#"{"name": "n1", "connection": "nat"}"#).unwrap(),
            NetworkSpec {
                name: "n1".into(),
                connection: "nat".into(),
                subnet: String::new(),
                interfaces: Vec::new(),
                vlan_id: 0,
            }
        );
        assert_eq!(
            spec(
                r#"{"name": "br", "connection": "macvtap", "interfaces": ["eth0"],
                    "vlan_id": "12", "subnet": "10.0.0.0/24"}"#
            )
            .unwrap(),
            NetworkSpec {
                name: "br".into(),
                connection: "macvtap".into(),
                subnet: "10.0.0.0/24".into(),
                interfaces: vec!["eth0".into()],
                vlan_id: 12,
            }
        );
        for vlan in ["null", "0", "\"0\""] {
            let s = spec(&format!(
                r#"{{"name": "n", "connection": "bridge", "vlan_id": {vlan}}}"#
            ))
            .unwrap();
            assert_eq!(s.vlan_id, 0, "{vlan}");
        }
    }

    #[test]
    fn kimchi_2_single_interface_is_taken() {
        let s = spec(r#"{"name": "n", "connection": "bridge", "interface": "br0"}"#).unwrap();
        assert_eq!(s.interfaces, ["br0"]);
        let err = spec(
            r#"{"name": "n", "connection": "bridge", "interface": "br0",
                "interfaces": ["br0"]}"#,
        )
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn create_ignores_unknown_fields() {
        let s = spec(
            r#"{"name": "n", "connection": "isolated", "autostart": true,
                "dhcp": {"start": "x"}, "in_use": false}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            NetworkSpec {
                name: "n".into(),
                connection: "isolated".into(),
                subnet: String::new(),
                interfaces: Vec::new(),
                vlan_id: 0,
            }
        );
    }

    #[test]
    fn create_without_name_or_connection_or_with_wrong_types_is_400() {
        for (body, what) in [
            (r#"{"connection": "nat"}"#, "missing field `name`"),
            (r#"{"name": "n"}"#, "missing field `connection`"),
            (r#"{"name": 1, "connection": "nat"}"#, "invalid type"),
            (
                r#"{"name": "n", "connection": "nat", "vlan_id": "-1"}"#,
                "invalid value",
            ),
            (
                r#"{"name": "n", "connection": "nat", "vlan_id": 1.5}"#,
                "invalid type",
            ),
            (
                r#"{"name": "n", "connection": "bridge", "interfaces": "eth0"}"#,
                "invalid type",
            ),
            (r#"{"name": "n\u0000", "connection": "nat"}"#, "NUL"),
            (r#"["n", "nat"]"#, "JSON object"),
        ] {
            let err = spec(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }

    fn patch(body: &str) -> Result<NetworkPatch, Error> {
        body::json::<Changes>(body.as_bytes()).map(Changes::into_patch)
    }

    #[test]
    fn put_body_becomes_a_patch_of_only_its_fields() {
        assert_eq!(
            patch(r#"{"name": "n2", "subnet": "10.1.0.0/24", "autostart": false}"#).unwrap(),
            NetworkPatch {
                name: Some("n2".into()),
                subnet: Some("10.1.0.0/24".into()),
                autostart: Some(false),
            }
        );
        assert_eq!(
            patch(r#"{"autostart": true}"#).unwrap(),
            NetworkPatch {
                autostart: Some(true),
                ..NetworkPatch::default()
            }
        );
        assert_eq!(patch("{}").unwrap(), NetworkPatch::default());
    }

    #[test]
    fn put_is_strict() {
        for (body, what) in [
            (
                r#"{"autostart": true, "state": "active"}"#,
                "unknown field `state`",
            ),
            (r#"{"connection": "nat"}"#, "unknown field `connection`"),
            (r#"{"autostart": "true"}"#, "invalid type"),
            (r#"{"autostart": 1}"#, "invalid type"),
            (r#"{"name": 7}"#, "invalid type"),
            (r#"{"subnet": "a\u0000"}"#, "NUL"),
        ] {
            let err = patch(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }

    #[test]
    fn rename_points_to_the_new_uri() {
        let renamed = NetworkInfo {
            name: "net 2".into(),
            ..info()
        };
        let r = with_location(StatusCode::SEE_OTHER, renamed).into_response(false);
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], "/networks/net%202");
    }
}
