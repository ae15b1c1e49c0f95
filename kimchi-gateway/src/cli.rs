use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// kimchi-gateway: the Kimchi REST API over HTTPS, served by calling kimchid on the
/// system bus. Runs unprivileged (as _kimchi-gw); refuses to run as root.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Address to bind when no socket comes from systemd (LISTEN_FDS).
    #[arg(long, env = "KIMCHI_LISTEN", default_value = "[::]:8001")]
    pub listen: SocketAddr,

    /// TLS certificate chain (PEM); without it a self-signed one is generated once.
    #[arg(long, env = "KIMCHI_TLS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key of --cert (PEM).
    #[arg(long, env = "KIMCHI_TLS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Where the generated certificate and key are kept.
    #[arg(
        long,
        env = "KIMCHI_GATEWAY_STATE_DIR",
        default_value = "/var/lib/kimchi-gateway"
    )]
    pub state_dir: PathBuf,

    /// Largest request body accepted; bigger ones get 413.
    #[arg(
        long,
        env = "KIMCHI_MAX_BODY_BYTES",
        default_value_t = 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_body_bytes: u64,

    /// Log filter (error, warn, info, debug, trace, or tracing directives); RUST_LOG wins.
    #[arg(long, env = "KIMCHI_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn cert_without_key_is_refused() {
        let err = Args::try_parse_from(["kimchi-gateway", "--cert", "/c.pem"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn zero_body_limit_is_refused() {
        assert!(Args::try_parse_from(["kimchi-gateway", "--max-body-bytes", "0"]).is_err());
    }
}
