use kimchi_dbus::Error as BusError;

/// Everything that can go wrong inside kimchid. Mapped once, below, to the named
/// D-Bus errors of the contract.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotAuthorized(String),
    #[error("{0}")]
    SessionInvalid(String),
    #[error("{0}")]
    AuthenticationFailed(String),
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
    #[error("{0}")]
    Internal(String),
}

impl From<virt::error::Error> for Error {
    fn from(e: virt::error::Error) -> Self {
        use virt::enumutil::Enum;
        use virt::error::ErrorNumber;
        if e.code() == Enum::Known(ErrorNumber::NoDomain) {
            return Error::NotFound(e.message().to_owned());
        }
        Error::Libvirt {
            code: e.code().to_raw(),
            domain: e.domain().to_raw(),
            message: e.message().to_owned(),
        }
    }
}

impl From<Error> for BusError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => BusError::NotFound(msg),
            Error::InvalidArgument(_) => BusError::InvalidArgument(msg),
            Error::NotAuthorized(_) => BusError::NotAuthorized(msg),
            Error::SessionInvalid(_) => BusError::SessionInvalid(msg),
            Error::AuthenticationFailed(_) => BusError::AuthenticationFailed(msg),
            Error::LibvirtUnavailable(_) => BusError::Unavailable(msg),
            Error::Libvirt { .. } | Error::Polkit(_) | Error::Pam(_) | Error::Internal(_) => {
                BusError::Failed(msg)
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
