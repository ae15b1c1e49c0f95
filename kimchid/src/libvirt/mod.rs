//! The only module that touches libvirt. Blocking libvirt calls run on tokio's blocking
//! pool behind a semaphore, never on the async workers; the connection is reopened
//! whenever libvirtd goes away.

pub mod domain;
mod domain_xml;
mod events;
mod probe;
mod stats;
pub mod storage;
mod xml;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use virt::connect::Connect;

pub use domain::{DomainRecord, NewDisk, Power};
pub use domain_xml::{Cdrom, DiskBus, GuestDefinition};
pub use probe::HostCapabilities;
pub use stats::DomainCounters;
pub use storage::{PoolDefinition, PoolRecord, VolumeRecord};

use crate::error::{Error, Result};

/// At most this many libvirt calls are in flight at once; the rest wait their turn.
const MAX_CONCURRENT_CALLS: usize = 8;
const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// What libvirt tells the model, in the order it happened.
#[derive(Debug)]
pub enum LibvirtEvent {
    Connected,
    Disconnected(String),
    /// A domain was defined, undefined, started, stopped, …; re-read it.
    DomainChanged {
        uuid: String,
    },
    /// A pool was defined, undefined, started or stopped; re-read it.
    PoolChanged {
        uuid: String,
    },
}

pub struct Libvirt {
    uri: String,
    conn: RwLock<Option<Arc<Connect>>>,
    permits: Semaphore,
}

impl Libvirt {
    /// Prepares libvirt's event loop; must run before the first connection is opened.
    pub fn new(uri: String) -> Result<Arc<Self>> {
        events::start_event_loop()?;
        Ok(Arc::new(Libvirt {
            uri,
            conn: RwLock::new(None),
            permits: Semaphore::new(MAX_CONCURRENT_CALLS),
        }))
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Keeps a connection open for the life of the daemon, reporting every change on
    /// `events`. Returns only when the receiver is gone.
    pub async fn maintain_connection(self: Arc<Self>, events: mpsc::UnboundedSender<LibvirtEvent>) {
        loop {
            let uri = self.uri.clone();
            let tx = events.clone();
            let opened = tokio::task::spawn_blocking(move || events::open(&uri, tx)).await;
            let (conn, mut closed) = match opened {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    if events
                        .send(LibvirtEvent::Disconnected(e.to_string()))
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
                Err(join) => {
                    tracing::error!("libvirt connect task failed: {join}");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            };
            *self.conn.write().expect("libvirt connection lock poisoned") = Some(Arc::new(conn));
            tracing::info!(uri = %self.uri, "connected to libvirt");
            if events.send(LibvirtEvent::Connected).is_err() {
                return;
            }
            let reason = closed
                .recv()
                .await
                .unwrap_or_else(|| "event loop ended".to_owned());
            let old = self
                .conn
                .write()
                .expect("libvirt connection lock poisoned")
                .take();
            // Closing a dead connection blocks on the remote driver; keep it off the runtime.
            if let Some(old) = old {
                tokio::task::spawn_blocking(move || drop(old));
            }
            tracing::warn!(uri = %self.uri, %reason, "libvirt connection lost");
            if events.send(LibvirtEvent::Disconnected(reason)).is_err() {
                return;
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    /// Runs `f` with the current connection on the bounded blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("libvirt pool closed".into()))?;
        let conn = self
            .conn
            .read()
            .expect("libvirt connection lock poisoned")
            .clone()
            .ok_or_else(|| Error::LibvirtUnavailable(self.uri.clone()))?;
        tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(|e| Error::Internal(format!("libvirt call panicked: {e}")))?
    }

    pub async fn list_domains(&self) -> Result<Vec<DomainRecord>> {
        self.call(domain::list_all).await
    }

    /// The domain's current record, or `None` when it no longer exists.
    pub async fn domain(&self, uuid: String) -> Result<Option<DomainRecord>> {
        self.call(move |c| domain::by_uuid(c, &uuid)).await
    }

    pub async fn probe_capabilities(&self) -> Result<HostCapabilities> {
        self.call(probe::probe).await
    }

    /// The cumulative counters of every running domain, in one bulk call.
    pub async fn sample_stats(&self) -> Result<Vec<DomainCounters>> {
        self.call(stats::sample).await
    }

    pub async fn list_pools(&self) -> Result<Vec<PoolRecord>> {
        self.call(storage::list_pools).await
    }

    /// The pool's current record, or `None` when it no longer exists.
    pub async fn pool(&self, uuid: String) -> Result<Option<PoolRecord>> {
        self.call(move |c| storage::pool_by_uuid(c, &uuid)).await
    }
}
