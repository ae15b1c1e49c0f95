mod app;
mod auth;
mod body;
mod cli;
mod error;
mod kimchid;
mod listener;
mod negotiate;
mod reply;
mod resources;
mod router;
mod server;
mod tls;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::app::App;

/// Errors that stop the gateway from starting, with their context in the message.
pub type Startup<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for people, not for log files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();

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
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: cli::Args) -> Startup<()> {
    let source = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => tls::Source::Files { cert, key },
        _ => tls::Source::SelfSigned {
            state_dir: &args.state_dir,
        },
    };
    let tls = tokio_rustls::TlsAcceptor::from(tls::server_config(source)?);
    let listeners = listener::open(args.listen).await?;
    let ports: Vec<String> = listeners.iter().map(|l| l.port.to_string()).collect();
    let status = format!("serving HTTPS on port {}", ports.join(", "));
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!("{status}");

    let app = Arc::new(App::new(args.max_body_bytes));
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
    server::serve(listeners, tls, app, shutdown).await;
    Ok(())
}

/// Tells systemd; without NOTIFY_SOCKET (development) this does nothing.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}
