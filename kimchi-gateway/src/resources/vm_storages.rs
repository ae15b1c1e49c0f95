//! `/vms/:name/storages` and `/vms/:name/storages/:dev`: a VM's disks and CD-ROM
//! drives (Kimchi 2's API). Here a new drive's body is checked for its shape (which
//! fields a CD-ROM or a disk needs); kimchid checks that what it names exists and may
//! be used. kimchid lists a VM's drives in one call; a single one is found in that list.

use hyper::StatusCode;
use kimchi_dbus::{VmStorage, VmStorageSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{self, Integer, Text};
use crate::error::{quote, Error};
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::router;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Storage {
    dev: String,
    /// disk or cdrom.
    #[serde(rename = "type")]
    kind: String,
    /// "" for an empty CD-ROM drive.
    path: String,
    bus: String,
    /// null when unset.
    format: Option<String>,
}

impl From<VmStorage> for Storage {
    fn from(info: VmStorage) -> Self {
        Storage {
            dev: info.dev,
            kind: info.storage_type,
            path: info.path,
            bus: info.bus,
            format: (!info.format.is_empty()).then_some(info.format),
        }
    }
}

/// `POST /vms/:name/storages`: `{type: cdrom, path}`, `{type: disk, pool, vol}` or
/// `{type: disk, pool, size}`. Other fields are ignored, as on every creation.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewStorage {
    #[serde(rename = "type")]
    kind: Text,
    /// A CD-ROM's ISO image: a file's path or a `kimchi_isos` volume name.
    path: Option<Text>,
    pool: Option<Text>,
    /// An existing volume of `pool`.
    vol: Option<Text>,
    /// GiB of a new volume made in `pool`.
    size: Option<Integer<u64>>,
}

impl TryFrom<NewStorage> for VmStorageSpec {
    type Error = Error;

    fn try_from(new: NewStorage) -> Result<Self, Error> {
        let invalid = |why: &str| Err(Error::InvalidBody(why.to_owned()));
        match String::from(new.kind).as_str() {
            "cdrom" => match new.path {
                Some(path) => Ok(VmStorageSpec {
                    storage_type: "cdrom".into(),
                    path: path.into(),
                    ..VmStorageSpec::default()
                }),
                None => invalid("a cdrom needs `path`, an ISO image"),
            },
            "disk" => {
                let Some(pool) = new.pool else {
                    return invalid("a disk needs `pool`, the storage pool of its volume");
                };
                let (volume, size_mib) = match (new.vol, new.size.map(Integer::get)) {
                    (Some(vol), None) => (vol.into(), 0),
                    (None, Some(0)) => return invalid("`size` must be at least 1 GiB"),
                    (None, Some(gib)) => match gib.checked_mul(1024) {
                        Some(mib) => (String::new(), mib),
                        None => return invalid("`size` is too large"),
                    },
                    (Some(_), Some(_)) => return invalid("a disk takes `vol` or `size`, not both"),
                    (None, None) => {
                        return invalid(
                            "a disk needs `vol` (an existing volume) or `size` (GiB of a new one)",
                        )
                    }
                };
                Ok(VmStorageSpec {
                    storage_type: "disk".into(),
                    pool: pool.into(),
                    volume,
                    size_mib,
                    ..VmStorageSpec::default()
                })
            }
            other => Err(Error::InvalidBody(format!(
                "`type` must be 'cdrom' or 'disk', not '{}'",
                quote(other)
            ))),
        }
    }
}

/// The body of `PUT /vms/:name/storages/:dev`: a CD-ROM's new medium ("" ejects it).
/// Strict, so a misspelt field is a 400 rather than a change silently not made.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StorageChanges)]
pub(crate) struct Changes {
    path: Text,
}

async fn all(kimchid: &Kimchid, call: &Call<'_>, vm: &str) -> Result<Vec<VmStorage>, Error> {
    Ok(kimchid
        .manager()
        .await?
        .list_vm_storages(vm, call.options())
        .await?)
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>, vm: &str) -> Result<Reply, Error> {
    let storages: Vec<Storage> = all(kimchid, call, vm)
        .await?
        .into_iter()
        .map(Storage::from)
        .collect();
    Ok(Reply::ok(&storages))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, vm: &str, dev: &str) -> Result<Reply, Error> {
    let storage = find(all(kimchid, call, vm).await?, vm, dev)?;
    Ok(Reply::ok(&Storage::from(storage)))
}

/// The drive with this target device name, or 404.
fn find(storages: Vec<VmStorage>, vm: &str, dev: &str) -> Result<VmStorage, Error> {
    storages
        .into_iter()
        .find(|s| s.dev == dev)
        .ok_or_else(|| Error::NotFound(format!("VM '{vm}' has no drive '{}'", quote(dev))))
}

/// 201 with the new drive and its `Location`.
pub async fn create(
    kimchid: &Kimchid,
    call: &Call<'_>,
    vm: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let spec = VmStorageSpec::try_from(body::json::<NewStorage>(body)?)?;
    let info = kimchid
        .manager()
        .await?
        .attach_vm_storage(vm, spec, call.options())
        .await?;
    let uri = router::vm_storage_uri(vm, &info.dev);
    Ok(Reply::json(StatusCode::CREATED, &Storage::from(info)).with_location(&uri))
}

/// 200 with the drive and its new medium.
pub async fn update(
    kimchid: &Kimchid,
    call: &Call<'_>,
    vm: &str,
    dev: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let Changes { path } = body::json(body)?;
    let info = kimchid
        .manager()
        .await?
        .update_vm_storage(vm, dev, &String::from(path), call.options())
        .await?;
    Ok(Reply::ok(&Storage::from(info)))
}

pub async fn delete(
    kimchid: &Kimchid,
    call: &Call<'_>,
    vm: &str,
    dev: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    body::no_parameters(body)?;
    kimchid
        .manager()
        .await?
        .detach_vm_storage(vm, dev, call.options())
        .await?;
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dev: &str) -> VmStorage {
        VmStorage {
            dev: dev.into(),
            storage_type: "disk".into(),
            path: "/var/lib/libvirt/images/web-0.img".into(),
            bus: "virtio".into(),
            format: "qcow2".into(),
        }
    }

    #[test]
    fn storage_json_has_kimchi_keys() {
        assert_eq!(
            serde_json::to_value(Storage::from(info("vda"))).unwrap(),
            serde_json::json!({
                "dev": "vda", "type": "disk", "path": "/var/lib/libvirt/images/web-0.img",
                "bus": "virtio", "format": "qcow2"
            })
        );
    }

    #[test]
    fn empty_cdrom_drive_has_empty_path_and_null_format() {
        let empty = VmStorage {
            storage_type: "cdrom".into(),
            path: String::new(),
            bus: "ide".into(),
            format: String::new(),
            ..info("hdc")
        };
        assert_eq!(
            serde_json::to_value(Storage::from(empty)).unwrap(),
            serde_json::json!({
                "dev": "hdc", "type": "cdrom", "path": "", "bus": "ide", "format": null
            })
        );
    }

    #[test]
    fn one_drive_is_found_by_its_exact_device_name() {
        let list = || vec![info("vda"), info("hdc")];
        assert_eq!(find(list(), "web", "hdc").unwrap().dev, "hdc");
        for missing in ["vdb", "HDC", "hd", ""] {
            let err = find(list(), "web", missing).unwrap_err();
            assert_eq!(err.status(), StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(
                err.to_string(),
                format!("VM 'web' has no drive '{missing}'")
            );
        }
    }

    fn spec(body: &str) -> Result<VmStorageSpec, Error> {
        body::json::<NewStorage>(body.as_bytes()).and_then(VmStorageSpec::try_from)
    }

    #[test]
    fn cdrom_takes_a_path() {
        for path in ["/srv/isos/f39.iso", "default:f39.iso"] {
            assert_eq!(
                spec(&format!(
                    r#"{{"type": "cdrom", "path": "{path}", "bus": "ide"}}"#
                ))
                .unwrap(),
                VmStorageSpec {
                    storage_type: "cdrom".into(),
                    path: path.into(),
                    ..VmStorageSpec::default()
                }
            );
        }
    }

    #[test]
    fn disk_takes_an_existing_volume_or_a_size_in_gib() {
        assert_eq!(
            spec(r#"{"type": "disk", "pool": "default", "vol": "data.img"}"#).unwrap(),
            VmStorageSpec {
                storage_type: "disk".into(),
                pool: "default".into(),
                volume: "data.img".into(),
                ..VmStorageSpec::default()
            }
        );
        for size in ["10", "\"10\""] {
            assert_eq!(
                spec(&format!(
                    r#"{{"type": "disk", "pool": "default", "size": {size}}}"#
                ))
                .unwrap(),
                VmStorageSpec {
                    storage_type: "disk".into(),
                    pool: "default".into(),
                    size_mib: 10 * 1024,
                    ..VmStorageSpec::default()
                },
                "{size}"
            );
        }
    }

    #[test]
    fn wrong_shapes_are_400_naming_the_field() {
        for (body, message) in [
            (r#"{"type": "cdrom"}"#, "a cdrom needs `path`, an ISO image"),
            (
                r#"{"type": "cdrom", "pool": "default", "vol": "a.iso"}"#,
                "a cdrom needs `path`, an ISO image",
            ),
            (
                r#"{"type": "disk", "vol": "a.img"}"#,
                "a disk needs `pool`, the storage pool of its volume",
            ),
            (
                r#"{"type": "disk", "path": "/a.img"}"#,
                "a disk needs `pool`, the storage pool of its volume",
            ),
            (
                r#"{"type": "disk", "pool": "default"}"#,
                "a disk needs `vol` (an existing volume) or `size` (GiB of a new one)",
            ),
            (
                r#"{"type": "disk", "pool": "default", "vol": "a.img", "size": 1}"#,
                "a disk takes `vol` or `size`, not both",
            ),
            (
                r#"{"type": "disk", "pool": "default", "size": 0}"#,
                "`size` must be at least 1 GiB",
            ),
            (
                r#"{"type": "disk", "pool": "default", "size": 18014398509481984}"#,
                "`size` is too large",
            ),
            (
                r#"{"type": "floppy", "path": "/a.img"}"#,
                "`type` must be 'cdrom' or 'disk', not 'floppy'",
            ),
        ] {
            let err = spec(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(err.to_string(), message, "{body}");
        }
    }

    #[test]
    fn wrong_types_are_400() {
        for (body, what) in [
            (r#"{"path": "/a.iso"}"#, "missing field `type`"),
            (r#"{"type": 1, "path": "/a.iso"}"#, "invalid type"),
            (
                r#"{"type": "disk", "pool": "p", "size": -1}"#,
                "invalid value",
            ),
            (
                r#"{"type": "disk", "pool": "p", "size": "1.5"}"#,
                "invalid value",
            ),
            (
                r#"{"type": "disk", "pool": "p", "size": 1.5}"#,
                "invalid type",
            ),
            (r#"{"type": "cdrom", "path": "/a\u0000.iso"}"#, "NUL"),
            ("[]", "JSON object"),
        ] {
            let err = spec(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }

    fn changes(body: &str) -> Result<String, Error> {
        body::json::<Changes>(body.as_bytes()).map(|c| c.path.into())
    }

    #[test]
    fn put_takes_a_path_and_nothing_else() {
        assert_eq!(changes(r#"{"path": "/srv/b.iso"}"#).unwrap(), "/srv/b.iso");
        // Ejects the medium.
        assert_eq!(changes(r#"{"path": ""}"#).unwrap(), "");
        for (body, what) in [
            ("{}", "missing field `path`"),
            (
                r#"{"path": "/b.iso", "type": "cdrom"}"#,
                "unknown field `type`",
            ),
            (r#"{"path": null}"#, "invalid type"),
            ("", "JSON object"),
        ] {
            let err = changes(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }
}
