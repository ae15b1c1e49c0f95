use std::sync::Arc;

use kimchi_dbus::{CallOptions, Error as BusError, SessionInfo};
use tokio::sync::Semaphore;
use zbus::interface;
use zbus::message::Header;

use super::Options;
use crate::authority::Authority;
use crate::error::Error;
use crate::pam;

/// PAM logins running at once; more wait their turn. Each holds a blocking thread
/// (a refused password sleeps ~2 s), so this bounds threads and memory under a burst
/// of Basic-auth requests or password guessing.
const CONCURRENT_LOGINS: usize = 4;

pub struct Sessions {
    authority: Arc<Authority>,
    logins: Semaphore,
}

impl Sessions {
    pub fn new(authority: Arc<Authority>) -> Self {
        Sessions {
            authority,
            logins: Semaphore::new(CONCURRENT_LOGINS),
        }
    }

    /// Sessions exist for the gateway; root may log in too (for administration
    /// scripts), nobody else gets to try passwords through kimchid.
    async fn check_caller(&self, hdr: &Header<'_>) -> Result<(), Error> {
        let uid = self.authority.caller_uid(hdr).await?;
        if uid == 0 || self.authority.gateway_uid() == Some(uid) {
            Ok(())
        } else {
            Err(Error::NotAuthorized(format!(
                "uid {uid} may not open web sessions"
            )))
        }
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
        CallOptions::from_dict(&options)?;
        self.check_caller(&hdr).await?;
        let who = user.clone();
        let _turn = self
            .logins
            .acquire()
            .await
            .map_err(|_| Error::Internal("login queue closed".into()))?;
        let outcome = tokio::task::spawn_blocking(move || pam::login(&user, &password))
            .await
            .map_err(|e| Error::Internal(format!("PAM task failed: {e}")))??;
        let info = outcome.ok_or_else(|| {
            Error::AuthenticationFailed(format!("authentication failed for user '{who}'"))
        })?;
        tracing::info!(user = %info.user, groups = ?info.groups, "web session opened");
        let token = self.authority.sessions().create(info.clone());
        Ok((token, info))
    }

    /// Ends the session of `token`; unknown tokens are not an error (logout is idempotent).
    async fn logout(
        &self,
        token: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BusError> {
        CallOptions::from_dict(&options)?;
        self.check_caller(&hdr).await?;
        self.authority.sessions().remove(&token);
        Ok(())
    }
}
