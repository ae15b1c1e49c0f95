//! How soon a change made behind kimchid's back shows: one bench guest is started,
//! then suspended and resumed with libvirt directly, and each change is timed from
//! just before the libvirt call until `GET /vms/:name` shows the new state and until
//! kimchid's `PropertiesChanged` with the new `State` arrives.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kimchi_dbus::{BUS_NAME, VM_INTERFACE};
use tokio::sync::mpsc;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream};

use crate::http::Client;
use crate::libvirt::Libvirt;
use crate::sample::Samples;
use crate::{bus, guest_name, results, say, step, Config, Result};

/// How long one change may take to show before it counts as missed.
const SHOW_WITHIN: Duration = Duration::from_secs(10);
/// Between two polls of the REST state: small against the 100 ms target, and it
/// leaves the two cores to the daemons doing the work being timed.
const POLL_PAUSE: Duration = Duration::from_millis(1);

pub async fn run(cfg: &Config, guests: usize) -> Result<()> {
    let name = guest_name(1);
    let vm = format!("/vms/{name}");
    step(&format!(
        "{guests} guests: {} suspends/resumes of {name} with libvirt, until REST and D-Bus show them",
        cfg.changes
    ));
    let libvirt = Libvirt::open()?;
    let domain = libvirt.domain(&name)?;
    let conn = Connection::system().await?;
    let path = bus::manager(&conn)
        .await?
        .lookup_vm(&name, bus::Options::new())
        .await?;
    let mut signals = state_signals(&conn, path.as_str()).await?;
    let mut web = Client::session(&cfg.target, &cfg.user, &cfg.password).await?;

    tokio::task::block_in_place(|| domain.create())?;
    let timed = async {
        if rest_shows(&mut web, &vm, "running", Instant::now())
            .await?
            .is_none()
        {
            return Err(
                format!("GET {vm} did not show {name} running within {SHOW_WITHIN:?}").into(),
            );
        }
        let (mut rest, mut signal) = (Vec::new(), Vec::new());
        let (mut rest_missed, mut signal_missed) = (0, 0);
        for i in 0..cfg.changes {
            let (want, change): (_, fn(&virt::domain::Domain) -> _) = if i % 2 == 0 {
                ("paused", virt::domain::Domain::suspend)
            } else {
                ("running", virt::domain::Domain::resume)
            };
            // Signals of earlier changes are not this one's.
            while signals.try_recv().is_ok() {}
            let start = Instant::now();
            tokio::task::block_in_place(|| change(&domain))?;
            match rest_shows(&mut web, &vm, want, start).await? {
                Some(after) => rest.push(after),
                None => rest_missed += 1,
            }
            match signal_shows(&mut signals, want, start).await {
                Some(after) => signal.push(after),
                None => signal_missed += 1,
            }
        }
        Ok::<_, crate::Error>((
            (Samples::new(rest), rest_missed),
            (Samples::new(signal), signal_missed),
        ))
    }
    .await;
    // Stopped whatever happened: only this step runs a guest.
    let stopped = tokio::task::block_in_place(|| domain.destroy());
    let (rest, signal) = timed?;
    stopped?;
    web.logout().await;

    let record =
        |key: &str, value: f64| results::record(&cfg.results, &format!("changes.{key}"), value);
    record("guests", guests as f64)?;
    for (what, key, (times, missed)) in [
        ("seen over REST (GET /vms/:name polled)", "rest", rest),
        ("seen on D-Bus (PropertiesChanged State)", "signal", signal),
    ] {
        let mut line = format!("{what:<44} {}", times.describe());
        if missed > 0 {
            line.push_str(&format!(", {missed} not within {SHOW_WITHIN:?}"));
        }
        say(&line);
        record(&format!("{key}_p50_ms"), times.median_ms())?;
        record(&format!("{key}_p99_ms"), times.percentile_ms(99.0))?;
        record(&format!("{key}_missed"), missed as f64)?;
    }
    Ok(())
}

/// Every `State` kimchid announces for the VM at `path`, with when it arrived; the
/// match is in place before this returns, so no later change can be missed.
async fn state_signals(
    conn: &Connection,
    path: &str,
) -> Result<mpsc::UnboundedReceiver<(String, Instant)>> {
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path(path.to_owned())
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .build()?;
    let mut stream = MessageStream::for_match_rule(rule, conn, None).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    // A task of its own takes the arrival time, whatever the measuring loop is doing.
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let at = Instant::now();
            let Ok((interface, changed, _)) = msg
                .body()
                .deserialize::<(String, bus::Options, Vec<String>)>()
            else {
                continue;
            };
            let state = changed
                .get("State")
                .and_then(|v| String::try_from(v.clone()).ok());
            if let (true, Some(state)) = (interface == VM_INTERFACE, state) {
                if tx.send((state, at)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Polls `GET vm` until its `state` is `want`: the time since `start`, or `None`
/// after [`SHOW_WITHIN`].
async fn rest_shows(
    web: &mut Client,
    vm: &str,
    want: &str,
    start: Instant,
) -> Result<Option<Duration>> {
    loop {
        let doc = web.get_ok(vm).await?.json()?;
        if doc["state"] == want {
            return Ok(Some(start.elapsed()));
        }
        if start.elapsed() > SHOW_WITHIN {
            return Ok(None);
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

/// Waits for the signal announcing `want`: its arrival since `start`, or `None`.
async fn signal_shows(
    signals: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    want: &str,
    start: Instant,
) -> Option<Duration> {
    let deadline = tokio::time::Instant::from_std(start + SHOW_WITHIN);
    loop {
        let (state, at) = tokio::time::timeout_at(deadline, signals.recv())
            .await
            .ok()??;
        if state == want {
            return Some(at.duration_since(start));
        }
    }
}
