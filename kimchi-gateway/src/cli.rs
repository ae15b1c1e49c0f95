use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kimchi-gateway: the Kimchi REST API over HTTPS, served by calling kimchid on the
/// system bus. Runs unprivileged (as _kimchi-gw); refuses to run as root.
///
/// Settings come from the configuration file; a flag given here wins over it.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Configuration file (TOML); a missing file means all defaults.
    #[arg(
        long,
        env = "KIMCHI_GATEWAY_CONFIG",
        default_value = "/etc/kimchi/gateway.conf"
    )]
    pub config: PathBuf,

    /// Address to bind when no socket comes from systemd (LISTEN_FDS).
    #[arg(long, env = "KIMCHI_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// TLS certificate chain (PEM). Without it: the systemd credentials tls.crt and
    /// tls.key, else a self-signed pair generated once into the state directory.
    #[arg(long, env = "KIMCHI_TLS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key of --cert (PEM).
    #[arg(long, env = "KIMCHI_TLS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Where the generated certificate and key are kept.
    #[arg(long, env = "KIMCHI_GATEWAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Largest request body accepted; bigger ones get 413.
    #[arg(
        long,
        env = "KIMCHI_MAX_BODY_BYTES",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_body_bytes: Option<u64>,

    /// Seconds a connection may stay open without a request before it is closed.
    #[arg(
        long,
        env = "KIMCHI_IDLE_TIMEOUT_SECS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idle_timeout_secs: Option<u64>,

    /// Log filter (error, warn, info, debug, trace, or levels per target); RUST_LOG wins.
    #[arg(long, env = "KIMCHI_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Writes a self-signed certificate (cert.pem, 0644) and its key (key.pem, 0600)
    /// into a directory and exits; does nothing when both files are already there.
    GenerateCertificate {
        /// Directory to write to (created, mode 0700, if missing).
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Prints the OpenAPI document that `GET /openapi.json` serves, and exits.
    Openapi,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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

    #[test]
    fn generate_certificate_takes_a_directory_and_no_serving_flags() {
        let args =
            Args::try_parse_from(["kimchi-gateway", "generate-certificate", "--out-dir", "/d"])
                .unwrap();
        assert!(matches!(
            args.command,
            Some(Command::GenerateCertificate { out_dir }) if out_dir == Path::new("/d")
        ));
        assert!(Args::try_parse_from(["kimchi-gateway", "generate-certificate"]).is_err());
        assert!(Args::try_parse_from([
            "kimchi-gateway",
            "--listen",
            "[::]:1",
            "generate-certificate",
            "--out-dir",
            "/d"
        ])
        .is_err());
    }
}
