//! The gateway's link: one end of a socket pair goes to the gateway, and on the other
//! kimchid serves Manager and Sessions peer to peer, so the bus daemon no longer
//! relays every web request there and back. Nothing else changes for a call: it is
//! judged as a call of the link's opener on the bus (`Guard::for_link`: its uid, and
//! its bus name as polkit's subject), which is why the link is closed as soon as that
//! name leaves the bus.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kimchi_dbus::{link_connection, Error as BusError, MANAGER_PATH, SESSIONS_PATH};
use zbus::fdo::DBusProxy;
use zbus::names::OwnedUniqueName;
use zbus::{Connection, Guid, OwnedFd};

use super::guard::Guard;
use super::manager::Manager;
use super::sessions::Sessions;
use crate::engine::Engine;
use crate::error::Error;

/// Links open at once, at most: the gateway keeps one, and opens another only when
/// it reconnects (the old one closes as its bus name goes).
const MAX_LINKS: usize = 8;

static OPEN_LINKS: AtomicUsize = AtomicUsize::new(0);

/// How long the gateway may take to start talking on the end it was given.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One of the [`MAX_LINKS`], given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Result<Slot, Error> {
        OPEN_LINKS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_LINKS).then_some(n + 1)
            })
            .map(|_| Slot)
            .map_err(|_| Error::Busy(format!("{MAX_LINKS} gateway links are open already")))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN_LINKS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens a link for `opener` (already judged to be the gateway) and returns the
/// gateway's end. The handshake runs once the gateway has its end, after this reply.
pub fn open(
    engine: Arc<Engine>,
    guard: &Guard,
    bus: Connection,
    opener: OwnedUniqueName,
) -> Result<OwnedFd, BusError> {
    let slot = Slot::take()?;
    let (ours, theirs) = UnixStream::pair()
        .map_err(|e| Error::Internal(format!("cannot make the gateway link's sockets: {e}")))?;
    let guard = Arc::new(guard.for_link(opener.clone()));
    let builder = link_connection(ours)
        .server(Guid::generate())
        .serve_at(MANAGER_PATH, Manager::new(engine.clone(), guard.clone()))
        .serve_at(SESSIONS_PATH, Sessions::new(engine.sessions.clone(), guard));
    tokio::spawn(async move {
        let _slot = slot;
        let link = match tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.build()).await {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                tracing::warn!(%opener, "gateway link handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(%opener, "gateway link: no handshake within {HANDSHAKE_TIMEOUT:?}");
                return;
            }
        };
        tracing::debug!(%opener, "gateway link open");
        if let Err(e) = until_gone(&bus, &opener).await {
            tracing::warn!(%opener, "cannot follow the gateway's bus name: {e}");
        }
        tracing::debug!(%opener, "gateway link closed: its opener left the bus");
        let _ = link.close().await;
    });
    Ok(OwnedFd::from(std::os::fd::OwnedFd::from(theirs)))
}

/// Returns once `name` has no owner on the bus.
async fn until_gone(bus: &Connection, name: &OwnedUniqueName) -> zbus::Result<()> {
    let driver = DBusProxy::new(bus).await?;
    let mut changes = driver
        .receive_name_owner_changed_with_args(&[(0, name.as_str())])
        .await?;
    // Subscribed first, then asked: a name gone in between is seen either way.
    if !driver.name_has_owner(name.as_ref().into()).await? {
        return Ok(());
    }
    while let Some(change) = changes.next().await {
        if change.args().is_ok_and(|a| a.new_owner().is_none()) {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_links_are_open_and_a_closed_one_gives_its_slot_back() {
        let slots: Vec<Slot> = (0..MAX_LINKS).map(|_| Slot::take().unwrap()).collect();
        crate::assert_error!(
            Slot::take(),
            Busy,
            format!("{MAX_LINKS} gateway links are open already")
        );
        drop(slots);
        assert!(Slot::take().is_ok());
    }
}
