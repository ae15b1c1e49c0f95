//! A change to a virtual network: only what it names, as an `a{sv}` dictionary
//! (`name` s, `subnet` s, `autostart` b).

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use crate::Error;

type Dict = HashMap<String, OwnedVariant>;

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
        let mut put = |key: &str, value: Variant<'_>| {
            let owned = OwnedVariant::try_from(value).expect("network fields carry no fds");
            dict.insert(key.to_owned(), owned);
        };
        if let Some(name) = &self.name {
            put("name", Variant::from(name.as_str()));
        }
        if let Some(subnet) = &self.subnet {
            put("subnet", Variant::from(subnet.as_str()));
        }
        if let Some(autostart) = self.autostart {
            put("autostart", Variant::from(autostart));
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
            let text = || {
                <&str>::try_from(value)
                    .map(str::to_owned)
                    .map_err(|_| bad("s"))
            };
            match key.as_str() {
                "name" => patch.name = Some(text()?),
                "subnet" => patch.subnet = Some(text()?),
                "autostart" => patch.autostart = Some(bool::try_from(value).map_err(|_| bad("b"))?),
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
        dict.insert(
            "mtu".into(),
            OwnedVariant::try_from(Variant::from(9000u32)).unwrap(),
        );
        match NetworkPatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, "unknown network field 'mtu'"),
            other => panic!("{other:?}"),
        }
        let mut dict = Dict::new();
        dict.insert(
            "autostart".into(),
            OwnedVariant::try_from(Variant::from("yes")).unwrap(),
        );
        match NetworkPatch::from_dict(&dict) {
            Err(Error::InvalidArgument(m)) => {
                assert_eq!(m, "network field 'autostart' must be of type b")
            }
            other => panic!("{other:?}"),
        }
    }
}
