//! A keep-alive HTTP/1.1 client for the gateway (hyper's connection-level client over
//! tokio-rustls): one TLS connection carries every request, so a median measures the
//! request, not the handshake. It logs in with `POST /login` (session cookie, and the
//! CSRF token for writes) or sends HTTP Basic credentials with every request.
//!
//! The stack may be restarted under a run: a request whose connection broke is sent
//! again on a new one (for up to a minute), and a session kimchid forgot (401) is
//! replaced by a new login.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE,
};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Result;

/// How long a broken connection is retried before the request fails.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// Requests that fail on a fresh connection this many times in a row are given up.
const MAX_BROKEN: u32 = 5;
const SESSION_COOKIE: &str = "kimchi_session";

/// Where the gateway is, and how to speak TLS to it.
pub struct Target {
    /// `host:port`, for the TCP connection and the `Host` header.
    authority: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl Target {
    pub fn new(base_url: &str) -> Result<Arc<Target>> {
        let authority = base_url
            .strip_prefix("https://")
            .ok_or_else(|| format!("the gateway URL {base_url} is not https://"))?
            .trim_end_matches('/')
            .to_owned();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned();
        Ok(Arc::new(Target {
            server_name: ServerName::try_from(host)?,
            authority,
            tls: TlsConnector::from(Arc::new(kimchi_tests::tls::client_config())),
        }))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(&self.authority).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
        // Drives the connection; it ends when the sender is dropped or the peer closes.
        tokio::spawn(connection);
        Ok(sender)
    }
}

enum Auth {
    Anonymous,
    Session {
        user: String,
        password: String,
        cookie: String,
        csrf_token: String,
    },
    Basic(HeaderValue),
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Result<Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body, or an error naming `what` and the status unless it is 2xx.
    pub fn success(self, what: &str) -> Result<Response> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(format!(
                "{what}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
            .into())
        }
    }
}

pub struct Client {
    target: Arc<Target>,
    sender: SendRequest<Full<Bytes>>,
    auth: Auth,
}

impl Client {
    pub async fn anonymous(target: &Arc<Target>) -> Result<Client> {
        Ok(Client {
            sender: target.connect().await?,
            target: target.clone(),
            auth: Auth::Anonymous,
        })
    }

    /// A client logged in as `user` with `POST /login`.
    pub async fn session(target: &Arc<Target>, user: &str, password: &str) -> Result<Client> {
        let mut client = Client::anonymous(target).await?;
        client.auth = client.login(user, password).await?;
        Ok(client)
    }

    /// A client that sends `user`'s credentials with every request.
    pub async fn basic(target: &Arc<Target>, user: &str, password: &str) -> Result<Client> {
        let mut client = Client::anonymous(target).await?;
        client.auth = Auth::Basic(basic_header(user, password)?);
        Ok(client)
    }

    pub async fn get(&mut self, path: &str) -> Result<Response> {
        self.send(Method::GET, path, None).await
    }

    /// `GET path`, which must answer 2xx.
    pub async fn get_ok(&mut self, path: &str) -> Result<Response> {
        self.get(path).await?.success(&format!("GET {path}"))
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> Result<Response> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&mut self, path: &str) -> Result<Response> {
        self.send(Method::DELETE, path, None).await
    }

    /// `Cookie: kimchi_session=…`, for another client (wrk) to use this session.
    pub fn cookie_header(&self) -> Option<String> {
        match &self.auth {
            Auth::Session { cookie, .. } => Some(format!("Cookie: {SESSION_COOKIE}={cookie}")),
            _ => None,
        }
    }

    /// Ends the session, if any; a failure only leaves it to expire.
    pub async fn logout(mut self) {
        if matches!(self.auth, Auth::Session { .. }) {
            let _ = self.send(Method::POST, "/logout", None).await;
        }
    }

    async fn send(&mut self, method: Method, path: &str, body: Option<&Value>) -> Result<Response> {
        let resp = self.exchange(&method, path, body, true).await?;
        if resp.status != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let (user, password) = match &self.auth {
            Auth::Session { user, password, .. } => (user.clone(), password.clone()),
            _ => return Ok(resp),
        };
        // kimchid restarted and forgot the session.
        self.auth = self.login(&user, &password).await?;
        self.exchange(&method, path, body, true).await
    }

    async fn login(&mut self, user: &str, password: &str) -> Result<Auth> {
        let body = json!({"username": user, "password": password});
        let resp = self
            .exchange(&Method::POST, "/login", Some(&body), false)
            .await?
            .success(&format!("POST /login as {user}"))?;
        let cookie = resp
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_owned())
            .ok_or("POST /login set no session cookie")?;
        let csrf_token = resp.json()?["csrf_token"]
            .as_str()
            .ok_or("POST /login returned no csrf_token")?
            .to_owned();
        Ok(Auth::Session {
            user: user.to_owned(),
            password: password.to_owned(),
            cookie,
            csrf_token,
        })
    }

    /// One request and its whole response; sent again on a new connection when the
    /// old one broke.
    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<Response> {
        let mut broken = 0;
        loop {
            let request = self.request(method, path, body, authenticated)?;
            match self.attempt(request).await {
                Ok(resp) => return Ok(resp),
                Err(e) if broken < MAX_BROKEN => {
                    broken += 1;
                    self.reconnect(&e).await?;
                }
                Err(e) => return Err(format!("{method} {path}: {e}").into()),
            }
        }
    }

    async fn attempt(&mut self, request: Request<Full<Bytes>>) -> Result<Response> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(request).await?;
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await?.to_bytes(),
        })
    }

    async fn reconnect(&mut self, why: &crate::Error) -> Result<()> {
        let deadline = Instant::now() + RECONNECT_FOR;
        loop {
            match self.target.connect().await {
                Ok(sender) => {
                    self.sender = sender;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("    (the gateway does not answer: {e}; retrying)");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                Err(e) => {
                    return Err(format!(
                        "the gateway did not answer for {RECONNECT_FOR:?}: {e} (after: {why})"
                    )
                    .into())
                }
            }
        }
    }

    fn request(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<Request<Full<Bytes>>> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.target.authority)
            .header(ACCEPT, "application/json");
        if authenticated {
            match &self.auth {
                Auth::Anonymous => {}
                Auth::Session {
                    cookie, csrf_token, ..
                } => {
                    request = request.header(COOKIE, format!("{SESSION_COOKIE}={cookie}"));
                    if method != Method::GET {
                        request = request.header("x-csrf-token", csrf_token);
                    }
                }
                Auth::Basic(credentials) => request = request.header(AUTHORIZATION, credentials),
            }
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        Ok(request.body(Full::new(body))?)
    }
}

/// The value of an `Authorization: Basic …` header.
pub fn basic_header(user: &str, password: &str) -> Result<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Ok(HeaderValue::from_str(&format!("Basic {encoded}"))?)
}
