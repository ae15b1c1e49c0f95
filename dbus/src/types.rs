use serde::{Deserialize, Serialize};
use zbus::{OwnedObjectPath, Type};

/// Whether libvirt screenshots work on this host, as probed once by kimchid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Type)]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum ScreenshotSupport {
    /// Not probed yet (libvirt not reachable so far).
    Unknown,
    Yes,
    No,
}

impl ScreenshotSupport {
    /// Kimchi's tri-state: true, false, or null while untested.
    pub fn as_option(self) -> Option<bool> {
        match self {
            ScreenshotSupport::Unknown => None,
            ScreenshotSupport::Yes => Some(true),
            ScreenshotSupport::No => Some(false),
        }
    }
}

/// The identity a web session stands for, as kimchid resolved it at login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SessionInfo {
    pub user: String,
    pub uid: u32,
    pub groups: Vec<String>,
}

/// One virtual machine as kimchid's model knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VmInfo {
    pub path: OwnedObjectPath,
    pub name: String,
    pub uuid: String,
    /// running, paused, shutoff, … (libvirt's state, as a word).
    pub state: String,
    /// Memory assigned to the guest, MiB.
    pub memory_mib: u64,
    /// `vnc`, or empty when the guest has no VNC graphics.
    pub graphics_type: String,
}
