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

impl From<virt::error::Error> for Error {
    fn from(e: virt::error::Error) -> Self {
        use virt::enumutil::Enum;
        use virt::error::ErrorNumber;
        let message = e.message().to_owned();
        match e.code() {
            Enum::Known(
                ErrorNumber::NoDomain | ErrorNumber::NoStoragePool | ErrorNumber::NoStorageVolume,
            ) => Error::NotFound(message),
            Enum::Known(ErrorNumber::StorageVolExist | ErrorNumber::DomExist) => {
                Error::AlreadyExists(message)
            }
            Enum::Known(ErrorNumber::OperationInvalid) => Error::InvalidState(message),
            code => Error::Libvirt {
                code: code.to_raw(),
                domain: e.domain().to_raw(),
                message,
            },
        }
    }
}

impl From<Error> for BusError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
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
            Error::LibvirtUnavailable(_) => BusError::Unavailable(msg),
            Error::Libvirt { .. }
            | Error::Polkit(_)
            | Error::Pam(_)
            | Error::Store(_)
            | Error::Internal(_) => BusError::Failed(msg),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
