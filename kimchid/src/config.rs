//! kimchid's configuration: `/etc/kimchi/kimchid.conf` (TOML), overridden by flags.
//! Every value is checked at load, so a bad file stops the start (or the reload)
//! with a sentence naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::Args;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// libvirt connection URI.
    pub libvirt_uri: String,
    /// The gateway's user: only its calls may carry web sessions.
    pub gateway_user: String,
    /// Persistent data (templates database).
    pub state_dir: PathBuf,
    /// Seconds without use after which a web session ends.
    pub session_idle_secs: u64,
    /// Seconds after login after which a web session ends.
    pub session_max_secs: u64,
    /// Log filter: a level, or levels per target ("info,kimchid=debug"); `RUST_LOG` wins when set.
    pub log_level: String,
    /// Where kimchi-url-check.socket listens (template ISO URLs are checked there).
    pub url_check_socket: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            libvirt_uri: "qemu:///system".into(),
            gateway_user: "_kimchi-gw".into(),
            state_dir: "/var/lib/kimchi".into(),
            session_idle_secs: 1800,
            session_max_secs: 28800,
            log_level: "info".into(),
            url_check_socket: "/run/kimchi-url-check.sock".into(),
        }
    }
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
        if let Some(v) = &args.libvirt_uri {
            self.libvirt_uri = v.clone();
        }
        if let Some(v) = &args.gateway_user {
            self.gateway_user = v.clone();
        }
        if let Some(v) = &args.state_dir {
            self.state_dir = v.clone();
        }
        if let Some(v) = args.session_idle_secs {
            self.session_idle_secs = v;
        }
        if let Some(v) = args.session_max_secs {
            self.session_max_secs = v;
        }
        if let Some(v) = &args.log_level {
            self.log_level = v.clone();
        }
        if let Some(v) = &args.url_check_socket {
            self.url_check_socket = v.clone();
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.libvirt_uri.trim().is_empty() {
            return Err("libvirt_uri must not be empty".into());
        }
        if self.gateway_user.trim().is_empty() {
            return Err("gateway_user must not be empty".into());
        }
        if !self.state_dir.is_absolute() {
            return Err(format!(
                "state_dir must be an absolute path, not '{}'",
                self.state_dir.display()
            ));
        }
        if !self.url_check_socket.is_absolute() {
            return Err(format!(
                "url_check_socket must be an absolute path, not '{}'",
                self.url_check_socket.display()
            ));
        }
        if self.session_idle_secs == 0 || self.session_max_secs == 0 {
            return Err("session_idle_secs and session_max_secs must be at least 1".into());
        }
        if self.session_idle_secs > self.session_max_secs {
            return Err(format!(
                "session_idle_secs ({}) must not exceed session_max_secs ({})",
                self.session_idle_secs, self.session_max_secs
            ));
        }
        self.log_level
            .parse::<tracing_subscriber::filter::Targets>()
            .map_err(|e| format!("log_level '{}' is not a valid filter: {e}", self.log_level))?;
        Ok(())
    }

    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(self.session_idle_secs)
    }

    pub fn session_max(&self) -> Duration {
        Duration::from_secs(self.session_max_secs)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["kimchid", "--config", "/nonexistent/kimchid.conf"];
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
            "libvirt_uri = \"test:///default\"\nsession_idle_secs = 60\nlog_level = \"debug\"\n",
            Path::new("k.conf"),
        )
        .unwrap();
        config.apply(&args(&["--session-idle-secs", "30"]));
        assert_eq!(config.libvirt_uri, "test:///default");
        assert_eq!(config.session_idle_secs, 30);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.gateway_user, "_kimchi-gw");
        config.validate().unwrap();
    }

    #[test]
    fn shipped_file_documents_the_defaults() {
        let shipped = include_str!("../kimchid.conf");
        let uncommented: String = shipped
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            Config::parse(shipped, Path::new("kimchid.conf")).unwrap(),
            Config::default()
        );
        assert_eq!(
            Config::parse(&uncommented, Path::new("kimchid.conf")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::parse("libvirt_url = \"x\"\n", Path::new("k.conf")).unwrap_err();
        assert!(err.contains("libvirt_url"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = Config::parse("session_idle_secs = \"soon\"\n", Path::new("k.conf")).unwrap_err();
        assert!(err.contains("session_idle_secs"), "{err}");
    }

    #[test]
    fn idle_longer_than_max_is_refused() {
        let config = Config {
            session_idle_secs: 100,
            session_max_secs: 10,
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err(),
            "session_idle_secs (100) must not exceed session_max_secs (10)"
        );
    }

    #[test]
    fn bad_log_level_and_relative_state_dir_are_refused() {
        let mut config = Config {
            log_level: "info,=[".into(),
            ..Config::default()
        };
        // The rest of the sentence is the filter parser's.
        let err = config.validate().unwrap_err();
        assert!(
            err.starts_with("log_level 'info,=[' is not a valid filter: "),
            "{err}"
        );
        // Levels per target, as kimchid.conf documents, are a valid filter.
        config.log_level = "warn,kimchid=debug".into();
        config.state_dir = "var/lib/kimchi".into();
        assert_eq!(
            config.validate().unwrap_err(),
            "state_dir must be an absolute path, not 'var/lib/kimchi'"
        );
        config.state_dir = "/var/lib/kimchi".into();
        config.url_check_socket = "url-check.sock".into();
        assert_eq!(
            config.validate().unwrap_err(),
            "url_check_socket must be an absolute path, not 'url-check.sock'"
        );
    }

    #[test]
    fn the_url_check_socket_comes_from_the_file_or_the_flag() {
        let mut config =
            Config::parse("url_check_socket = \"/run/a.sock\"\n", Path::new("k.conf")).unwrap();
        assert_eq!(config.url_check_socket, Path::new("/run/a.sock"));
        config.apply(&args(&["--url-check-socket", "/run/b.sock"]));
        assert_eq!(config.url_check_socket, Path::new("/run/b.sock"));
    }

    #[test]
    fn check_url_is_a_subcommand_taking_no_configuration() {
        assert_eq!(
            Args::parse_from(["kimchid", "check-url"]).command,
            Some(crate::cli::Command::CheckUrl)
        );
        assert_eq!(Args::parse_from(["kimchid"]).command, None);
    }
}
