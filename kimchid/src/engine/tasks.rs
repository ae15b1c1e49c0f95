//! Long operations run as tasks: they get an id at once, run on their own, and stay
//! listed for a while after they end so `GET /tasks/:id` still answers. Tasks live
//! in memory only: after a restart no task claims to have finished, and only those
//! whose operation the journal holds (`in_flight.rs`) are listed again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kimchi_dbus::{task_path, TaskInfo, TaskState};
use tokio::sync::{mpsc, watch};
use zbus::OwnedObjectPath;

use super::model::Change;
use crate::error::{Error, Result};

/// How long an ended task stays listed: long enough for a client to fetch the
/// outcome of the task it started.
const RETENTION: Duration = Duration::from_secs(600);
/// Ended tasks kept at most (the oldest go first): a burst of short tasks must not keep
/// a record and a bus object each for the whole retention.
const MAX_ENDED: usize = 500;
/// How often ended tasks are looked at for removal when nothing else happens.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// How long a caller that starts a task waits for it to end before the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: the task as it is at once.
    No,
    /// Until it ends.
    Ended,
    /// Until it ends or this much time has passed.
    AtMost(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: u32,
    pub operation: &'static str,
    pub target_uri: String,
    pub state: TaskState,
    pub message: String,
    pub started: SystemTime,
    pub ended: Option<SystemTime>,
}

impl TaskRecord {
    pub fn progress(&self) -> f64 {
        if self.state == TaskState::Running {
            0.0
        } else {
            1.0
        }
    }

    pub fn info(&self) -> TaskInfo {
        TaskInfo {
            path: OwnedObjectPath::try_from(task_path(self.id)).expect("numeric paths are valid"),
            id: self.id,
            operation: self.operation.to_owned(),
            state: self.state,
            message: self.message.clone(),
            target_uri: self.target_uri.clone(),
            progress: self.progress(),
            start_usec: unix_usec(self.started),
            end_usec: self.ended.map(unix_usec).unwrap_or_default(),
        }
    }
}

pub fn unix_usec(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

pub struct Tasks {
    inner: Mutex<Inner>,
    changes: mpsc::UnboundedSender<Change>,
}

struct Inner {
    next_id: u32,
    tasks: BTreeMap<u32, TaskRecord>,
    /// Lets callers that asked to wait (`kimchi.wait`) learn when a task ends.
    done: BTreeMap<u32, watch::Receiver<bool>>,
}

impl Tasks {
    pub fn new(changes: mpsc::UnboundedSender<Change>) -> Arc<Self> {
        Arc::new(Tasks {
            inner: Mutex::new(Inner {
                next_id: 1,
                tasks: BTreeMap::new(),
                done: BTreeMap::new(),
            }),
            changes,
        })
    }

    /// Starts `work` as task `operation` on `target_uri`; it succeeds with a message.
    pub fn start<F>(self: &Arc<Self>, operation: &'static str, target_uri: String, work: F) -> u32
    where
        F: Future<Output = Result<String>> + Send + 'static,
    {
        let id = self.reserve_id();
        self.start_as(id, operation, target_uri, SystemTime::now(), work);
        id
    }

    /// An id no task has had in this run, for a task started later with `start_as`
    /// (its operation is written down under that id first).
    pub fn reserve_id(&self) -> u32 {
        let mut inner = self.inner.lock().expect("task lock poisoned");
        let id = inner.next_id;
        inner.next_id += 1;
        id
    }

    /// Starts `work` as task `id` (reserved, or one a previous run gave out: ids after
    /// it are then not given out again), begun at `started`.
    pub fn start_as<F>(
        self: &Arc<Self>,
        id: u32,
        operation: &'static str,
        target_uri: String,
        started: SystemTime,
        work: F,
    ) where
        F: Future<Output = Result<String>> + Send + 'static,
    {
        let (done_tx, done_rx) = watch::channel(false);
        {
            let mut inner = self.inner.lock().expect("task lock poisoned");
            inner.next_id = inner.next_id.max(id + 1);
            inner.tasks.insert(
                id,
                TaskRecord {
                    id,
                    operation,
                    target_uri,
                    state: TaskState::Running,
                    message: "running".into(),
                    started,
                    ended: None,
                },
            );
            inner.done.insert(id, done_rx);
        }
        let _ = self.changes.send(Change::TaskAdded(id));
        let tasks = self.clone();
        tokio::spawn(async move {
            let outcome = work.await;
            let (state, message) = match outcome {
                Ok(message) => (TaskState::Finished, message),
                Err(e) => (TaskState::Failed, e.to_string()),
            };
            tasks.end(id, state, message);
            let _ = done_tx.send(true);
        });
    }

    /// Waits until task `id` has ended (returns at once for unknown or ended tasks).
    pub async fn wait(&self, id: u32) {
        let rx = self
            .inner
            .lock()
            .expect("task lock poisoned")
            .done
            .get(&id)
            .cloned();
        if let Some(mut rx) = rx {
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// The task as the caller of the method that started it sees it, after `wait`.
    pub async fn reply(&self, id: u32, wait: Wait) -> Result<TaskInfo> {
        match wait {
            Wait::No => {}
            Wait::Ended => self.wait(id).await,
            Wait::AtMost(limit) => {
                let _ = tokio::time::timeout(limit, self.wait(id)).await;
            }
        }
        self.info(id)
    }

    pub fn info(&self, id: u32) -> Result<TaskInfo> {
        self.get(id)
            .map(|t| t.info())
            .ok_or_else(|| Error::NotFound(format!("no task {id}")))
    }

    pub fn get(&self, id: u32) -> Option<TaskRecord> {
        self.inner
            .lock()
            .expect("task lock poisoned")
            .tasks
            .get(&id)
            .cloned()
    }

    pub fn list(&self) -> Vec<TaskRecord> {
        self.prune();
        self.inner
            .lock()
            .expect("task lock poisoned")
            .tasks
            .values()
            .cloned()
            .collect()
    }

    /// Marks every running task failed with `reason` (kimchid is stopping: the work
    /// cannot be finished, and it must not be reported as finished later).
    pub fn fail_running(&self, reason: &str) {
        let running: Vec<u32> = {
            let inner = self.inner.lock().expect("task lock poisoned");
            inner
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Running)
                .map(|t| t.id)
                .collect()
        };
        for id in running {
            self.end(id, TaskState::Failed, reason.to_owned());
        }
    }

    fn end(&self, id: u32, state: TaskState, message: String) {
        {
            let mut inner = self.inner.lock().expect("task lock poisoned");
            let Some(task) = inner.tasks.get_mut(&id) else {
                return;
            };
            // The first ending wins: a task failed at shutdown stays failed.
            if task.state != TaskState::Running {
                return;
            }
            task.state = state;
            task.message = message;
            task.ended = Some(SystemTime::now());
        }
        let _ = self.changes.send(Change::TaskEnded(id));
        self.prune();
    }

    /// Removes ended tasks past their retention, every [`PRUNE_EVERY`], for as long
    /// as kimchid runs.
    pub async fn prune_periodically(self: Arc<Self>) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            self.prune();
        }
    }

    fn prune(&self) {
        self.prune_at(SystemTime::now());
    }

    fn prune_at(&self, now: SystemTime) {
        let expired = {
            let mut inner = self.inner.lock().expect("task lock poisoned");
            let expired = expired(inner.tasks.values(), now);
            for id in &expired {
                inner.tasks.remove(id);
                inner.done.remove(id);
            }
            expired
        };
        for id in expired {
            let _ = self.changes.send(Change::TaskRemoved(id));
        }
    }
}

/// The ended tasks to remove at `now`: those older than [`RETENTION`], and the
/// oldest beyond [`MAX_ENDED`].
fn expired<'a>(tasks: impl Iterator<Item = &'a TaskRecord>, now: SystemTime) -> Vec<u32> {
    let mut ended: Vec<(SystemTime, u32)> =
        tasks.filter_map(|t| t.ended.map(|at| (at, t.id))).collect();
    ended.sort_unstable();
    let beyond_cap = ended.len().saturating_sub(MAX_ENDED);
    ended
        .iter()
        .enumerate()
        .filter(|(i, (at, _))| {
            *i < beyond_cap || now.duration_since(*at).is_ok_and(|age| age > RETENTION)
        })
        .map(|(_, (_, id))| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::assert_error;

    fn registry() -> (Arc<Tasks>, mpsc::UnboundedReceiver<Change>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Tasks::new(tx), rx)
    }

    /// Task `id`'s state and message once it has ended.
    async fn outcome(tasks: &Tasks, id: u32) -> (TaskState, String) {
        tasks.wait(id).await;
        let t = tasks.get(id).unwrap();
        (t.state, t.message)
    }

    /// A task that runs until the returned sender is used or dropped, then finishes
    /// with `message`.
    fn held(tasks: &Arc<Tasks>, message: &'static str) -> (u32, oneshot::Sender<()>) {
        let (release, hold) = oneshot::channel::<()>();
        let id = tasks.start("test.op", "/x".into(), async move {
            let _ = hold.await;
            Ok(message.to_owned())
        });
        (id, release)
    }

    fn ended_task(id: u32, ended: Option<SystemTime>) -> TaskRecord {
        TaskRecord {
            id,
            operation: "test",
            target_uri: String::new(),
            state: if ended.is_some() {
                TaskState::Finished
            } else {
                TaskState::Running
            },
            message: String::new(),
            started: UNIX_EPOCH,
            ended,
        }
    }

    #[test]
    fn ended_tasks_go_after_their_retention_and_beyond_the_cap_oldest_first() {
        let now = UNIX_EPOCH + Duration::from_secs(100_000);
        let old = ended_task(1, Some(now - RETENTION - Duration::from_secs(1)));
        let recent = ended_task(2, Some(now - RETENTION + Duration::from_secs(1)));
        let running = ended_task(3, None);
        assert_eq!(expired([&old, &recent, &running].into_iter(), now), [1]);

        let many: Vec<TaskRecord> = (0..MAX_ENDED as u32 + 3)
            .rev()
            .map(|i| {
                ended_task(
                    i + 10,
                    Some(now - Duration::from_millis(100_000 - u64::from(i))),
                )
            })
            .chain([running])
            .collect();
        assert_eq!(expired(many.iter(), now), [10, 11, 12]);
    }

    #[tokio::test]
    async fn task_runs_and_finishes_with_its_message() {
        let (tasks, mut changes) = registry();
        let id = tasks.start("test.op", "/x".into(), async { Ok("done".to_owned()) });
        let ended = outcome(&tasks, id).await;
        assert_eq!(ended, (TaskState::Finished, "done".to_owned()));
        let t = tasks.get(id).unwrap();
        assert!(t.ended.is_some());
        assert_eq!(t.progress(), 1.0);
        assert_eq!(changes.recv().await, Some(Change::TaskAdded(id)));
        assert_eq!(changes.recv().await, Some(Change::TaskEnded(id)));
    }

    #[tokio::test]
    async fn failing_work_fails_the_task_with_the_reason() {
        let (tasks, _changes) = registry();
        let id = tasks.start("test.op", "/x".into(), async {
            Err(Error::InvalidArgument("disk full".into()))
        });
        let ended = outcome(&tasks, id).await;
        assert_eq!(ended, (TaskState::Failed, "disk full".to_owned()));
    }

    #[tokio::test]
    async fn stopping_fails_running_tasks_for_good() {
        let (tasks, _changes) = registry();
        let (id, release) = held(&tasks, "finished late");
        assert_eq!(tasks.get(id).unwrap().state, TaskState::Running);
        tasks.fail_running("kimchid stopped");
        let _ = release.send(());
        let ended = outcome(&tasks, id).await;
        assert_eq!(ended, (TaskState::Failed, "kimchid stopped".to_owned()));
    }

    #[tokio::test]
    async fn ids_are_unique_and_increasing() {
        let (tasks, _changes) = registry();
        let a = tasks.start("op", "/a".into(), async { Ok(String::new()) });
        let b = tasks.start("op", "/b".into(), async { Ok(String::new()) });
        assert!(b > a);
        assert_eq!(tasks.list().len(), 2);
    }

    #[tokio::test]
    async fn reply_waits_as_asked() {
        let (tasks, _changes) = registry();
        let (id, release) = held(&tasks, "done");
        let now = tasks.reply(id, Wait::No).await.unwrap();
        assert_eq!((now.state, now.end_usec), (TaskState::Running, 0));
        let bounded = tasks
            .reply(id, Wait::AtMost(Duration::from_millis(20)))
            .await
            .unwrap();
        assert_eq!(bounded.state, TaskState::Running);
        release.send(()).unwrap();
        let ended = tasks.reply(id, Wait::Ended).await.unwrap();
        assert_eq!(ended.state, TaskState::Finished);
        assert_eq!(ended.message, "done");
        assert_eq!(ended.path.as_str(), "/org/kimchi/Kimchi1/task/1");
    }

    #[tokio::test]
    async fn a_task_started_under_an_earlier_id_keeps_it_and_later_ids_follow_it() {
        let (tasks, _changes) = registry();
        let reserved = tasks.reserve_id();
        let started = UNIX_EPOCH + Duration::from_secs(1_000);
        tasks.start_as(41, "test.op", "/x".into(), started, async {
            Ok(String::new())
        });
        tasks.wait(41).await;
        assert_eq!(tasks.get(41).unwrap().started, started);
        let next = tasks.start("op", "/a".into(), async { Ok(String::new()) });
        assert_eq!((reserved, next), (1, 42));
    }

    #[test]
    fn unknown_task_is_not_found() {
        let (tasks, _changes) = registry();
        assert_error!(tasks.info(7), NotFound, "no task 7");
    }
}
