mod authority;
mod bus;
mod cli;
mod error;
mod libvirt;
mod model;
mod notify;
mod pam;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nix::unistd::User;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::authority::Authority;
use crate::libvirt::Libvirt;
use crate::model::Model;
use crate::sessions::SessionStore;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: cli::Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.state_dir).map_err(|e| {
        format!(
            "cannot create state directory {}: {e}",
            args.state_dir.display()
        )
    })?;
    let gateway_uid = match User::from_name(&args.gateway_user)? {
        Some(u) => Some(u.uid.as_raw()),
        None => {
            tracing::warn!(
                user = %args.gateway_user,
                "gateway user does not exist: no web sessions will be accepted"
            );
            None
        }
    };

    let libvirt = Libvirt::new(args.libvirt_uri.clone())?;
    let (libvirt_tx, libvirt_rx) = mpsc::unbounded_channel();
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let model = Model::new(libvirt.clone(), changes_tx);

    let conn = zbus::connection::Builder::system().build().await?;
    let sessions = Arc::new(SessionStore::new(
        Duration::from_secs(args.session_idle_secs),
        Duration::from_secs(args.session_max_secs),
    ));
    let authority = Arc::new(Authority::new(&conn, sessions, gateway_uid).await?);
    bus::export(&conn, model.clone(), authority).await?;
    // The name is taken only once the tree is exported: whoever sees it can use it.
    conn.request_name(kimchi_dbus::BUS_NAME).await?;
    notify::ready(&format!("connecting to libvirt at {}", args.libvirt_uri));
    tracing::info!("serving {} on the system bus", kimchi_dbus::BUS_NAME);

    tokio::spawn(libvirt.maintain_connection(libvirt_tx));
    tokio::spawn(model.clone().follow(libvirt_rx));
    tokio::spawn(bus::follow(conn.clone(), model, changes_rx));
    tokio::spawn(notify::watchdog());

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    notify::stopping();
    tracing::info!("stopping");
    conn.release_name(kimchi_dbus::BUS_NAME).await?;
    Ok(())
}
