//! A change to a virtual network: only what it names, as an `a{sv}` dictionary
//! (`name` s, `subnet` s, `autostart` b).

use zbus::Variant;

use crate::dict::{put, read, Dict};
use crate::Error;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPatch {
    /// A new name: the network is renamed (inactive networks only).
    pub name: Option<String>,
    /// A new subnet (inactive nat and isolated networks only).
    pub subnet: Option<String>,
    pub autostart: Option<bool>,
}

impl NetworkPatch {
    /// The wire dictionary, as a client sends it.
    pub fn to_dict(&self) -> Dict {
        let mut dict = Dict::new();
        if let Some(name) = &self.name {
            put(&mut dict, "name", Variant::from(name.as_str()));
        }
        if let Some(subnet) = &self.subnet {
            put(&mut dict, "subnet", Variant::from(subnet.as_str()));
        }
        if let Some(autostart) = self.autostart {
            put(&mut dict, "autostart", Variant::from(autostart));
        }
        dict
    }

    /// Parses the wire dictionary; an unknown key or a wrongly typed value is refused.
    pub fn from_dict(dict: &Dict) -> Result<Self, Error> {
        let mut patch = NetworkPatch::default();
        for (key, value) in dict {
            let value: &Variant<'_> = value;
            let bad = |sig: &str| {
                Error::InvalidArgument(format!("network field '{key}' must be of type {sig}"))
            };
            let text = || read(value, || bad("s")).map(str::to_owned);
            match key.as_str() {
                "name" => patch.name = Some(text()?),
                "subnet" => patch.subnet = Some(text()?),
                "autostart" => patch.autostart = Some(read(value, || bad("b"))?),
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown network field '{other}'"
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
        let patch = NetworkPatch {
            name: Some("lab".into()),
            subnet: Some("10.9.8.0/24".into()),
            autostart: Some(true),
        };
        assert_eq!(NetworkPatch::from_dict(&patch.to_dict()).unwrap(), patch);
        assert!(NetworkPatch::default().to_dict().is_empty());
    }

    #[test]
    fn unknown_or_mistyped_fields_are_refused_by_name() {
        let mut dict = Dict::new();
        put(&mut dict, "mtu", Variant::from(9000u32));
        match NetworkPatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, "unknown network field 'mtu'"),
            other => panic!("{other:?}"),
        }
        let mut dict = Dict::new();
        put(&mut dict, "autostart", Variant::from("yes"));
        match NetworkPatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => {
                assert_eq!(m, "network field 'autostart' must be of type b")
            }
            other => panic!("{other:?}"),
        }
    }
}
