use std::path::PathBuf;

use clap::Parser;

/// kimchid: the root daemon behind org.kimchi.Kimchi1.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// libvirt connection URI (a remote transport such as qemu+ssh:// works too).
    #[arg(long, env = "KIMCHI_LIBVIRT_URI", default_value = "qemu:///system")]
    pub libvirt_uri: String,

    /// The user the gateway runs as: only its calls may carry web sessions.
    #[arg(long, env = "KIMCHI_GATEWAY_USER", default_value = "_kimchi-gw")]
    pub gateway_user: String,

    /// Where kimchid keeps its persistent data.
    #[arg(long, env = "KIMCHI_STATE_DIR", default_value = "/var/lib/kimchi")]
    pub state_dir: PathBuf,

    /// A web session ends after this many seconds without use.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_secs: u64,

    /// A web session ends this many seconds after login, however busy.
    #[arg(long, default_value_t = 28800, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_max_secs: u64,
}
