//! `/storagepools/:pool/storagevolumes`, `…/:name` and its actions. Create, resize
//! and wipe run as kimchid tasks, answered through [`tasks::reply`]; kimchid checks
//! names, formats and sizes before it starts them.

use hyper::header::{HeaderValue, LOCATION};
use hyper::StatusCode;
use kimchi_dbus::{VolumeInfo, VolumeSpec};
use serde::{Deserialize, Serialize};

use crate::body::{self, Text};
use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::resources::tasks::{self, Respond};
use crate::router::{self, VolumeAction};

const DEFAULT_FORMAT: &str = "qcow2";

#[derive(Debug, Serialize)]
struct Volume {
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

#[derive(Debug, Serialize)]
struct Iso {
    os_distro: String,
    os_version: String,
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

/// `POST …/storagevolumes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVolume {
    name: Text,
    /// MiB.
    capacity: u64,
    format: Option<Text>,
    /// Accepted and ignored, as Kimchi did: the pool decides what a volume is (a
    /// file in a directory pool, a logical volume in an LVM pool), and Kimchi's UI
    /// sends it.
    #[serde(rename = "type")]
    _kind: Option<Text>,
}

impl From<NewVolume> for VolumeSpec {
    fn from(new: NewVolume) -> Self {
        VolumeSpec {
            name: new.name.into(),
            capacity_mib: new.capacity,
            allocation_mib: 0,
            format: new
                .format
                .map_or_else(|| DEFAULT_FORMAT.to_owned(), String::from),
        }
    }
}

/// `POST …/:name/resize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    /// The new capacity, MiB.
    size: u64,
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
        let location = HeaderValue::from_str(&router::volume_uri(pool, &volume.name))
            .expect("an encoded path is a valid header value");
        Ok(Reply::json(StatusCode::CREATED, &volume).with_header(LOCATION, location))
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
            let Resize { size } = body::json(body)?;
            manager
                .resize_storage_volume(pool, name, size, options)
                .await
        }
        VolumeAction::Wipe => {
            body::no_parameters(body)?;
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
    fn bad_volume_requests_are_400() {
        for body in [
            r#"{"capacity": 10}"#,
            r#"{"name": "v"}"#,
            r#"{"name": "v", "capacity": -1}"#,
            r#"{"name": "v", "capacity": 1.5}"#,
            r#"{"name": "v", "capacity": "10"}"#,
            r#"{"name": "v", "capacity": 10, "allocation": 0}"#,
            r#"{"name": "v\u0000", "capacity": 10}"#,
        ] {
            assert_eq!(spec(body).unwrap_err().status().as_u16(), 400, "{body}");
        }
        let err = spec(r#"{"name": "v"}"#).unwrap_err();
        assert!(err.to_string().contains("`capacity`"), "{err}");
    }

    #[test]
    fn resize_takes_only_a_size_in_mib() {
        let r: Resize = body::json(br#"{"size": 2048}"#).unwrap();
        assert_eq!(r.size, 2048);
        for body in [&br#"{}"#[..], br#"{"size": 1, "shrink": true}"#, b""] {
            assert_eq!(
                body::json::<Resize>(body).unwrap_err().status().as_u16(),
                400
            );
        }
    }
}
