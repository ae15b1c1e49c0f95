//! Operations that change storage, written down before they touch anything and
//! crossed out once they ended cleanly, so what a killed kimchid (or a libvirtd that
//! died under it) left half-made is found at the next start (`in_flight.rs` undoes
//! it). One file per operation in `<state_dir>/in-flight/`, written to a temporary
//! name, synced and renamed: a file there is whole or absent.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::storage_volumes::volume_uri;
use crate::error::{Error, Result};

const DIR: &str = "in-flight";
const SUFFIX: &str = ".json";

/// What an operation may leave half-made, with what it takes to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    /// A VM being created: its disks in `pool`, then its definition with `uuid`.
    VmCreate {
        name: String,
        uuid: String,
        pool: String,
        /// The names of the disks it makes, all claimed before it began.
        volumes: Vec<String>,
    },
    VolumeCreate {
        pool: String,
        name: String,
    },
    /// A volume being zeroed; afterwards it is an empty image of this format and
    /// capacity (bytes) again, which halfway through it no longer shows.
    VolumeWipe {
        pool: String,
        name: String,
        format: String,
        capacity: u64,
    },
}

impl Operation {
    /// The task operation name that reports it.
    pub fn task_name(&self) -> &'static str {
        match self {
            Operation::VmCreate { .. } => "vm.create",
            Operation::VolumeCreate { .. } => "storagevolume.create",
            Operation::VolumeWipe { .. } => "storagevolume.wipe",
        }
    }

    /// The storage pool it works in.
    pub fn pool(&self) -> &str {
        match self {
            Operation::VmCreate { pool, .. }
            | Operation::VolumeCreate { pool, .. }
            | Operation::VolumeWipe { pool, .. } => pool,
        }
    }

    pub fn target_uri(&self) -> String {
        match self {
            Operation::VmCreate { name, .. } => format!("/vms/{name}"),
            Operation::VolumeCreate { pool, name } | Operation::VolumeWipe { pool, name, .. } => {
                volume_uri(pool, name)
            }
        }
    }
}

/// One written-down operation: the task that runs it and when it began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub task: u32,
    pub started_usec: u64,
    pub operation: Operation,
}

pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens the journal in `state_dir` (creating it) and returns what a previous
    /// run left in it. A file that cannot be read is moved aside (`.unreadable`) and
    /// logged, so it is neither lost nor read again at every start.
    pub fn open(state_dir: &Path) -> Result<(Journal, Vec<Entry>)> {
        let dir = state_dir.join(DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error("create", &dir, e))?;
        let mut left = Vec::new();
        for item in fs::read_dir(&dir).map_err(|e| io_error("read", &dir, e))? {
            let path = item.map_err(|e| io_error("read", &dir, e))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".tmp") {
                // Never renamed: its operation had not begun.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_slice(&text).map_err(|e| e.to_string()))
            {
                Ok(entry) => left.push(entry),
                Err(e) => {
                    tracing::error!(path = %path.display(), "unreadable in-flight record, moved aside: {e}");
                    let _ = fs::rename(&path, path.with_extension("unreadable"));
                }
            }
        }
        left.sort_by_key(|e: &Entry| e.task);
        Ok((Journal { dir }, left))
    }

    /// Writes `entry` down durably (blocking: file and directory are synced).
    pub fn write(&self, entry: &Entry) -> Result<()> {
        let path = self.path(entry.task);
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(entry)
            .map_err(|e| Error::Internal(format!("cannot encode in-flight record: {e}")))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error("create", &tmp, e))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_error("rename", &tmp, e))?;
        self.sync_dir()
    }

    /// Crosses out task `task`'s operation (blocking); one not written is fine.
    pub fn remove(&self, task: u32) -> Result<()> {
        let path = self.path(task);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    fn path(&self, task: u32) -> PathBuf {
        self.dir.join(format!("{task}{SUFFIX}"))
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync", &self.dir, e))
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!(
        "in-flight journal: cannot {what} {}: {e}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wipe(task: u32) -> Entry {
        Entry {
            task,
            started_usec: 1_700_000_000_000_000,
            operation: Operation::VolumeWipe {
                pool: "default".into(),
                name: "a.qcow2".into(),
                format: "qcow2".into(),
                capacity: 1 << 30,
            },
        }
    }

    #[test]
    fn written_entries_are_found_at_the_next_open_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, left) = Journal::open(dir.path()).unwrap();
        assert!(left.is_empty());
        let vm = Entry {
            task: 3,
            started_usec: 5,
            operation: Operation::VmCreate {
                name: "web".into(),
                uuid: "5b1f3c1e-0000-4000-8000-000000000001".into(),
                pool: "default".into(),
                volumes: vec!["web-0.img".into()],
            },
        };
        journal.write(&wipe(12)).unwrap();
        journal.write(&vm).unwrap();
        let (journal, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left, [vm, wipe(12)]);
        journal.remove(3).unwrap();
        journal.remove(3).unwrap();
        let (_, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left, [wipe(12)]);
    }

    #[test]
    fn half_written_and_unreadable_files_do_not_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.write(&wipe(1)).unwrap();
        let records = dir.path().join(DIR);
        fs::write(records.join("2.tmp"), b"{\"task\":").unwrap();
        fs::write(records.join("3.json"), b"not json").unwrap();
        let (_, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left, [wipe(1)]);
        assert!(!records.join("2.tmp").exists());
        assert!(records.join("3.unreadable").exists());
    }

    #[test]
    fn operations_name_their_task_and_target() {
        let op = wipe(1).operation;
        assert_eq!(op.task_name(), "storagevolume.wipe");
        assert_eq!(
            op.target_uri(),
            "/storagepools/default/storagevolumes/a.qcow2"
        );
    }
}
