//! `/vms` and `/vms/:name`: virtual machines as Kimchi shows them.

use kimchi_dbus::VmInfo;
use serde::Serialize;

use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;

#[derive(Debug, Serialize)]
struct Vm {
    name: String,
    uuid: String,
    state: String,
    /// MiB, as in Kimchi.
    memory: u64,
    graphics: Graphics,
}

#[derive(Debug, Serialize)]
struct Graphics {
    /// "vnc", or null when the guest has no graphics Kimchi can show.
    #[serde(rename = "type")]
    kind: Option<&'static str>,
    /// Filled in by the console connect action (not served yet).
    port: Option<u16>,
}

impl From<VmInfo> for Vm {
    fn from(info: VmInfo) -> Self {
        Vm {
            graphics: Graphics {
                kind: (info.graphics_type == "vnc").then_some("vnc"),
                port: None,
            },
            name: info.name,
            uuid: info.uuid,
            state: info.state,
            memory: info.memory_mib,
        }
    }
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>) -> Result<Reply, Error> {
    let mut vms: Vec<Vm> = kimchid
        .manager()
        .await?
        .list_vms(call.options())
        .await?
        .into_iter()
        .map(Vm::from)
        .collect();
    // Kimchi lists VMs by name, case-insensitively.
    vms.sort_by_cached_key(|vm| vm.name.to_lowercase());
    Ok(Reply::ok(&vms))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, name: &str) -> Result<Reply, Error> {
    let info = kimchid
        .manager()
        .await?
        .get_vm(name, call.options())
        .await?;
    Ok(Reply::ok(&Vm::from(info)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(graphics: &str) -> VmInfo {
        VmInfo {
            path: zbus::OwnedObjectPath::try_from(kimchi_dbus::vm_path("u-1")).unwrap(),
            name: "web".into(),
            uuid: "u-1".into(),
            state: "running".into(),
            memory_mib: 1024,
            graphics_type: graphics.into(),
        }
    }

    #[test]
    fn vm_json_has_kimchi_keys() {
        let doc = serde_json::to_value(Vm::from(info("vnc"))).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "name": "web", "uuid": "u-1", "state": "running", "memory": 1024,
                "graphics": {"type": "vnc", "port": null}
            })
        );
    }

    #[test]
    fn graphics_other_than_vnc_is_null() {
        for graphics in ["", "spice"] {
            let doc = serde_json::to_value(Vm::from(info(graphics))).unwrap();
            assert_eq!(doc["graphics"]["type"], serde_json::Value::Null);
        }
    }
}
