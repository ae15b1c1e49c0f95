//! The D-Bus client of kimchid. The system bus connection is opened on first use and
//! reopened when it dies, so a restart of kimchid or of the bus itself heals without
//! restarting the gateway. Over it the gateway asks kimchid for its link
//! (`Manager.OpenGatewayLink`): a socket on which kimchid serves Manager and Sessions
//! peer to peer, judging each call as the gateway's on the bus. Every request goes
//! over the link; consoles, which are rare, are opened on the bus.

use std::collections::HashMap;
use std::time::Duration;

use kimchi_dbus::{
    link_connection, CallOptions, Capabilities, ManagerProxy, SessionInfo, SessionsProxy, VmInfo,
    VmProxy,
};
use tokio::sync::Mutex;
use zbus::proxy::CacheProperties;
use zbus::Connection;

use crate::error::Error;

/// Backstop for a wedged bus or kimchid (the system bus daemon itself never times a
/// call out). Also bounds calls that wait for their task (`kimchi.wait`): a longer
/// task is answered 504 and goes on running.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long kimchid holds a waiting task call before answering with the task still
/// running (the REST reply is then 202 + Location).
const TASK_WAIT_SECS: u32 = 50;
/// Requests wait behind a reconnection, so a bus that accepts but never answers must
/// not hold them for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Kimchid {
    link: Mutex<Option<Link>>,
}

/// The bus connection, the link kimchid gave on it, and the proxies every request
/// uses on the link, made once per link.
#[derive(Clone)]
struct Link {
    conn: Connection,
    link: Connection,
    manager: ManagerProxy<'static>,
    sessions: SessionsProxy<'static>,
}

impl Kimchid {
    pub fn new() -> Self {
        Kimchid {
            link: Mutex::new(None),
        }
    }

    /// The live bus connection and its proxies, opening a new connection if there is
    /// none or it has closed. The lock makes concurrent requests share one
    /// reconnection.
    async fn link(&self) -> Result<Link, Error> {
        let mut current = self.link.lock().await;
        if let Some(link) = current
            .as_ref()
            .filter(|l| !l.conn.is_closed() && !l.link.is_closed())
        {
            return Ok(link.clone());
        }
        if current.take().is_some() {
            tracing::warn!("connection to kimchid lost; reconnecting");
        }
        let connect = zbus::connection::Builder::system()
            .method_timeout(CALL_TIMEOUT)
            .build();
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                let timed_out = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the system bus timed out",
                );
                zbus::Error::InputOutput(timed_out.into())
            })??;
        tracing::info!(
            unique_name = ?conn.unique_name().map(|n| n.as_str()),
            "connected to the system bus"
        );
        // Bounded by the call timeout (the call may start kimchid, as any call may) and
        // kimchid's own bound on the handshake.
        let link = open_link(&conn).await?;
        // The gateway reads nothing but method replies: a property cache would make
        // Properties calls (GetAll) on every proxy, which the bus policy refuses too.
        let manager = ManagerProxy::builder(&link)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let sessions = SessionsProxy::builder(&link)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let link = Link {
            conn,
            link,
            manager,
            sessions,
        };
        *current = Some(link.clone());
        Ok(link)
    }

    /// The Manager; resources call its methods with [`Call::options`].
    pub async fn manager(&self) -> Result<ManagerProxy<'static>, Error> {
        Ok(self.link().await?.manager)
    }

    /// A socket carrying the VM's VNC stream, from kimchid (`VM.OpenConsole`).
    pub async fn open_console(
        &self,
        call: &Call<'_>,
        vm: &VmInfo,
    ) -> Result<std::os::fd::OwnedFd, Error> {
        let conn = self.link().await?.conn;
        let proxy = VmProxy::builder(&conn)
            .path(vm.path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(proxy.open_console(call.options()).await?.into())
    }

    async fn sessions(&self) -> Result<SessionsProxy<'static>, Error> {
        Ok(self.link().await?.sessions)
    }

    /// Opens a session; kimchid checks the password with PAM.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        request_id: &str,
    ) -> Result<(String, SessionInfo), Error> {
        let call = Call::sessionless(request_id);
        let sessions = self.sessions().await?;
        Ok(sessions.login(user, password, call.options()).await?)
    }

    pub async fn logout(&self, token: &str, request_id: &str) -> Result<(), Error> {
        let call = Call::sessionless(request_id);
        let sessions = self.sessions().await?;
        Ok(sessions.logout(token, call.options()).await?)
    }

    /// What the host can do (`Manager.GetCapabilities`): public by design, so asked
    /// without a session.
    pub async fn capabilities(&self, request_id: &str) -> Result<Capabilities, Error> {
        let call = Call::sessionless(request_id);
        let manager = self.manager().await?;
        Ok(manager.get_capabilities(call.options()).await?)
    }
}

/// kimchid's link, asked for on the bus `conn` (which activates kimchid if needed).
async fn open_link(conn: &Connection) -> Result<Connection, Error> {
    let manager = ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let options = Call::sessionless("gateway-link").options();
    let fd: std::os::fd::OwnedFd = manager.open_gateway_link(options).await?.into();
    let link = link_connection(std::os::unix::net::UnixStream::from(fd))
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await?;
    tracing::info!("link to kimchid open");
    Ok(link)
}

/// What every call to kimchid carries besides its arguments.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub request_id: &'a str,
    pub session: Option<&'a str>,
}

impl<'a> Call<'a> {
    fn sessionless(request_id: &'a str) -> Self {
        Call {
            request_id,
            session: None,
        }
    }

    /// The options argument of a kimchid method.
    pub fn options(&self) -> Options {
        self.options_with(false)
    }

    /// The options argument of a method that starts a task; with `wait`, kimchid
    /// answers only once the task has ended.
    pub fn task_options(&self, wait: bool) -> Options {
        self.options_with(wait)
    }

    fn options_with(&self, wait: bool) -> Options {
        CallOptions {
            // Nobody is at a polkit agent for web requests: refuse rather than wait.
            no_user_interaction: true,
            session: self.session.map(str::to_owned),
            request_id: Some(self.request_id.to_owned()),
            wait,
            // Under the bus call timeout, so a long task comes back as 202, not 504.
            wait_timeout_secs: wait.then_some(TASK_WAIT_SECS),
        }
        .to_dict()
    }
}

/// The `a{sv}` argument every kimchid method ends with.
pub type Options = HashMap<String, zbus::OwnedVariant>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_carries_session_request_id_and_no_interaction() {
        let call = Call {
            request_id: "r1",
            session: Some("tok"),
        };
        let opts = CallOptions::from_dict(&call.options()).unwrap();
        assert_eq!(
            opts,
            CallOptions {
                no_user_interaction: true,
                session: Some("tok".into()),
                request_id: Some("r1".into()),
                wait: false,
                wait_timeout_secs: None,
            }
        );
        let opts = CallOptions::from_dict(&call.task_options(true)).unwrap();
        assert!(opts.wait && opts.no_user_interaction);
        assert_eq!(opts.wait_timeout_secs, Some(TASK_WAIT_SECS));
    }
}
