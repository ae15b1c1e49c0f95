//! `/templates` and `/templates/:name`. kimchid fills in the defaults and checks
//! values; here the JSON is parsed into types, so a misspelt field or a wrong type
//! is a 400 before kimchid is asked. A `PUT` sends kimchid only the fields it names
//! ([`TemplatePatch`]), which kimchid merges into the stored template under its own
//! lock: two clients changing different fields at once both keep their change.

use std::num::{NonZeroU32, NonZeroU64};

use hyper::StatusCode;
use kimchi_dbus::{TemplateDisk, TemplateInfo, TemplatePatch, TemplateSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{self, Disks, Folders, Integer, List, Text, TextOrNumber};
use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::router;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Template {
    name: String,
    folder: Vec<String>,
    icon: Option<String>,
    os_distro: String,
    os_version: String,
    cpus: u32,
    /// MiB.
    memory: u64,
    /// Empty when the template has no installation medium, as in Kimchi.
    cdrom: String,
    disks: Vec<Disk>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TemplateDisk)]
pub(crate) struct Disk {
    index: u32,
    /// GB; left out when the disk's size comes from `volume`.
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<String>,
}

impl From<TemplateInfo> for Template {
    fn from(info: TemplateInfo) -> Self {
        let spec = info.spec;
        Template {
            name: spec.name,
            folder: spec.folder,
            icon: (!spec.icon.is_empty()).then_some(spec.icon),
            os_distro: spec.os_distro,
            os_version: spec.os_version,
            cpus: spec.cpus,
            memory: spec.memory_mib,
            cdrom: spec.cdrom,
            disks: spec
                .disks
                .into_iter()
                .map(|d| Disk {
                    index: d.index,
                    size: (d.size_gb > 0).then_some(d.size_gb),
                    volume: (!d.volume.is_empty()).then_some(d.volume),
                })
                .collect(),
        }
    }
}

/// The body of `POST /templates` (where `name` is required) and of `PUT`. Both are
/// strict, as in Kimchi's schema: a field unknown here is a mistake to report.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TemplateFields)]
pub(crate) struct Fields {
    name: Option<Text>,
    folder: Option<List<Text, Folders>>,
    icon: Option<Text>,
    os_distro: Option<TextOrNumber>,
    os_version: Option<TextOrNumber>,
    #[schema(value_type = Option<body::PositiveU32>)]
    cpus: Option<Integer<NonZeroU32>>,
    /// MiB.
    #[schema(value_type = Option<body::PositiveU64>)]
    memory: Option<Integer<NonZeroU64>>,
    cdrom: Option<Text>,
    disks: Option<List<DiskFields, Disks>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TemplateDiskFields)]
pub(crate) struct DiskFields {
    /// Its position in `disks` when left out.
    index: Option<Integer<u32>>,
    /// GB.
    #[schema(value_type = Option<body::PositiveU64>)]
    size: Option<Integer<NonZeroU64>>,
    volume: Option<Text>,
}

impl Fields {
    /// The fields given here, and only those.
    fn into_patch(self) -> TemplatePatch {
        let text = |t: Option<Text>| t.map(String::from);
        TemplatePatch {
            name: text(self.name),
            folder: self
                .folder
                .map(|folder| folder.into_vec().into_iter().map(String::from).collect()),
            icon: text(self.icon),
            os_distro: self.os_distro.map(String::from),
            os_version: self.os_version.map(String::from),
            cpus: self.cpus.map(|cpus| cpus.get().get()),
            memory_mib: self.memory.map(|memory| memory.get().get()),
            cdrom: text(self.cdrom),
            disks: self.disks.map(|disks| {
                disks
                    .into_vec()
                    .into_iter()
                    .zip(0..)
                    .map(|(d, position)| TemplateDisk {
                        index: d.index.map_or(position, Integer::get),
                        size_gb: d.size.map_or(0, |size| size.get().get()),
                        volume: d.volume.map(String::from).unwrap_or_default(),
                    })
                    .collect()
            }),
        }
    }
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>) -> Result<Reply, Error> {
    let templates: Vec<Template> = kimchid
        .manager()
        .await?
        .list_templates(call.options())
        .await?
        .into_iter()
        .map(Template::from)
        .collect();
    Ok(Reply::ok(&templates))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, name: &str) -> Result<Reply, Error> {
    let info = kimchid
        .manager()
        .await?
        .get_template(name, call.options())
        .await?;
    Ok(Reply::ok(&Template::from(info)))
}

/// 201 with the template as stored (defaults filled in) and its `Location`.
pub async fn create(kimchid: &Kimchid, call: &Call<'_>, body: &[u8]) -> Result<Reply, Error> {
    let fields = body::json::<Fields>(body)?;
    if fields.name.is_none() {
        return Err(Error::InvalidBody("missing field `name`".into()));
    }
    let info = kimchid
        .manager()
        .await?
        .create_template(
            fields.into_patch().apply(TemplateSpec::default()),
            call.options(),
        )
        .await?;
    Ok(with_location(StatusCode::CREATED, info))
}

/// 200 with the changed template, or 303 to its new URI when it was renamed.
pub async fn update(
    kimchid: &Kimchid,
    call: &Call<'_>,
    name: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let patch = body::json::<Fields>(body)?.into_patch();
    let info = kimchid
        .manager()
        .await?
        .update_template(name, patch.to_dict(), call.options())
        .await?;
    if info.spec.name == name {
        Ok(Reply::ok(&Template::from(info)))
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
        .delete_template(name, call.options())
        .await?;
    Ok(Reply::no_content())
}

fn with_location(status: StatusCode, info: TemplateInfo) -> Reply {
    let uri = router::template_uri(&info.spec.name);
    Reply::json(status, &Template::from(info)).with_location(&uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Result<Fields, Error> {
        body::json::<Fields>(json.as_bytes())
    }

    /// `n` copies of `item`, as a JSON list.
    fn json_list(n: usize, item: &str) -> String {
        format!("[{}]", vec![item; n].join(","))
    }

    #[test]
    fn folders_and_disks_are_bounded() {
        let folder = |n| fields(&format!(r#"{{"folder": {}}}"#, json_list(n, r#""a""#)));
        assert_eq!(folder(64).unwrap().folder.unwrap().into_vec().len(), 64);
        let err = folder(65).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(
            err.to_string().contains("folder takes at most 64 entries"),
            "{err}"
        );
        let disks = |n| {
            fields(&format!(
                r#"{{"disks": {}}}"#,
                json_list(n, r#"{"size": 1}"#)
            ))
        };
        assert_eq!(disks(32).unwrap().disks.unwrap().into_vec().len(), 32);
        let err = disks(100_000).unwrap_err();
        assert!(
            err.to_string().contains("disks takes at most 32 entries"),
            "{err}"
        );
    }

    #[test]
    fn put_body_becomes_a_patch_of_only_its_fields() {
        let patch = fields(
            r#"{"memory": 4096, "disks": [{"size": 5}, {"index": 4, "volume": "base.img"}]}"#,
        )
        .unwrap()
        .into_patch();
        assert_eq!(
            patch,
            TemplatePatch {
                memory_mib: Some(4096),
                // A disk without an index takes its position in the list.
                disks: Some(vec![
                    TemplateDisk {
                        index: 0,
                        size_gb: 5,
                        volume: String::new()
                    },
                    TemplateDisk {
                        index: 4,
                        size_gb: 0,
                        volume: "base.img".into()
                    },
                ]),
                ..TemplatePatch::default()
            }
        );
        let dict = patch.to_dict();
        let mut keys: Vec<&str> = dict.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["disks", "memory_mib"]);

        let patch = fields(r#"{"name": "new", "folder": ["a", "b"], "cpus": 2, "icon": ""}"#)
            .unwrap()
            .into_patch();
        assert_eq!(
            patch,
            TemplatePatch {
                name: Some("new".into()),
                folder: Some(vec!["a".into(), "b".into()]),
                icon: Some(String::new()),
                cpus: Some(2),
                ..TemplatePatch::default()
            }
        );
        assert!(fields("{}").unwrap().into_patch().to_dict().is_empty());
    }

    #[test]
    fn post_body_fills_an_empty_spec() {
        let spec = fields(r#"{"name": "t", "cpus": 2, "disks": [{"size": 10}]}"#)
            .unwrap()
            .into_patch()
            .apply(TemplateSpec::default());
        assert_eq!(
            spec,
            TemplateSpec {
                name: "t".into(),
                cpus: 2,
                disks: vec![TemplateDisk {
                    index: 0,
                    size_gb: 10,
                    volume: String::new()
                }],
                ..TemplateSpec::default()
            }
        );
    }

    #[test]
    fn form_values_are_taken_as_numbers() {
        // As Kimchi's UI sends its form fields, and its tests the OS version.
        let patch = fields(
            r#"{"name": "t", "cpus": "2", "memory": "2048", "os_distro": "ImagineOS",
                "os_version": 1.0, "disks": [{"index": "1", "size": "5"}]}"#,
        )
        .unwrap()
        .into_patch();
        assert_eq!(
            patch,
            TemplatePatch {
                name: Some("t".into()),
                os_distro: Some("ImagineOS".into()),
                os_version: Some("1.0".into()),
                cpus: Some(2),
                memory_mib: Some(2048),
                disks: Some(vec![TemplateDisk {
                    index: 1,
                    size_gb: 5,
                    volume: String::new()
                }]),
                ..TemplatePatch::default()
            }
        );
        for (version, text) in [("12", "12"), ("22.04", "22.04"), ("1.1", "1.1")] {
            let patch = fields(&format!(r#"{{"os_version": {version}, "os_distro": 7}}"#))
                .unwrap()
                .into_patch();
            assert_eq!(patch.os_version.as_deref(), Some(text));
            assert_eq!(patch.os_distro.as_deref(), Some("7"));
        }
    }

    #[test]
    fn unknown_field_is_400_naming_it() {
        // Template creation and PUT share these fields; both stay strict.
        let err = fields(r#"{"name": "t", "colour": "red"}"#).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        let err = fields(r#"{"disks": [{"size": 1, "bus": "virtio"}]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `bus`"), "{err}");
    }

    #[test]
    fn unknown_fields_wrong_types_and_zeros_are_refused() {
        for body in [
            r#"{"name": "t", "colour": "red"}"#,
            r#"{"name": "t", "cpus": "2.5"}"#,
            r#"{"name": "t", "cpus": "two"}"#,
            r#"{"name": "t", "cpus": ""}"#,
            r#"{"name": "t", "cpus": "0"}"#,
            r#"{"name": "t", "memory": "-1"}"#,
            r#"{"name": "t", "memory": " 2048"}"#,
            r#"{"name": "t", "disks": [{"size": "1.5"}]}"#,
            r#"{"name": "t", "disks": [{"index": "-1"}]}"#,
            r#"{"name": "t", "os_version": true}"#,
            r#"{"name": "t", "os_distro": ["a"]}"#,
            r#"{"name": "t", "cpus": 0}"#,
            r#"{"name": "t", "memory": -1}"#,
            r#"{"name": "t", "disks": [{"size": 0}]}"#,
            r#"{"name": "t", "disks": [{"bus": "virtio"}]}"#,
            r#"{"name": "t", "folder": "a/b"}"#,
            r#"{"name": 7}"#,
        ] {
            let err = fields(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
        }
    }

    #[test]
    fn template_json_has_kimchi_keys() {
        let spec = TemplateSpec {
            name: "t".into(),
            os_distro: "debian".into(),
            os_version: "12".into(),
            cpus: 1,
            memory_mib: 1024,
            disks: vec![TemplateDisk {
                index: 0,
                size_gb: 10,
                volume: String::new(),
            }],
            ..TemplateSpec::default()
        };
        let info = TemplateInfo {
            path: zbus::OwnedObjectPath::try_from(kimchi_dbus::template_path("t")).unwrap(),
            spec,
            disk_bus: "virtio".into(),
            nic_model: "virtio".into(),
        };
        assert_eq!(
            serde_json::to_value(Template::from(info)).unwrap(),
            serde_json::json!({
                "name": "t", "folder": [], "icon": null, "os_distro": "debian",
                "os_version": "12", "cpus": 1, "memory": 1024, "cdrom": "",
                "disks": [{"index": 0, "size": 10}]
            })
        );
    }
}
