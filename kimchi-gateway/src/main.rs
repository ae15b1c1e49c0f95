mod app;
mod auth;
mod body;
mod cli;
mod config;
mod error;
mod kimchid;
mod listener;
mod negotiate;
mod openapi;
mod reply;
mod resources;
mod router;
mod server;
mod throttle;
mod tls;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::app::App;
use crate::config::Config;

/// Errors that stop the gateway from starting, with their context in the message.
pub type Startup<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Some(cli::Command::GenerateCertificate { out_dir }) = &args.command {
        init_logging("info");
        return generate_certificate(out_dir);
    }
    if let Some(cli::Command::Openapi) = &args.command {
        use std::io::Write;
        return match std::io::stdout().write_all(openapi::document()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kimchi-gateway: cannot write the document: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kimchi-gateway: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_level);

    // Everything facing the network runs unprivileged; root would defeat the design.
    if nix::unistd::getuid().is_root() || nix::unistd::geteuid().is_root() {
        tracing::error!(
            "refusing to run as root (uid 0): start kimchi-gateway as its own user (_kimchi-gw)"
        );
        return ExitCode::FAILURE;
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` wins over `level` (already checked to be a valid filter).
fn init_logging(level: &str) {
    // Levels per target, as kimchid's (no regex engine for span and field filters).
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for people, not for log files.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

/// `generate-certificate`: the same self-signed pair the gateway would generate for
/// itself, for kimchi-gateway-certificate.service (as root, into /etc/kimchi/tls).
fn generate_certificate(out_dir: &Path) -> ExitCode {
    match tls::self_signed(out_dir) {
        Ok(pair) => {
            if !pair.generated {
                tracing::info!(
                    "{} and {} exist already; left as they are",
                    pair.cert.display(),
                    pair.key.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Startup<()> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let source = tls::Source::choose(
        config.tls_files(),
        credentials.as_deref(),
        &config.state_dir,
    )?;
    let tls = tokio_rustls::TlsAcceptor::from(tls::server_config(&source)?);
    let listeners = listener::open(config.listen).await?;
    let ports: Vec<String> = listeners.iter().map(|l| l.port.to_string()).collect();
    let status = format!("serving HTTPS on port {}", ports.join(", "));
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!("{status}");

    let app = Arc::new(App::new(config.max_body_bytes));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        notify(&[NotifyState::Stopping]);
        tracing::info!("stopping");
    };
    server::serve(
        listeners,
        tls,
        app,
        Duration::from_secs(config.idle_timeout_secs),
        shutdown,
    )
    .await;
    Ok(())
}

/// Tells systemd; without NOTIFY_SOCKET (development) this does nothing.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}
