//! The gateway's configuration: `/etc/kimchi/gateway.conf` (TOML), overridden by
//! flags. Every value is checked at load, so a bad file stops the start with a
//! sentence naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::cli::Args;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address bound when no socket comes from systemd.
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM); given together with `key` or not at all.
    pub cert: Option<PathBuf>,
    /// Private key of `cert` (PEM).
    pub key: Option<PathBuf>,
    /// Where a generated self-signed pair is kept.
    pub state_dir: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// Seconds a connection may stay open without a request before it is closed.
    pub idle_timeout_secs: u64,
    /// Log filter: a level, or levels per target ("info,kimchid=debug"); `RUST_LOG` wins when set.
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "[::]:8001".parse().expect("a valid socket address"),
            cert: None,
            key: None,
            state_dir: "/var/lib/kimchi-gateway".into(),
            max_body_bytes: 1024 * 1024,
            idle_timeout_secs: 60,
            log_level: "info".into(),
        }
    }
}

/// An address with a port, refused with an example of one (serde's own message is
/// just "invalid socket address syntax").
fn socket_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "'{text}' is not an IP address with a port, such as \"[::]:8001\" or \"127.0.0.1:8001\""
        ))
    })
}

impl Config {
    /// Reads the file named by `args` (absent file: defaults), applies the flags, checks.
    pub fn load(args: &Args) -> Result<Config, String> {
        let mut config = match std::fs::read_to_string(&args.config) {
            Ok(text) => Self::parse(&text, &args.config)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", args.config.display())),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str, path: &Path) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn apply(&mut self, args: &Args) {
        if let Some(v) = args.listen {
            self.listen = v;
        }
        // clap takes --cert and --key only together, so they replace the file's pair.
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            self.cert = Some(cert.clone());
            self.key = Some(key.clone());
        }
        if let Some(v) = &args.state_dir {
            self.state_dir = v.clone();
        }
        if let Some(v) = args.max_body_bytes {
            self.max_body_bytes = v;
        }
        if let Some(v) = args.idle_timeout_secs {
            self.idle_timeout_secs = v;
        }
        if let Some(v) = &args.log_level {
            self.log_level = v.clone();
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            let (set, unset) = if self.cert.is_some() {
                ("cert", "key")
            } else {
                ("key", "cert")
            };
            return Err(format!(
                "{set} is set but {unset} is not: give both or neither"
            ));
        }
        for (name, path) in [("cert", &self.cert), ("key", &self.key)] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("{name} must not be empty"));
            }
        }
        if !self.state_dir.is_absolute() {
            return Err(format!(
                "state_dir must be an absolute path, not '{}'",
                self.state_dir.display()
            ));
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be at least 1".into());
        }
        if self.idle_timeout_secs == 0 {
            return Err("idle_timeout_secs must be at least 1".into());
        }
        self.log_level
            .parse::<tracing_subscriber::filter::Targets>()
            .map_err(|e| format!("log_level '{}' is not a valid filter: {e}", self.log_level))?;
        Ok(())
    }

    /// The certificate and key named by the file or the flags, if any.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        self.cert.as_deref().zip(self.key.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["kimchi-gateway", "--config", "/nonexistent/gateway.conf"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn missing_file_means_defaults() {
        assert_eq!(Config::load(&args(&[])).unwrap(), Config::default());
    }

    #[test]
    fn file_values_are_read_and_flags_win() {
        let mut config = Config::parse(
            "listen = \"127.0.0.1:9001\"\nmax_body_bytes = 4096\nlog_level = \"debug\"\n\
             cert = \"/etc/ssl/k.pem\"\nkey = \"/etc/ssl/k.key\"\n",
            Path::new("g.conf"),
        )
        .unwrap();
        config.apply(&args(&[
            "--max-body-bytes",
            "10",
            "--cert",
            "/c.pem",
            "--key",
            "/k.pem",
        ]));
        config.validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.max_body_bytes, 10);
        assert_eq!(config.log_level, "debug");
        assert_eq!(
            config.tls_files(),
            Some((Path::new("/c.pem"), Path::new("/k.pem")))
        );
        assert_eq!(config.state_dir, Config::default().state_dir);
    }

    #[test]
    fn shipped_file_documents_the_defaults() {
        let shipped = include_str!("../gateway.conf");
        // Settings are commented out as `#key = value`; prose and examples as `# ...`.
        let uncommented: String = shipped
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()) && l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        for key in [
            "listen",
            "state_dir",
            "max_body_bytes",
            "idle_timeout_secs",
            "log_level",
        ] {
            assert!(
                uncommented.contains(&format!("{key} = ")),
                "{key} is not documented"
            );
        }
        for key in ["cert", "key"] {
            assert!(
                shipped.contains(&format!("{key} = ")),
                "{key} is not documented"
            );
        }
        assert_eq!(
            Config::parse(shipped, Path::new("gateway.conf")).unwrap(),
            Config::default()
        );
        assert_eq!(
            Config::parse(&uncommented, Path::new("gateway.conf")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::parse("max_body_size = 1\n", Path::new("g.conf")).unwrap_err();
        assert!(err.contains("max_body_size"), "{err}");
    }

    #[test]
    fn wrong_type_or_bad_address_is_an_error_naming_the_key() {
        let err = Config::parse("max_body_bytes = \"big\"\n", Path::new("g.conf")).unwrap_err();
        assert!(err.contains("max_body_bytes"), "{err}");
        let err = Config::parse("listen = \"localhost\"\n", Path::new("g.conf")).unwrap_err();
        assert!(err.contains("listen"), "{err}");
        assert!(err.contains("not an IP address with a port"), "{err}");
        let config = Config::parse("listen = \"127.0.0.1:9\"\n", Path::new("g.conf")).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9".parse().unwrap());
    }

    #[test]
    fn half_a_tls_pair_is_refused() {
        let config = Config::parse("cert = \"/c.pem\"\n", Path::new("g.conf")).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.contains("key is not"), "{err}");
        let config = Config::parse("key = \"/k.pem\"\n", Path::new("g.conf")).unwrap();
        assert!(config.validate().unwrap_err().contains("cert is not"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let mut config = Config {
            log_level: "info,=[".into(),
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().contains("log_level"));
        config.log_level = "info".into();
        config.state_dir = "var/lib/kimchi-gateway".into();
        assert!(config.validate().unwrap_err().contains("state_dir"));
        config.state_dir = Config::default().state_dir;
        config.max_body_bytes = 0;
        assert!(config.validate().unwrap_err().contains("max_body_bytes"));
        config.max_body_bytes = 1;
        config.idle_timeout_secs = 0;
        assert!(config.validate().unwrap_err().contains("idle_timeout_secs"));
        config.idle_timeout_secs = 1;
        config.cert = Some("".into());
        config.key = Some("/k.pem".into());
        assert!(config
            .validate()
            .unwrap_err()
            .contains("cert must not be empty"));
    }
}
