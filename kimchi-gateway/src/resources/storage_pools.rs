//! `/storagepools`, `/storagepools/:name` and its actions. kimchid checks names,
//! types and paths, refuses the reserved `kimchi_isos` name and tells a duplicate;
//! the router already refused writes to the `kimchi_isos` view.

use hyper::StatusCode;
use kimchi_dbus::{PoolInfo, PoolSpec, PoolState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{self, Devices, List, Text};
use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::router::{self, PoolAction};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Pool {
    name: String,
    /// active, inactive, building, degraded or inaccessible.
    state: PoolState,
    /// The pool's directory; empty for `kimchi_isos`.
    path: String,
    /// dir, netfs, logical, …, or `kimchi-iso`.
    #[serde(rename = "type")]
    kind: String,
    /// MiB, as all sizes here.
    capacity: u64,
    allocated: u64,
    available: u64,
    /// 0 for inactive pools.
    nr_volumes: u32,
}

impl From<PoolInfo> for Pool {
    fn from(info: PoolInfo) -> Self {
        Pool {
            name: info.name,
            state: info.state,
            path: info.target_path,
            kind: info.pool_type,
            capacity: info.capacity_mib,
            allocated: info.allocated_mib,
            available: info.available_mib,
            nr_volumes: info.nr_volumes,
        }
    }
}

/// `POST /storagepools`: Kimchi's `name`, `type`, `path`, plus the `source` of
/// network and LVM pools. Other fields are ignored, as Kimchi did (its tests send
/// `capacity` and `allocated`). `source`, which the 2013 API lacks, stays strict: a
/// misspelt key there would silently leave out part of the pool's definition.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewPool {
    name: Text,
    #[serde(rename = "type")]
    kind: Text,
    /// Not needed by logical pools.
    path: Option<Text>,
    source: Option<Source>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PoolSource)]
pub(crate) struct Source {
    /// netfs: the server.
    host: Option<Text>,
    /// netfs: the exported directory.
    path: Option<Text>,
    /// logical: the physical volumes.
    #[serde(default)]
    devices: List<Text, Devices>,
}

impl From<NewPool> for PoolSpec {
    fn from(new: NewPool) -> Self {
        let text = |t: Option<Text>| t.map(String::from).unwrap_or_default();
        let source = new.source.unwrap_or_default();
        PoolSpec {
            name: new.name.into(),
            pool_type: new.kind.into(),
            path: text(new.path),
            source_host: text(source.host),
            source_path: text(source.path),
            source_devices: source
                .devices
                .into_vec()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>) -> Result<Reply, Error> {
    let pools = kimchid
        .manager()
        .await?
        .list_storage_pools(call.options())
        .await?;
    // kimchid's order, kimchi_isos last, as in Kimchi.
    let pools: Vec<Pool> = pools.into_iter().map(Pool::from).collect();
    Ok(Reply::ok(&pools))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, name: &str) -> Result<Reply, Error> {
    let info = kimchid
        .manager()
        .await?
        .get_storage_pool(name, call.options())
        .await?;
    Ok(Reply::ok(&Pool::from(info)))
}

/// 201 with the new (inactive) pool and its `Location`.
pub async fn create(kimchid: &Kimchid, call: &Call<'_>, body: &[u8]) -> Result<Reply, Error> {
    let spec = PoolSpec::from(body::json::<NewPool>(body)?);
    let info = kimchid
        .manager()
        .await?
        .create_storage_pool(spec, call.options())
        .await?;
    let uri = router::pool_uri(&info.name);
    Ok(Reply::json(StatusCode::CREATED, &Pool::from(info)).with_location(&uri))
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
        .delete_storage_pool(name, call.options())
        .await?;
    Ok(Reply::no_content())
}

/// 200 with the pool as the action left it.
pub async fn action(
    kimchid: &Kimchid,
    call: &Call<'_>,
    name: &str,
    action: PoolAction,
    body: &[u8],
) -> Result<Reply, Error> {
    body::action_without_parameters(body)?;
    let manager = kimchid.manager().await?;
    let info = match action {
        PoolAction::Activate => manager.activate_storage_pool(name, call.options()).await?,
        PoolAction::Deactivate => {
            manager
                .deactivate_storage_pool(name, call.options())
                .await?
        }
    };
    Ok(Reply::ok(&Pool::from(info)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, kind: &str, target_path: &str) -> PoolInfo {
        PoolInfo {
            path: zbus::OwnedObjectPath::try_from(kimchi_dbus::pool_path("u-1")).unwrap(),
            name: name.into(),
            state: PoolState::Active,
            target_path: target_path.into(),
            pool_type: kind.into(),
            capacity_mib: 1000,
            allocated_mib: 300,
            available_mib: 700,
            nr_volumes: 4,
        }
    }

    #[test]
    fn pool_json_has_exactly_the_spec_keys() {
        let doc = serde_json::to_value(Pool::from(info("default", "dir", "/var/lib/img"))).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "name": "default", "state": "active", "path": "/var/lib/img", "type": "dir",
                "capacity": 1000, "allocated": 300, "available": 700, "nr_volumes": 4
            })
        );
    }

    #[test]
    fn pool_state_is_the_state_word() {
        for (state, word) in [
            (PoolState::Inactive, "inactive"),
            (PoolState::Building, "building"),
            (PoolState::Active, "active"),
            (PoolState::Degraded, "degraded"),
            (PoolState::Inaccessible, "inaccessible"),
        ] {
            let pool = PoolInfo {
                state,
                ..info("p", "dir", "/srv/p")
            };
            assert_eq!(
                serde_json::to_value(Pool::from(pool)).unwrap()["state"],
                word
            );
        }
    }

    #[test]
    fn iso_pool_is_shown_like_any_pool() {
        let doc = serde_json::to_value(Pool::from(info(kimchi_dbus::ISO_POOL, "kimchi-iso", "")))
            .unwrap();
        assert_eq!(doc["type"], "kimchi-iso");
        assert_eq!(doc["path"], "");
        assert_eq!(doc.as_object().unwrap().len(), 8);
    }

    fn spec(body: &str) -> Result<PoolSpec, Error> {
        body::json::<NewPool>(body.as_bytes()).map(PoolSpec::from)
    }

    #[test]
    fn source_devices_are_bounded() {
        let body = |n: usize| {
            let devices: Vec<String> = (0..n).map(|i| format!(r#""/dev/sd{i}""#)).collect();
            format!(
                r#"{{"name": "vg", "type": "logical", "source": {{"devices": [{}]}}}}"#,
                devices.join(",")
            )
        };
        assert_eq!(spec(&body(64)).unwrap().source_devices.len(), 64);
        let err = spec(&body(65)).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(
            err.to_string()
                .contains("source.devices takes at most 64 entries"),
            "{err}"
        );
    }

    #[test]
    fn dir_pool_request_becomes_a_spec_with_empty_source() {
        let s = spec(r#"{"name": "p1", "type": "dir", "path": "/srv/p1"}"#).unwrap();
        assert_eq!(
            s,
            PoolSpec {
                name: "p1".into(),
                pool_type: "dir".into(),
                path: "/srv/p1".into(),
                source_host: String::new(),
                source_path: String::new(),
                source_devices: Vec::new(),
            }
        );
    }

    #[test]
    fn source_fields_are_passed_on() {
        let s = spec(
            r#"{"name": "nfs", "type": "netfs", "path": "/mnt/nfs",
                "source": {"host": "filer", "path": "/export"}}"#,
        )
        .unwrap();
        assert_eq!(
            (s.source_host.as_str(), s.source_path.as_str()),
            ("filer", "/export")
        );
        let s = spec(
            r#"{"name": "vg", "type": "logical", "source": {"devices": ["/dev/sdb", "/dev/sdc"]}}"#,
        )
        .unwrap();
        assert_eq!(s.source_devices, ["/dev/sdb", "/dev/sdc"]);
        assert_eq!(s.path, "");
    }

    #[test]
    fn missing_name_or_type_is_400_naming_the_field() {
        for (body, field) in [
            (r#"{"type": "dir", "path": "/srv/p"}"#, "name"),
            (r#"{"name": "p", "path": "/srv/p"}"#, "type"),
        ] {
            let err = spec(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400);
            assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        // What Kimchi's tests send.
        let s = spec(
            r#"{"name": "alt", "capacity": 1024, "allocated": 512, "path": "/tmp",
                "type": "dir"}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            PoolSpec {
                name: "alt".into(),
                pool_type: "dir".into(),
                path: "/tmp".into(),
                source_host: String::new(),
                source_path: String::new(),
                source_devices: Vec::new(),
            }
        );
    }

    #[test]
    fn unknown_source_fields_or_mistyped_fields_are_400() {
        let err = spec(r#"{"name": "p", "type": "dir", "source": {"hosts": "x"}}"#).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("unknown field `hosts`"), "{err}");
        for body in [
            r#"{"name": 1, "type": "dir"}"#,
            r#"{"name": "p", "type": "logical", "source": {"devices": "/dev/sdb"}}"#,
            r#"{"name": "p\u0000", "type": "dir"}"#,
        ] {
            assert_eq!(spec(body).unwrap_err().status().as_u16(), 400, "{body}");
        }
    }
}
