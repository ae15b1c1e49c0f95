/// Every error kimchid sends, as a named D-Bus error with a sentence for humans
/// (`org.kimchi.Kimchi1.Error.NotFound: no VM named 'x'`).
///
/// The gateway maps these once to HTTP status codes; busctl shows them as they are.
#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "org.kimchi.Kimchi1.Error")]
pub enum Error {
    /// Transport errors on the client side; kimchid never sends this variant.
    #[zbus(error)]
    ZBus(zbus::Error),
    NotFound(String),
    AlreadyExists(String),
    InvalidArgument(String),
    InvalidState(String),
    NotAuthorized(String),
    SessionInvalid(String),
    /// Login refused: unknown user, wrong password or unusable account.
    AuthenticationFailed(String),
    Busy(String),
    NotSupported(String),
    /// A backend kimchid depends on (libvirt) is down; retrying later may work.
    Unavailable(String),
    Failed(String),
}
