//! The sd_notify protocol: readiness, status line, watchdog, stopping. Without
//! `NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use sd_notify::NotifyState;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// READY=1 after a reload; the status line stays what the model last said.
pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The notify-reload handshake: RELOADING=1 with the monotonic time, then READY=1.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!("cannot read the monotonic clock: {e}"),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pets the watchdog at half the interval systemd asked for, for as long as the
/// runtime is alive to run this task.
pub async fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}
