//! The gateway's link (`Manager.OpenGatewayLink`), as both ends speak it: D-Bus peer
//! to peer over the socket pair kimchid made, with no bus and nothing to
//! authenticate (holding the socket, handed to the gateway's uid, is the credential).

use std::os::unix::net::UnixStream;

use zbus::connection::{AuthMechanism, Builder};

/// A connection on one end of the link. kimchid adds `server(guid)` and the objects
/// it serves; the gateway builds it as it is.
pub fn link_connection<'a>(socket: UnixStream) -> Builder<'a> {
    Builder::unix_stream(socket)
        .p2p()
        .auth_mechanism(AuthMechanism::Anonymous)
}
