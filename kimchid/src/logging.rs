//! Logs go to the journal when systemd connected stderr to it (`JOURNAL_STREAM`),
//! to stderr otherwise; the filter can be swapped on reload.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
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

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}
