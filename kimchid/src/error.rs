use kimchi_dbus::Error as BusError;

use crate::excerpt::bounded_message;

/// Everything that can go wrong inside kimchid. libvirt's codes become these in
/// `libvirt/` (once); these become the named D-Bus errors of the contract below
/// (once). The only remap in between is the named method below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotAuthorized(String),
    #[error("{0}")]
    SessionInvalid(String),
    #[error("{0}")]
    AuthenticationFailed(String),
    /// A resource of kimchid's own is used up for now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("libvirt is not reachable at {0}; kimchid keeps retrying")]
    LibvirtUnavailable(String),
    #[error("libvirt: {message} [code {code}, domain {domain}]")]
    Libvirt {
        code: u32,
        domain: u32,
        message: String,
    },
    #[error("authorization service (polkit) failed: {0}")]
    Polkit(String),
    #[error("PAM: {0}")]
    Pam(String),
    #[error("template store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Deliberate remap: a missing object that a request only refers to (the image a
    /// template's cdrom names, the volume a disk copies) is the caller's bad argument
    /// (400), not the missing resource the request addressed (404).
    pub fn refers_to_missing(self, reason: impl FnOnce() -> String) -> Error {
        match self {
            Error::NotFound(_) => Error::InvalidArgument(reason()),
            other => other,
        }
    }
}

impl From<Error> for BusError {
    fn from(e: Error) -> Self {
        let msg = bounded_message(e.to_string());
        match e {
            Error::NotFound(_) => BusError::NotFound(msg),
            Error::InvalidArgument(_) => BusError::InvalidArgument(msg),
            Error::AlreadyExists(_) => BusError::AlreadyExists(msg),
            Error::InvalidState(_) => BusError::InvalidState(msg),
            Error::NotSupported(_) => BusError::NotSupported(msg),
            Error::Busy(_) => BusError::Busy(msg),
            Error::NotAuthorized(_) => BusError::NotAuthorized(msg),
            Error::SessionInvalid(_) => BusError::SessionInvalid(msg),
            Error::AuthenticationFailed(_) => BusError::AuthenticationFailed(msg),
            Error::Unavailable(_) | Error::LibvirtUnavailable(_) => BusError::Unavailable(msg),
            Error::Libvirt { .. }
            | Error::Polkit(_)
            | Error::Pam(_)
            | Error::Store(_)
            | Error::Internal(_) => BusError::Failed(msg),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
