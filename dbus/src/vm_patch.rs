//! A change to a VM: only what it names, as an `a{sv}` dictionary (`name` s, `cpus` u,
//! `memory_mib` t, `autostart` b, `title` s, `description` s).

use zbus::Variant;

use crate::dict::{put, read, Dict};
use crate::Error;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmPatch {
    /// A new name: the VM is renamed (shut-off VMs only).
    pub name: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub autostart: Option<bool>,
    pub title: Option<String>,
    pub description: Option<String>,
}

impl VmPatch {
    pub fn is_empty(&self) -> bool {
        *self == VmPatch::default()
    }

    /// The wire dictionary, as a client sends it.
    pub fn to_dict(&self) -> Dict {
        let mut dict = Dict::new();
        for (key, value) in [
            ("name", &self.name),
            ("title", &self.title),
            ("description", &self.description),
        ] {
            if let Some(v) = value {
                put(&mut dict, key, Variant::from(v.as_str()));
            }
        }
        if let Some(cpus) = self.cpus {
            put(&mut dict, "cpus", Variant::from(cpus));
        }
        if let Some(memory) = self.memory_mib {
            put(&mut dict, "memory_mib", Variant::from(memory));
        }
        if let Some(autostart) = self.autostart {
            put(&mut dict, "autostart", Variant::from(autostart));
        }
        dict
    }

    /// Parses the wire dictionary; an unknown key or a wrongly typed value is refused,
    /// so a typo never silently leaves a field unchanged.
    pub fn from_dict(dict: &Dict) -> Result<Self, Error> {
        let mut patch = VmPatch::default();
        for (key, value) in dict {
            let value: &Variant<'_> = value;
            let bad = |sig: &str| {
                Error::InvalidArgument(format!("VM field '{key}' must be of type {sig}"))
            };
            let text = || read(value, || bad("s")).map(str::to_owned);
            match key.as_str() {
                "name" => patch.name = Some(text()?),
                "title" => patch.title = Some(text()?),
                "description" => patch.description = Some(text()?),
                "cpus" => patch.cpus = Some(read(value, || bad("u"))?),
                "memory_mib" => patch.memory_mib = Some(read(value, || bad("t"))?),
                "autostart" => patch.autostart = Some(read(value, || bad("b"))?),
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown VM field '{other}'"
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

    #[test]
    fn every_field_round_trips() {
        let patch = VmPatch {
            name: Some("web".into()),
            cpus: Some(2),
            memory_mib: Some(2048),
            autostart: Some(true),
            title: Some("Web server".into()),
            description: Some("line 1\nline 2".into()),
        };
        assert_eq!(VmPatch::from_dict(&patch.to_dict()).unwrap(), patch);
        assert!(VmPatch::default().to_dict().is_empty());
        assert!(VmPatch::default().is_empty());
    }

    #[test]
    fn unknown_or_mistyped_fields_are_refused_by_name() {
        let mut dict = Dict::new();
        put(&mut dict, "memory", Variant::from(2048u64));
        match VmPatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, "unknown VM field 'memory'"),
            other => panic!("{other:?}"),
        }
        let mut dict = Dict::new();
        put(&mut dict, "cpus", Variant::from(2u64));
        match VmPatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, "VM field 'cpus' must be of type u"),
            other => panic!("{other:?}"),
        }
    }
}
