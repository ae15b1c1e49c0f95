//! `/storagepools/:pool/storagevolumes`, `…/:name` and its actions. Create, resize
//! and wipe run as kimchid tasks, answered through [`tasks::reply`]; kimchid checks
//! names, formats and sizes before it starts them.

use hyper::StatusCode;
use kimchi_dbus::{VolumeInfo, VolumeSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{self, Integer, Text};
use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::resources::tasks::{self, Respond};
use crate::router::{self, VolumeAction};

const DEFAULT_FORMAT: &str = "qcow2";

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Volume {
    name: String,
    /// file, block, dir, network, …
    #[serde(rename = "type")]
    kind: String,
    /// MiB, as all sizes here.
    capacity: u64,
    allocation: u64,
    format: String,
    path: String,
    /// Only for ISO images, and then always all three.
    #[serde(flatten)]
    iso: Option<Iso>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Iso {
    // Not required in the schema, which is flattened into any volume's.
    #[schema(required = false)]
    os_distro: String,
    #[schema(required = false)]
    os_version: String,
    #[schema(required = false)]
    bootable: bool,
}

impl From<VolumeInfo> for Volume {
    fn from(info: VolumeInfo) -> Self {
        Volume {
            iso: info.iso.then_some(Iso {
                os_distro: info.os_distro,
                os_version: info.os_version,
                bootable: info.bootable,
            }),
            name: info.name,
            kind: info.vol_type,
            capacity: info.capacity_mib,
            allocation: info.allocation_mib,
            format: info.format,
            path: info.file_path,
        }
    }
}

/// `POST …/storagevolumes`. Other fields are ignored, as Kimchi did: its UI sends
/// `type`, which the pool decides (a file in a directory pool, a logical volume in an
/// LVM pool).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewVolume {
    name: Text,
    /// MiB.
    capacity: Integer<u64>,
    format: Option<Text>,
    /// MiB written out at creation; none (a sparse volume) when left out. kimchid
    /// refuses more than `capacity`.
    allocation: Option<Integer<u64>>,
}

impl From<NewVolume> for VolumeSpec {
    fn from(new: NewVolume) -> Self {
        VolumeSpec {
            name: new.name.into(),
            capacity_mib: new.capacity.get(),
            allocation_mib: new.allocation.map_or(0, Integer::get),
            format: new
                .format
                .map_or_else(|| DEFAULT_FORMAT.to_owned(), String::from),
        }
    }
}

/// `POST …/:name/resize`; other fields are ignored, as for every action.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Resize {
    /// The new capacity, MiB.
    size: Integer<u64>,
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>, pool: &str) -> Result<Reply, Error> {
    let volumes = kimchid
        .manager()
        .await?
        .list_storage_volumes(pool, call.options())
        .await?;
    let volumes: Vec<Volume> = volumes.into_iter().map(Volume::from).collect();
    Ok(Reply::ok(&volumes))
}

pub async fn get(
    kimchid: &Kimchid,
    call: &Call<'_>,
    pool: &str,
    name: &str,
) -> Result<Reply, Error> {
    Ok(Reply::ok(&volume(kimchid, call, pool, name).await?))
}

async fn volume(
    kimchid: &Kimchid,
    call: &Call<'_>,
    pool: &str,
    name: &str,
) -> Result<Volume, Error> {
    let info = kimchid
        .manager()
        .await?
        .get_storage_volume(pool, name, call.options())
        .await?;
    Ok(Volume::from(info))
}

/// 201 with the new volume and its `Location`, once created.
pub async fn create(
    kimchid: &Kimchid,
    call: &Call<'_>,
    respond: Respond,
    pool: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let spec = VolumeSpec::from(body::json::<NewVolume>(body)?);
    let name = spec.name.clone();
    let started = kimchid
        .manager()
        .await?
        .create_storage_volume(pool, spec, call.task_options(respond.wait()))
        .await;
    tasks::reply(respond, started, async |_| {
        let volume = volume(kimchid, call, pool, &name).await?;
        let uri = router::volume_uri(pool, &volume.name);
        Ok(Reply::json(StatusCode::CREATED, &volume).with_location(&uri))
    })
    .await
}

/// 200 with the volume as the action left it.
pub async fn action(
    kimchid: &Kimchid,
    call: &Call<'_>,
    respond: Respond,
    (pool, name): (&str, &str),
    action: VolumeAction,
    body: &[u8],
) -> Result<Reply, Error> {
    let manager = kimchid.manager().await?;
    let options = call.task_options(respond.wait());
    let started = match action {
        VolumeAction::Resize => {
            let Resize { size } = body::action(body)?;
            manager
                .resize_storage_volume(pool, name, size.get(), options)
                .await
        }
        VolumeAction::Wipe => {
            body::action_without_parameters(body)?;
            manager.wipe_storage_volume(pool, name, options).await
        }
    };
    tasks::reply(respond, started, async |_| {
        Ok(Reply::ok(&volume(kimchid, call, pool, name).await?))
    })
    .await
}

pub async fn delete(
    kimchid: &Kimchid,
    call: &Call<'_>,
    pool: &str,
    name: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    body::no_parameters(body)?;
    kimchid
        .manager()
        .await?
        .delete_storage_volume(pool, name, call.options())
        .await?;
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(format: &str, iso: bool) -> VolumeInfo {
        VolumeInfo {
            pool: "default".into(),
            name: "a.img".into(),
            vol_type: "file".into(),
            capacity_mib: 1024,
            allocation_mib: 3,
            format: format.into(),
            file_path: "/var/lib/libvirt/images/a.img".into(),
            iso,
            os_distro: if iso { "fedora".into() } else { String::new() },
            os_version: if iso { "39".into() } else { String::new() },
            bootable: iso,
        }
    }

    #[test]
    fn disk_volume_json_has_no_iso_keys() {
        let doc = serde_json::to_value(Volume::from(info("qcow2", false))).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "name": "a.img", "type": "file", "capacity": 1024, "allocation": 3,
                "format": "qcow2", "path": "/var/lib/libvirt/images/a.img"
            })
        );
    }

    #[test]
    fn iso_volume_json_always_has_the_three_iso_keys() {
        let doc = serde_json::to_value(Volume::from(info("iso", true))).unwrap();
        assert_eq!(doc["os_distro"], "fedora");
        assert_eq!(doc["os_version"], "39");
        assert_eq!(doc["bootable"], true);
        assert_eq!(doc.as_object().unwrap().len(), 9);

        let unknown = VolumeInfo {
            os_distro: "unknown".into(),
            os_version: "unknown".into(),
            bootable: false,
            ..info("iso", true)
        };
        let doc = serde_json::to_value(Volume::from(unknown)).unwrap();
        assert_eq!(doc["bootable"], false);
        assert_eq!(doc.as_object().unwrap().len(), 9);
    }

    fn spec(body: &str) -> Result<VolumeSpec, Error> {
        body::json::<NewVolume>(body.as_bytes()).map(VolumeSpec::from)
    }

    #[test]
    fn format_defaults_to_qcow2_and_type_is_ignored() {
        let s = spec(r#"{"name": "v", "capacity": 10, "type": "file"}"#).unwrap();
        assert_eq!(
            s,
            VolumeSpec {
                name: "v".into(),
                capacity_mib: 10,
                allocation_mib: 0,
                format: "qcow2".into(),
            }
        );
        let s = spec(r#"{"name": "v", "capacity": 10, "format": "raw"}"#).unwrap();
        assert_eq!(s.format, "raw");
    }

    #[test]
    fn allocation_is_passed_on_in_mib() {
        // What Kimchi's tests send.
        let s = spec(
            r#"{"name": "test-volume", "capacity": 1024, "allocation": 512, "type": "disk",
                "format": "raw"}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            VolumeSpec {
                name: "test-volume".into(),
                capacity_mib: 1024,
                allocation_mib: 512,
                format: "raw".into(),
            }
        );
    }

    #[test]
    fn sizes_may_be_strings_of_digits() {
        let s = spec(r#"{"name": "v", "capacity": "2048", "allocation": "0"}"#).unwrap();
        assert_eq!((s.capacity_mib, s.allocation_mib), (2048, 0));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let s = spec(r#"{"name": "v", "capacity": 10, "pool": "default", "extra": [1]}"#).unwrap();
        assert_eq!(
            s,
            VolumeSpec {
                name: "v".into(),
                capacity_mib: 10,
                allocation_mib: 0,
                format: "qcow2".into(),
            }
        );
    }

    #[test]
    fn bad_volume_requests_are_400() {
        for body in [
            r#"{"capacity": 10}"#,
            r#"{"name": "v"}"#,
            r#"{"name": "v", "capacity": -1}"#,
            r#"{"name": "v", "capacity": 1.5}"#,
            r#"{"name": "v", "capacity": "2.5"}"#,
            r#"{"name": "v", "capacity": "ten"}"#,
            r#"{"name": "v", "capacity": 10, "allocation": -1}"#,
            r#"{"name": "v", "capacity": 10, "allocation": "-1"}"#,
            r#"{"name": "v", "capacity": 10, "allocation": " 2"}"#,
            r#"{"name": "v", "capacity": 10, "allocation": ""}"#,
            r#"{"name": "v\u0000", "capacity": 10}"#,
        ] {
            assert_eq!(spec(body).unwrap_err().status().as_u16(), 400, "{body}");
        }
        let err = spec(r#"{"name": "v"}"#).unwrap_err();
        assert!(err.to_string().contains("`capacity`"), "{err}");
    }

    #[test]
    fn resize_takes_a_size_in_mib_and_ignores_the_rest() {
        for body in [
            &br#"{"size": 2048}"#[..],
            br#"{"size": "2048"}"#,
            br#"{"size": 2048, "shrink": true}"#,
        ] {
            let r: Resize = body::action(body).unwrap();
            assert_eq!(r.size.get(), 2048);
        }
        for body in [
            &br#"{}"#[..],
            b"",
            br#"{"size": "1.5"}"#,
            br#"{"size": -1}"#,
            b"[2048]",
        ] {
            let err = body::action::<Resize>(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body:?}");
        }
    }
}
