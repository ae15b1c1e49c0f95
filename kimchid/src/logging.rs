//! Logs go to the journal when systemd connected stderr to it (`JOURNAL_STREAM`),
//! to stderr otherwise; the filter can be swapped on reload.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

pub struct LogControl {
    filter: reload::Handle<Targets, Registry>,
}

impl LogControl {
    /// Installs the global subscriber with `level` (or `RUST_LOG` when set).
    pub fn init(level: &str) -> LogControl {
        let (filter, handle) = reload::Layer::new(filter_for(level));
        let journal = std::env::var_os("JOURNAL_STREAM")
            .and_then(|_| tracing_journald::layer().ok())
            .map(|l| l.with_syslog_identifier("kimchid".into()));
        let registry = tracing_subscriber::registry().with(filter);
        match journal {
            Some(journal) => registry.with(journal).init(),
            None => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_writer(std::io::stderr),
                )
                .init(),
        }
        LogControl { filter: handle }
    }

    pub fn set_level(&self, level: &str) {
        if let Err(e) = self.filter.reload(filter_for(level)) {
            tracing::warn!("cannot change the log filter: {e}");
        }
    }
}

/// `RUST_LOG` when it parses, else `level` (checked when the configuration loaded).
/// Levels per target, not EnvFilter's span and field matching, which would bring a
/// regex engine (half a megabyte of resident code) into the daemon.
fn filter_for(level: &str) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}
