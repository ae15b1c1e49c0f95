//! The states of kimchid's objects. They travel as the same lowercase words they
//! always did (`s` on the wire, strings in JSON); both daemons compare enums, so a
//! misspelt state does not compile.

use std::fmt;

use serde::{Deserialize, Serialize};
use zbus::Type;

/// A virtual machine's state, as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    NoState,
    Running,
    Blocked,
    Paused,
    /// Being shut down.
    Shutdown,
    Shutoff,
    Crashed,
    PmSuspended,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::NoState => "nostate",
            VmState::Running => "running",
            VmState::Blocked => "blocked",
            VmState::Paused => "paused",
            VmState::Shutdown => "shutdown",
            VmState::Shutoff => "shutoff",
            VmState::Crashed => "crashed",
            VmState::PmSuspended => "pmsuspended",
        }
    }

    /// Whether QEMU runs for the guest, so it has a screen and a console.
    pub fn has_screen(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }
}

/// A storage pool's state, as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum PoolState {
    Inactive,
    Building,
    Active,
    Degraded,
    Inaccessible,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Inactive => "inactive",
            PoolState::Building => "building",
            PoolState::Active => "active",
            PoolState::Degraded => "degraded",
            PoolState::Inaccessible => "inaccessible",
        }
    }
}

/// A task's state: it runs, then ends once, finished or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Finished,
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
        }
    }
}

/// A virtual network's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[zbus(signature = "s")]
#[serde(rename_all = "lowercase")]
pub enum NetworkState {
    Active,
    Inactive,
}

impl NetworkState {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkState::Active => "active",
            NetworkState::Inactive => "inactive",
        }
    }
}

macro_rules! display_as_str {
    ($($state:ty),+) => {$(
        impl fmt::Display for $state {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

display_as_str!(VmState, PoolState, TaskState, NetworkState);

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON word and `as_str` agree, so the wire keeps the words it always had.
    fn same_word<T: Serialize + fmt::Display>(state: T) {
        assert_eq!(
            serde_json::to_value(&state).unwrap(),
            serde_json::Value::String(state.to_string())
        );
    }

    #[test]
    fn states_serialize_as_their_words() {
        for s in [
            VmState::NoState,
            VmState::Running,
            VmState::Blocked,
            VmState::Paused,
            VmState::Shutdown,
            VmState::Shutoff,
            VmState::Crashed,
            VmState::PmSuspended,
        ] {
            same_word(s);
        }
        for s in [
            PoolState::Inactive,
            PoolState::Building,
            PoolState::Active,
            PoolState::Degraded,
            PoolState::Inaccessible,
        ] {
            same_word(s);
        }
        for s in [TaskState::Running, TaskState::Finished, TaskState::Failed] {
            same_word(s);
        }
        for s in [NetworkState::Active, NetworkState::Inactive] {
            same_word(s);
        }
        assert_eq!(VmState::PmSuspended.as_str(), "pmsuspended");
    }

    #[test]
    fn states_are_strings_on_the_bus() {
        use zbus::zvariant::Type as _;
        assert_eq!(VmState::SIGNATURE.to_string(), "s");
        assert_eq!(TaskState::SIGNATURE.to_string(), "s");
    }
}
