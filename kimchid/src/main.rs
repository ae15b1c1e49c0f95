mod allocator;
mod authority;
mod bus;
mod cli;
mod config;
mod engine;
mod error;
mod excerpt;
mod iso;
mod iso_url;
mod libvirt;
mod logging;
mod names;
mod notify;
mod osinfo;
mod pam;
mod stats;
mod url_check;
mod user_file;

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use nix::unistd::User;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use crate::authority::Authority;
use crate::bus::Bus;
use crate::config::Config;
use crate::engine::sessions::Sessions;
use crate::engine::{Engine, Settings};
use crate::libvirt::Libvirt;
use crate::logging::LogControl;

/// Where osinfo-db keeps its operating system descriptions.
const OSINFO_DIR: &str = "/usr/share/osinfo";

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    if args.command == Some(cli::Command::CheckUrl) {
        // One check for one connection: no daemon, no configuration, one thread.
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(url_check::helper::run()),
            Err(e) => {
                eprintln!("kimchid check-url: cannot start the async runtime: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    allocator::configure();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kimchid: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(start(args));
    // Out without the runtime's shutdown: it would wait for the libvirt calls still
    // running (a wipe takes minutes; the in-flight journal has it for the next start)
    // and fail the queued ones, each logged as an error of a stopping daemon.
    std::mem::forget(runtime);
    code
}

async fn start(args: cli::Args) -> std::process::ExitCode {
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kimchid: bad configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let log = LogControl::init(&config.log_level);
    match run(args, config, log).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(
    args: cli::Args,
    mut config: Config,
    log: LogControl,
) -> Result<(), Box<dyn std::error::Error>> {
    // Before READY=1: a stop request right after start must still stop us cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        format!(
            "cannot create state directory {}: {e}",
            config.state_dir.display()
        )
    })?;
    let gateway_uid = match User::from_name(&config.gateway_user)? {
        Some(u) => Some(u.uid.as_raw()),
        None => {
            tracing::warn!(
                user = %config.gateway_user,
                "gateway user does not exist: no web sessions will be accepted"
            );
            None
        }
    };

    let libvirt = Libvirt::new(config.libvirt_uri.clone())?;
    let (host_tx, host_rx) = mpsc::unbounded_channel();
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let settings = Settings {
        state_dir: &config.state_dir,
        osinfo_dir: Path::new(OSINFO_DIR),
        url_check_socket: &config.url_check_socket,
        session_idle: config.session_idle(),
        session_max: config.session_max(),
        gateway_uid,
    };
    let engine = Engine::new(libvirt.clone(), settings, changes_tx)
        .map_err(|e| format!("cannot start the engine: {e}"))?;

    let conn = zbus::connection::Builder::system().build().await?;
    let authority = Arc::new(Authority::new(&conn, engine.sessions.clone()).await?);
    authority.clone().follow_changes().await?;
    let bus = Bus::new(engine.clone(), authority);
    bus.export(&conn).await?;
    // The name is taken only once the tree is exported: whoever sees it can use it.
    // Neither replaces a running kimchid nor lets itself be replaced: two daemons
    // behind one name would split the state.
    let reply = conn
        .request_name_with_flags(kimchi_dbus::BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await?;
    if reply != RequestNameReply::PrimaryOwner {
        return Err(format!(
            "{} is already owned by another process",
            kimchi_dbus::BUS_NAME
        )
        .into());
    }
    let ready_status = format!("connecting to libvirt at {}", config.libvirt_uri);
    notify::ready(&ready_status);
    tracing::info!("serving {} on the system bus", kimchi_dbus::BUS_NAME);

    tokio::spawn(libvirt.clone().maintain_connection(host_tx));
    engine.follow(host_rx);
    tokio::spawn(bus.follow(conn.clone(), changes_rx));
    tokio::spawn(notify::watchdog());
    tokio::spawn(engine.tasks.clone().prune_periodically());
    tokio::spawn(allocator::trim_periodically());

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify::reloading();
                config = reload(&args, config, &log, &engine.sessions);
                notify::reloaded();
            }
        }
    }
    notify::stopping();
    tracing::info!("stopping");
    engine
        .tasks
        .fail_running("kimchid stopped before the task ended");
    libvirt.stop_probing().await;
    conn.release_name(kimchi_dbus::BUS_NAME).await?;
    Ok(())
}

/// Re-reads the configuration and applies what can change while running; a bad file
/// keeps the old configuration. Bus clients stay connected throughout.
fn reload(args: &cli::Args, old: Config, log: &LogControl, sessions: &Sessions) -> Config {
    let new = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, keeping the running configuration: {e}");
            return old;
        }
    };
    log.set_level(&new.log_level);
    sessions
        .store()
        .set_lifetimes(new.session_idle(), new.session_max());
    if new.libvirt_uri != old.libvirt_uri
        || new.gateway_user != old.gateway_user
        || new.state_dir != old.state_dir
        || new.url_check_socket != old.url_check_socket
    {
        tracing::warn!(
            "libvirt_uri, gateway_user, state_dir and url_check_socket changes take effect \
             at the next start"
        );
    }
    tracing::info!("configuration reloaded");
    Config {
        libvirt_uri: old.libvirt_uri,
        gateway_user: old.gateway_user,
        state_dir: old.state_dir,
        url_check_socket: old.url_check_socket,
        ..new
    }
}
