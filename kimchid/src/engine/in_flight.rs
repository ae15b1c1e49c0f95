//! Tasks whose operation could leave something half-made (a VM's disks without the
//! VM, a volume libvirt was still writing, a half-zeroed volume): the operation is
//! written down (`journal.rs`) before the task starts and crossed out only when
//! nothing is left to undo. When the work fails — libvirtd died under it, say —,
//! or kimchid was killed and finds the record at its next start, the operation is
//! undone (a wipe is done again: what it zeroed cannot come back) before its task
//! ends, failed, saying what was done.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::hypervisor::{Backend, Hypervisor, PoolRecord};
use super::journal::{Entry, Journal, Operation};
use super::model::Model;
use super::tasks::{unix_usec, Tasks};
use crate::error::{Error, Result};

/// How long undoing keeps trying while libvirt refuses (a volume is still being
/// allocated by the call a killed kimchid made, a pool is inactive); time without a
/// libvirt connection does not count. After that the record stays for the next start.
const UNDO_PATIENCE: Duration = Duration::from_secs(300);
const UNDO_RETRY: Duration = Duration::from_secs(1);

/// Why the tasks a previous run left are ended.
const STOPPED: &str = "kimchid stopped before this task ended";

pub struct InFlight {
    journal: Arc<Journal>,
    tasks: Arc<Tasks>,
    backend: Arc<Backend>,
    model: Arc<Model>,
}

impl InFlight {
    /// Opens the journal in `state_dir`; also returns what a previous run left there,
    /// for `resume`.
    pub fn open(
        state_dir: &Path,
        tasks: Arc<Tasks>,
        backend: Arc<Backend>,
        model: Arc<Model>,
    ) -> Result<(Arc<InFlight>, Vec<Entry>)> {
        let (journal, left) = Journal::open(state_dir)?;
        let in_flight = InFlight {
            journal: Arc::new(journal),
            tasks,
            backend,
            model,
        };
        Ok((Arc::new(in_flight), left))
    }

    /// Writes `operation` down, then runs `work` as its task, holding `claims` until
    /// the task has ended. Fails, with nothing started, when the record cannot be
    /// written.
    pub async fn start<C, F>(
        self: &Arc<Self>,
        operation: Operation,
        claims: C,
        work: F,
    ) -> Result<u32>
    where
        C: Send + 'static,
        F: Future<Output = Result<String>> + Send + 'static,
    {
        let entry = Entry {
            task: self.tasks.reserve_id(),
            started_usec: unix_usec(SystemTime::now()),
            operation,
        };
        let (journal, written) = (self.journal.clone(), entry.clone());
        tokio::task::spawn_blocking(move || journal.write(&written))
            .await
            .map_err(|e| Error::Internal(format!("in-flight journal write panicked: {e}")))??;
        let (this, id, operation) = (self.clone(), entry.task, entry.operation.clone());
        self.run(entry, async move {
            let _claims = claims;
            match work.await {
                Ok(message) => {
                    this.cross_out(id).await;
                    Ok(message)
                }
                // libvirt answered that the name is someone else's: nothing of this
                // operation's was made under it, and the work removed what it made
                // before (libvirt was there to do it).
                Err(e @ Error::AlreadyExists(_)) => {
                    this.cross_out(id).await;
                    Err(e)
                }
                Err(e) => Err(this.undo(id, operation, e.to_string()).await),
            }
        });
        Ok(id)
    }

    /// Takes over an operation a previous run left unfinished: its task is listed
    /// again under its id, running, while the operation is undone (`claims` held,
    /// waiting for libvirt if it is not there yet), then fails saying what was done.
    pub fn resume<C: Send + 'static>(self: &Arc<Self>, entry: Entry, claims: C) {
        let (this, id, operation) = (self.clone(), entry.task, entry.operation.clone());
        tracing::warn!(
            task = id,
            operation = entry.operation.task_name(),
            target = %entry.operation.target_uri(),
            "undoing an operation a previous run left unfinished"
        );
        self.run(entry, async move {
            let _claims = claims;
            Err(this.undo(id, operation, STOPPED.to_owned()).await)
        });
    }

    fn run<F>(&self, entry: Entry, task: F)
    where
        F: Future<Output = Result<String>> + Send + 'static,
    {
        let started = UNIX_EPOCH + Duration::from_micros(entry.started_usec);
        let op = &entry.operation;
        self.tasks
            .start_as(entry.task, op.task_name(), op.target_uri(), started, task);
    }

    /// Undoes task `id`'s operation, retrying while libvirt refuses; the error its
    /// task ends with: `cause`, and what was undone or why it could not be.
    async fn undo(&self, id: u32, operation: Operation, cause: String) -> Error {
        let mut waited = Duration::ZERO;
        loop {
            let op = operation.clone();
            match self.backend.run(move |hv| undo(hv, &op)).await {
                Ok((done, pool)) => {
                    // The model learns of it without waiting for libvirt's events.
                    if let Operation::VmCreate { uuid, .. } = &operation {
                        self.model.remove(uuid);
                    }
                    if let Some(pool) = pool {
                        self.model.upsert_pool(pool);
                    }
                    self.cross_out(id).await;
                    return Error::Internal(if done.is_empty() {
                        cause
                    } else {
                        format!("{cause}; {}", done.join(", "))
                    });
                }
                Err(e) if waited >= UNDO_PATIENCE => {
                    tracing::error!(task = id, "cannot undo {}: {e}", operation.target_uri());
                    return Error::Internal(format!(
                        "{cause}; undoing it failed ({e}); kimchid tries again at its next start"
                    ));
                }
                Err(e) => {
                    if !matches!(e, Error::LibvirtUnavailable(_)) {
                        waited += UNDO_RETRY;
                    }
                    tokio::time::sleep(UNDO_RETRY).await;
                }
            }
        }
    }

    async fn cross_out(&self, id: u32) {
        let journal = self.journal.clone();
        let removed = tokio::task::spawn_blocking(move || journal.remove(id)).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(task = id, "{e}"),
            Err(e) => tracing::error!(task = id, "in-flight journal removal panicked: {e}"),
        }
    }
}

/// Undoes what `op` may have left, a step at a time, each skipped when what it
/// removes is gone already (so undoing twice, or after the work cleaned up, is
/// fine). The pool is re-read first: libvirt lists a file it made while kimchid
/// was away only then. Returns what was done, and the pool as it is afterwards.
fn undo(hv: &dyn Hypervisor, op: &Operation) -> Result<(Vec<String>, Option<PoolRecord>)> {
    let mut done = Vec::new();
    match op {
        Operation::VmCreate {
            name,
            uuid,
            pool,
            volumes,
        } => {
            if hv.domain(uuid)?.is_some() {
                hv.undefine(uuid)?;
                done.push(format!("removed the definition of VM '{name}'"));
            }
            for volume in present(hv, pool, volumes)? {
                hv.delete_volume(pool, &volume)?;
                done.push(format!("removed its disk '{volume}'"));
            }
        }
        Operation::VolumeCreate { pool, name } => {
            if !present(hv, pool, std::slice::from_ref(name))?.is_empty() {
                hv.delete_volume(pool, name)?;
                done.push(format!("removed the volume '{name}'"));
            }
        }
        Operation::VolumeWipe {
            pool,
            name,
            format,
            capacity,
        } => {
            if present(hv, pool, std::slice::from_ref(name))?.is_empty() {
                done.push(format!("the volume '{name}' is gone"));
            } else {
                hv.wipe_volume(pool, name, format, *capacity)?;
                done.push(format!("wiped the volume '{name}' again from the start"));
            }
        }
    }
    Ok((done, hv.pool_by_name(op.pool()).ok()))
}

/// Which of `names` the pool has now; none when the pool is gone.
fn present(hv: &dyn Hypervisor, pool: &str, names: &[String]) -> Result<Vec<String>> {
    match hv.pool_volumes(pool) {
        Ok((_, volumes)) => Ok(names
            .iter()
            .filter(|n| volumes.iter().any(|v| &v.name == *n))
            .cloned()
            .collect()),
        Err(Error::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
