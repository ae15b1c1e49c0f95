use std::sync::Arc;

use kimchi_dbus::{task_path, TaskState};
use zbus::interface;
use zbus::object_server::{ObjectServer, SignalEmitter};

use crate::engine::tasks::{unix_usec, TaskRecord, Tasks};

/// One exported task; properties read the registry.
pub struct Task {
    id: u32,
    tasks: Arc<Tasks>,
}

impl Task {
    pub fn new(id: u32, tasks: Arc<Tasks>) -> Self {
        Task { id, tasks }
    }

    fn read<T: Default>(&self, f: impl FnOnce(TaskRecord) -> T) -> T {
        self.tasks.get(self.id).map(f).unwrap_or_default()
    }
}

#[interface(name = "org.kimchi.Kimchi1.Task")]
impl Task {
    /// Sent once when the task ends.
    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> u32 {
        self.id
    }

    /// What runs, e.g. `storagevolume.wipe`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn operation(&self) -> String {
        self.read(|t| t.operation.to_owned())
    }

    /// running, finished or failed.
    #[zbus(property)]
    fn state(&self) -> String {
        self.read(|t| t.state.to_string())
    }

    #[zbus(property)]
    fn message(&self) -> String {
        self.read(|t| t.message)
    }

    /// 0 while running, 1 once ended (libvirt reports no progress for these operations).
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.read(|t| t.progress())
    }

    /// The API path of the object the task works on.
    #[zbus(property(emits_changed_signal = "const"))]
    fn target_uri(&self) -> String {
        self.read(|t| t.target_uri)
    }

    /// Unix time, microseconds.
    #[zbus(property(emits_changed_signal = "const"))]
    fn start_time(&self) -> u64 {
        self.read(|t| unix_usec(t.started))
    }

    /// Unix time, microseconds; 0 while running.
    #[zbus(property)]
    fn end_time(&self) -> u64 {
        self.read(|t| t.ended.map(unix_usec).unwrap_or_default())
    }
}

/// What `PropertiesChanged` reports when the task ends.
pub const ANNOUNCED: &[&str] = &["State", "Message", "Progress", "EndTime"];

/// Sends `Completed` once the task has ended.
pub async fn complete(server: &ObjectServer, tasks: &Tasks, id: u32) -> zbus::Result<()> {
    let Some(record) = tasks.get(id) else {
        return Ok(());
    };
    let iface = server.interface::<_, Task>(task_path(id)).await?;
    let success = record.state == TaskState::Finished;
    Task::completed(iface.signal_emitter(), success, &record.message).await
}
