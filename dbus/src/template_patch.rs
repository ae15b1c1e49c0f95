//! A change to a template: only the fields it names, as an `a{sv}` dictionary keyed
//! by `TemplateSpec`'s field names, so kimchid merges it into the stored template
//! under its own lock (two clients changing different fields both win).

use zbus::Variant;

use crate::dict::{put, read, Dict};
use crate::{Error, TemplateDisk, TemplateSpec};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplatePatch {
    /// A new name: the template is renamed.
    pub name: Option<String>,
    pub folder: Option<Vec<String>>,
    pub icon: Option<String>,
    pub os_distro: Option<String>,
    pub os_version: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub cdrom: Option<String>,
    pub disks: Option<Vec<TemplateDisk>>,
}

impl TemplatePatch {
    /// `spec` with the fields named here replacing its own.
    pub fn apply(self, mut spec: TemplateSpec) -> TemplateSpec {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        set(&mut spec.name, self.name);
        set(&mut spec.folder, self.folder);
        set(&mut spec.icon, self.icon);
        set(&mut spec.os_distro, self.os_distro);
        set(&mut spec.os_version, self.os_version);
        set(&mut spec.cpus, self.cpus);
        set(&mut spec.memory_mib, self.memory_mib);
        set(&mut spec.cdrom, self.cdrom);
        set(&mut spec.disks, self.disks);
        spec
    }

    /// The wire dictionary, as a client sends it.
    pub fn to_dict(&self) -> Dict {
        let mut dict = Dict::new();
        for (key, value) in [
            ("name", &self.name),
            ("icon", &self.icon),
            ("os_distro", &self.os_distro),
            ("os_version", &self.os_version),
            ("cdrom", &self.cdrom),
        ] {
            if let Some(v) = value {
                put(&mut dict, key, Variant::from(v.as_str()));
            }
        }
        if let Some(folder) = &self.folder {
            put(&mut dict, "folder", Variant::from(folder.clone()));
        }
        if let Some(cpus) = self.cpus {
            put(&mut dict, "cpus", Variant::from(cpus));
        }
        if let Some(memory) = self.memory_mib {
            put(&mut dict, "memory_mib", Variant::from(memory));
        }
        if let Some(disks) = &self.disks {
            let tuples: Vec<(u32, u64, String)> = disks
                .iter()
                .map(|d| (d.index, d.size_gb, d.volume.clone()))
                .collect();
            put(&mut dict, "disks", Variant::from(tuples));
        }
        dict
    }

    /// Parses the wire dictionary; an unknown key or a wrongly typed value is refused,
    /// so a typo never silently leaves a field unchanged.
    pub fn from_dict(dict: &Dict) -> Result<Self, Error> {
        let mut patch = TemplatePatch::default();
        for (key, value) in dict {
            let value: &Variant<'_> = value;
            let bad = |sig: &str| {
                Error::InvalidArgument(format!("template field '{key}' must be of type {sig}"))
            };
            let text = || read(value, || bad("s")).map(str::to_owned);
            match key.as_str() {
                "name" => patch.name = Some(text()?),
                "icon" => patch.icon = Some(text()?),
                "os_distro" => patch.os_distro = Some(text()?),
                "os_version" => patch.os_version = Some(text()?),
                "cdrom" => patch.cdrom = Some(text()?),
                "folder" => {
                    let folder = Vec::<String>::try_from(value.try_clone().map_err(|_| bad("as"))?)
                        .map_err(|_| bad("as"))?;
                    patch.folder = Some(folder);
                }
                "cpus" => patch.cpus = Some(read(value, || bad("u"))?),
                "memory_mib" => patch.memory_mib = Some(read(value, || bad("t"))?),
                "disks" => {
                    let tuples = Vec::<(u32, u64, String)>::try_from(
                        value.try_clone().map_err(|_| bad("a(uts)"))?,
                    )
                    .map_err(|_| bad("a(uts)"))?;
                    patch.disks = Some(
                        tuples
                            .into_iter()
                            .map(|(index, size_gb, volume)| TemplateDisk {
                                index,
                                size_gb,
                                volume,
                            })
                            .collect(),
                    );
                }
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown template field '{other}'"
                    )))
                }
            }
        }
        Ok(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> TemplatePatch {
        TemplatePatch {
            name: Some("web".into()),
            folder: Some(vec!["linux".into(), "debian".into()]),
            icon: Some("images/debian.png".into()),
            os_distro: Some("debian".into()),
            os_version: Some("12".into()),
            cpus: Some(2),
            memory_mib: Some(2048),
            cdrom: Some("/isos/d.iso".into()),
            disks: Some(vec![TemplateDisk {
                index: 1,
                size_gb: 20,
                volume: "base.img".into(),
            }]),
        }
    }

    #[test]
    fn every_field_round_trips() {
        let patch = full();
        assert_eq!(TemplatePatch::from_dict(&patch.to_dict()).unwrap(), patch);
        let empty = TemplatePatch::default();
        assert!(empty.to_dict().is_empty());
        assert_eq!(TemplatePatch::from_dict(&empty.to_dict()).unwrap(), empty);
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let mut dict = TemplatePatch::default().to_dict();
        put(&mut dict, "memory", Variant::from(2048u64));
        match TemplatePatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, "unknown template field 'memory'"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrongly_typed_field_is_refused_with_its_type() {
        let mut dict = Dict::new();
        put(&mut dict, "cpus", Variant::from("2"));
        match TemplatePatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => {
                assert_eq!(m, "template field 'cpus' must be of type u")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn apply_changes_only_the_named_fields() {
        let old = TemplateSpec {
            name: "t".into(),
            cpus: 1,
            memory_mib: 1024,
            icon: "old.png".into(),
            ..TemplateSpec::default()
        };
        let patch = TemplatePatch {
            cpus: Some(4),
            ..TemplatePatch::default()
        };
        let new = patch.apply(old.clone());
        assert_eq!(new.cpus, 4);
        assert_eq!(
            TemplateSpec {
                cpus: 1,
                ..new.clone()
            },
            old
        );
    }
}
