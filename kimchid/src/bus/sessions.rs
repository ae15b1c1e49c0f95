use std::sync::Arc;

use kimchi_dbus::{Error as BusError, SessionInfo};
use zbus::interface;
use zbus::message::Header;

use super::guard::Guard;
use super::Options;
use crate::engine::sessions::Sessions as Service;

pub struct Sessions {
    sessions: Arc<Service>,
    guard: Arc<Guard>,
}

impl Sessions {
    pub fn new(sessions: Arc<Service>, guard: Arc<Guard>) -> Self {
        Sessions { sessions, guard }
    }
}

#[interface(name = "org.kimchi.Kimchi1.Sessions")]
impl Sessions {
    /// Checks the password with PAM (service `kimchi`) and mints an opaque token.
    async fn login(
        &self,
        user: String,
        password: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(String, SessionInfo), BusError> {
        let uid = self.guard.caller(&hdr, &options).await?;
        Ok(self.sessions.login(uid, user, password).await?)
    }

    /// Ends the session of `token`; unknown tokens are not an error (logout is idempotent).
    async fn logout(
        &self,
        token: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        let uid = self.guard.caller(&hdr, &options).await?;
        Ok(self.sessions.logout(uid, &token)?)
    }
}
