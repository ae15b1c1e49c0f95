use zbus::{OwnedVariant, Variant};

use crate::dict::{put, read, Dict};
use crate::Error;

/// `b`: do not let polkit ask the caller to authenticate interactively.
pub const OPT_NO_USER_INTERACTION: &str = "auth.no_user_interaction";
/// `s`: a web session token; honoured only from the gateway's uid.
pub const OPT_SESSION: &str = "kimchi.session";
/// `s`: correlates log lines of one request across gateway and daemon.
pub const OPT_REQUEST_ID: &str = "kimchi.request-id";
/// `b`: for operations that run as tasks, return only when the task has ended.
pub const OPT_WAIT: &str = "kimchi.wait";
/// `u`: with `kimchi.wait`, return after at most this many seconds even if the task
/// still runs (the reply is the task as it is then, running or ended).
pub const OPT_WAIT_TIMEOUT: &str = "kimchi.wait-timeout";

/// The `a{sv} options` argument every kimchid method ends with, parsed once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallOptions {
    pub no_user_interaction: bool,
    pub session: Option<String>,
    pub request_id: Option<String>,
    pub wait: bool,
    pub wait_timeout_secs: Option<u32>,
}

impl CallOptions {
    /// Parses the wire dictionary. Unknown `kimchi.*` keys and wrongly typed known keys
    /// are refused so that a typo never silently changes behaviour; other keys are
    /// ignored for forward compatibility.
    pub fn from_dict(dict: &Dict) -> Result<Self, Error> {
        let mut opts = CallOptions::default();
        for (key, value) in dict {
            match key.as_str() {
                OPT_NO_USER_INTERACTION => opts.no_user_interaction = bool_option(key, value)?,
                OPT_WAIT => opts.wait = bool_option(key, value)?,
                OPT_SESSION => opts.session = Some(string_option(key, value)?),
                OPT_REQUEST_ID => opts.request_id = Some(string_option(key, value)?),
                OPT_WAIT_TIMEOUT => {
                    opts.wait_timeout_secs = Some(read(value, || {
                        Error::InvalidArgument(format!("option '{key}' must be a u32 (u)"))
                    })?)
                }
                k if k.starts_with("kimchi.") => {
                    return Err(Error::InvalidArgument(format!("unknown option '{k}'")));
                }
                _ => {}
            }
        }
        Ok(opts)
    }

    /// The wire dictionary for these options, as a client sends it.
    pub fn to_dict(&self) -> Dict {
        let mut dict = Dict::new();
        if self.no_user_interaction {
            put(&mut dict, OPT_NO_USER_INTERACTION, Variant::from(true));
        }
        if self.wait {
            put(&mut dict, OPT_WAIT, Variant::from(true));
        }
        if let Some(s) = &self.session {
            put(&mut dict, OPT_SESSION, Variant::from(s.as_str()));
        }
        if let Some(r) = &self.request_id {
            put(&mut dict, OPT_REQUEST_ID, Variant::from(r.as_str()));
        }
        if let Some(t) = self.wait_timeout_secs {
            put(&mut dict, OPT_WAIT_TIMEOUT, Variant::from(t));
        }
        dict
    }
}

fn bool_option(key: &str, value: &OwnedVariant) -> Result<bool, Error> {
    read(value, || {
        Error::InvalidArgument(format!("option '{key}' must be a boolean (b)"))
    })
}

fn string_option(key: &str, value: &OwnedVariant) -> Result<String, Error> {
    read(value, || {
        Error::InvalidArgument(format!("option '{key}' must be a string (s)"))
    })
    .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_known_option() {
        let opts = CallOptions {
            no_user_interaction: true,
            session: Some("tok".into()),
            request_id: Some("req-1".into()),
            wait: true,
            wait_timeout_secs: Some(50),
        };
        assert_eq!(CallOptions::from_dict(&opts.to_dict()).unwrap(), opts);
    }

    #[test]
    fn unknown_kimchi_key_is_invalid_argument() {
        let mut dict = CallOptions::default().to_dict();
        dict.insert(
            "kimchi.sesion".into(),
            OwnedVariant::try_from(Variant::from("x")).unwrap(),
        );
        let err = CallOptions::from_dict(&dict).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(m) if m.contains("kimchi.sesion")));
    }

    #[test]
    fn foreign_keys_are_ignored() {
        let mut dict = Dict::new();
        dict.insert(
            "org.example.hint".into(),
            OwnedVariant::try_from(Variant::from(3u32)).unwrap(),
        );
        assert_eq!(
            CallOptions::from_dict(&dict).unwrap(),
            CallOptions::default()
        );
    }

    #[test]
    fn wrongly_typed_known_key_is_refused() {
        let mut dict = Dict::new();
        dict.insert(
            OPT_WAIT.into(),
            OwnedVariant::try_from(Variant::from("yes")).unwrap(),
        );
        assert!(matches!(
            CallOptions::from_dict(&dict),
            Err(Error::InvalidArgument(_))
        ));
    }
}
