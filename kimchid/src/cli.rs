use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kimchid: the root daemon behind org.kimchi.Kimchi1.
///
/// Settings come from the configuration file; a flag given here wins over it.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Without a subcommand, kimchid runs as the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Configuration file (TOML); a missing file means all defaults.
    #[arg(
        long,
        env = "KIMCHI_CONFIG",
        default_value = "/etc/kimchi/kimchid.conf"
    )]
    pub config: PathBuf,

    /// libvirt connection URI (a remote transport such as qemu+ssh:// works too).
    #[arg(long, env = "KIMCHI_LIBVIRT_URI")]
    pub libvirt_uri: Option<String>,

    /// The user the gateway runs as: only its calls may carry web sessions.
    #[arg(long, env = "KIMCHI_GATEWAY_USER")]
    pub gateway_user: Option<String>,

    /// Where kimchid keeps its persistent data.
    #[arg(long, env = "KIMCHI_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// A web session ends after this many seconds without use.
    #[arg(long)]
    pub session_idle_secs: Option<u64>,

    /// A web session ends this many seconds after login, however busy.
    #[arg(long)]
    pub session_max_secs: Option<u64>,

    /// Log filter (error, warn, info, debug, trace, or levels per target).
    #[arg(long)]
    pub log_level: Option<String>,

    /// The socket of the URL check service (kimchi-url-check.socket), which asks
    /// whether a template's ISO URL answers: kimchid itself has no IP.
    #[arg(long, env = "KIMCHI_URL_CHECK_SOCKET")]
    pub url_check_socket: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Checks one ISO URL for kimchid: reads a request line on stdin, writes the
    /// answer line on stdout (the connection kimchi-url-check@.service is given).
    /// Reads no configuration.
    CheckUrl,
}
