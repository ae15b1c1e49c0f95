//! One request, start to end: route, method, negotiation, body, credentials, the
//! resource, and the error document when any step says no.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue, ALLOW, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response};

use crate::auth::{self, Credentials};
use crate::body;
use crate::error::{self, Error};
use crate::kimchid::{Call, Kimchid};
use crate::negotiate;
use crate::openapi;
use crate::reply::Reply;
use crate::resources::screenshots::{Owner, Screenshots};
use crate::resources::tasks::Respond;
use crate::resources::vms::{Consoles, View};
use crate::resources::{
    config, console, interfaces, login, networks, screenshots, storage_pools, storage_volumes,
    tasks, templates, vm_ifaces, vm_storages, vms,
};
use crate::router::{Protected, Public, Route};
use crate::throttle::Throttle;

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

pub struct App {
    kimchid: Kimchid,
    max_body_bytes: u64,
    consoles: Consoles,
    screenshots: Screenshots,
    throttle: Throttle,
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub local_port: u16,
    pub peer: SocketAddr,
}

/// What a protected resource gets from the request besides its route.
struct Input<'a> {
    method: &'a Method,
    body: &'a [u8],
    respond: Respond,
    local_port: u16,
}

/// What the error reply needs to know about the request after its body is consumed.
struct ErrorContext {
    /// Whether a 401 should carry a Basic challenge.
    challenge: bool,
    had_session_cookie: bool,
}

impl ErrorContext {
    fn of(headers: &HeaderMap) -> ErrorContext {
        ErrorContext {
            challenge: auth::wants_challenge(headers),
            had_session_cookie: auth::session_token(headers).is_some(),
        }
    }
}

impl App {
    pub fn new(max_body_bytes: u64) -> App {
        App {
            kimchid: Kimchid::new(),
            max_body_bytes,
            consoles: Consoles::default(),
            screenshots: Screenshots::default(),
            throttle: Throttle::default(),
        }
    }

    pub async fn handle(&self, mut req: Request<Incoming>, conn: Conn) -> Response<Full<Bytes>> {
        let started = Instant::now();
        // Random so that it can go to logs and to kimchid without revealing anything.
        let request_id = hex::encode(rand::random::<[u8; 8]>());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let context = ErrorContext::of(req.headers());

        let (route, result) = match Route::parse(&path) {
            // The websocket handshake needs the request itself, not its parts.
            Ok(route @ Route::Protected(Protected::VmConsole(_))) => {
                let result = self.console(&route, &mut req, &request_id, conn).await;
                if result.is_err() {
                    body::discard(req.into_body()).await;
                }
                (Some(route), result)
            }
            Ok(route) => {
                let (parts, body) = req.into_parts();
                let mut body = Some(body);
                let result = self
                    .respond(&route, &parts, &mut body, &request_id, conn)
                    .await;
                // Answered before the body was read (an early refusal): read it first.
                if let Some(unread) = body {
                    body::discard(unread).await;
                }
                (Some(route), result)
            }
            Err(e) => {
                // Refused before the body was read: read it first.
                body::discard(req.into_body()).await;
                (None, Err(e))
            }
        };
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => error_reply(&e, route.as_ref(), &context, &request_id),
        };
        let status = reply.status();
        tracing::info!(
            request_id,
            peer = %conn.peer,
            %method,
            path,
            status = status.as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
        let request_id = HeaderValue::from_str(&request_id).expect("hex is a valid header value");
        reply
            .with_header(REQUEST_ID_HEADER, request_id)
            .into_response(method == Method::HEAD)
    }

    /// The reply to a request whose body is taken from `body` only once the request
    /// has passed every check that needs no body.
    async fn respond(
        &self,
        route: &Route,
        parts: &Parts,
        body: &mut Option<Incoming>,
        request_id: &str,
        conn: Conn,
    ) -> Result<Reply, Error> {
        let (method, headers) = (&parts.method, &parts.headers);
        route.check_method(method)?;
        negotiate::check_accept(headers)?;
        auth::refuse_cross_site(method, headers)?;
        let has_body = body.as_ref().is_some_and(|b| !b.is_end_stream());
        // A body-less POST is checked too, so that a cross-site form cannot pass as JSON.
        if has_body || !auth::is_safe(method) {
            negotiate::check_content_type(headers)?;
        }
        let body = match body.take() {
            Some(unread) => body::read(unread, self.max_body_bytes).await?,
            None => Bytes::new(),
        };

        match route {
            Route::Public(Public::Config) => Ok(config::get(conn.local_port)),
            Route::Public(Public::Capabilities) => {
                config::capabilities(&self.kimchid, request_id).await
            }
            Route::Public(Public::Login) => {
                let peer = conn.peer.ip();
                login::login(&self.kimchid, &self.throttle, peer, request_id, &body).await
            }
            Route::Public(Public::OpenApi) => Ok(openapi::get()),
            Route::Protected(protected) => {
                let input = Input {
                    method,
                    body: &body,
                    respond: Respond::from_headers(headers),
                    local_port: conn.local_port,
                };
                match auth::credentials(headers)?.ok_or(Error::NoCredentials)? {
                    Credentials::Session(token) => {
                        auth::check_csrf(method, headers, &token)?;
                        let owner = Owner::session(&token);
                        self.protected(protected, &input, request_id, &token, &owner)
                            .await
                    }
                    Credentials::Basic { user, password } => {
                        let peer = conn.peer.ip();
                        self.with_basic(protected, &input, request_id, &user, &password, peer)
                            .await
                    }
                }
            }
        }
    }

    /// `GET /vms/:name/console`: checks as for any protected GET, then the
    /// websocket handshake.
    async fn console(
        &self,
        route: &Route,
        req: &mut Request<Incoming>,
        request_id: &str,
        conn: Conn,
    ) -> Result<Reply, Error> {
        let Route::Protected(Protected::VmConsole(name)) = route else {
            unreachable!("only console routes come here");
        };
        route.check_method(req.method())?;
        if !hyper_tungstenite::is_upgrade_request(req) {
            return Err(Error::UpgradeRequired);
        }
        console::check_origin(req.headers())?;
        let k = &self.kimchid;
        match auth::credentials(req.headers())?.ok_or(Error::NoCredentials)? {
            Credentials::Session(token) => {
                let call = Call {
                    request_id,
                    session: Some(&token),
                };
                console::open(k, &call, name, req).await
            }
            Credentials::Basic { user, password } => {
                let peer = conn.peer.ip();
                let (token, _) = self
                    .throttle
                    .login(k, peer, &user, &password, request_id)
                    .await?;
                let call = Call {
                    request_id,
                    session: Some(&token),
                };
                let result = console::open(k, &call, name, req).await;
                if let Err(e) = k.logout(&token, request_id).await {
                    tracing::warn!(request_id, "could not close the per-request session: {e}");
                }
                result
            }
        }
    }

    /// Basic credentials open a session for this request only (throttled by `peer`).
    async fn with_basic(
        &self,
        route: &Protected,
        input: &Input<'_>,
        request_id: &str,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<Reply, Error> {
        let (token, info) = self
            .throttle
            .login(&self.kimchid, peer, user, password, request_id)
            .await?;
        tracing::debug!(request_id, user = %info.user, "Basic credentials accepted");
        let owner = Owner::user(&info.user);
        let result = self
            .protected(route, input, request_id, &token, &owner)
            .await;
        if let Err(e) = self.kimchid.logout(&token, request_id).await {
            tracing::warn!(request_id, "could not close the per-request session: {e}");
        }
        result
    }

    /// The resource for `route` and the method, which the router has already checked;
    /// `owner` is who the request's screenshot images belong to.
    async fn protected(
        &self,
        route: &Protected,
        input: &Input<'_>,
        request_id: &str,
        session: &str,
        owner: &Owner,
    ) -> Result<Reply, Error> {
        let k = &self.kimchid;
        let call = &Call {
            request_id,
            session: Some(session),
        };
        let (body, respond) = (input.body, input.respond);
        let post = input.method == Method::POST;
        let delete = input.method == Method::DELETE;
        let put = input.method == Method::PUT;
        let view = View {
            local_port: input.local_port,
            consoles: &self.consoles,
        };
        match route {
            Protected::Logout => login::logout(k, request_id, session, body).await,
            Protected::Vms if post => vms::create(k, call, respond, view, body).await,
            Protected::Vms => vms::list(k, call, view).await,
            Protected::Vm(name) if put => vms::update(k, call, view, name, body).await,
            Protected::Vm(name) if delete => vms::delete(k, call, name, body).await,
            Protected::Vm(name) => vms::get(k, call, view, name).await,
            Protected::VmAction(name, action) => {
                vms::action(k, call, respond, view, name, *action, body).await
            }
            Protected::VmIfaces(vm) if post => vm_ifaces::create(k, call, vm, body).await,
            Protected::VmIfaces(vm) => vm_ifaces::list(k, call, vm).await,
            Protected::VmIface(vm, mac) if put => vm_ifaces::update(k, call, vm, mac, body).await,
            Protected::VmIface(vm, mac) if delete => {
                vm_ifaces::delete(k, call, vm, mac, body).await
            }
            Protected::VmIface(vm, mac) => vm_ifaces::get(k, call, vm, mac).await,
            Protected::VmStorages(vm) if post => vm_storages::create(k, call, vm, body).await,
            Protected::VmStorages(vm) => vm_storages::list(k, call, vm).await,
            Protected::VmStorage(vm, dev) if put => {
                vm_storages::update(k, call, vm, dev, body).await
            }
            Protected::VmStorage(vm, dev) if delete => {
                vm_storages::delete(k, call, vm, dev, body).await
            }
            Protected::VmStorage(vm, dev) => vm_storages::get(k, call, vm, dev).await,
            Protected::VmScreenshot(name) => {
                screenshots::redirect(k, call, &self.screenshots, owner, name).await
            }
            Protected::ScreenshotImage(id) => {
                screenshots::image(k, call, &self.screenshots, owner, id).await
            }
            // Answered by `console` before the request is taken apart.
            Protected::VmConsole(_) => Err(Error::UpgradeRequired),
            Protected::Templates if post => templates::create(k, call, body).await,
            Protected::Templates => templates::list(k, call).await,
            Protected::Template(name) if put => templates::update(k, call, name, body).await,
            Protected::Template(name) if delete => templates::delete(k, call, name, body).await,
            Protected::Template(name) => templates::get(k, call, name).await,
            Protected::StoragePools if post => storage_pools::create(k, call, body).await,
            Protected::StoragePools => storage_pools::list(k, call).await,
            Protected::StoragePool(name) if delete => {
                storage_pools::delete(k, call, name, body).await
            }
            Protected::StoragePool(name) => storage_pools::get(k, call, name).await,
            Protected::StoragePoolAction(name, action) => {
                storage_pools::action(k, call, name, *action, body).await
            }
            Protected::StorageVolumes(pool) if post => {
                storage_volumes::create(k, call, respond, pool, body).await
            }
            Protected::StorageVolumes(pool) => storage_volumes::list(k, call, pool).await,
            Protected::StorageVolume(pool, name) if delete => {
                storage_volumes::delete(k, call, pool, name, body).await
            }
            Protected::StorageVolume(pool, name) => storage_volumes::get(k, call, pool, name).await,
            Protected::StorageVolumeAction(pool, name, action) => {
                storage_volumes::action(k, call, respond, (pool, name), *action, body).await
            }
            Protected::Tasks => tasks::list(k, call).await,
            Protected::Task(id) => tasks::get(k, call, *id).await,
            Protected::Networks if post => networks::create(k, call, body).await,
            Protected::Networks => networks::list(k, call).await,
            Protected::Network(name) if put => networks::update(k, call, name, body).await,
            Protected::Network(name) if delete => networks::delete(k, call, name, body).await,
            Protected::Network(name) => networks::get(k, call, name).await,
            Protected::NetworkAction(name, action) => {
                networks::action(k, call, name, *action, body).await
            }
            Protected::Interfaces => interfaces::list(k, call).await,
            Protected::Interface(name) => interfaces::get(k, call, name).await,
        }
    }
}

fn error_reply(
    err: &Error,
    route: Option<&Route>,
    context: &ErrorContext,
    request_id: &str,
) -> Reply {
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(request_id, error = %err.name(), detail = ?err, "{err}");
    } else {
        tracing::debug!(request_id, error = %err.name(), "{err}");
    }
    let mut reply = Reply::error(err);
    if let Error::MethodNotAllowed { allow, .. } = err {
        // Empty when nothing is allowed (actions on kimchi_isos), as RFC 9110 §10.2.1 has it.
        reply = reply.with_header(ALLOW, HeaderValue::from_static(allow));
    }
    if let Error::Throttled { retry_after } = err {
        let secs = error::retry_after_secs(*retry_after);
        reply = reply.with_header(RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == hyper::StatusCode::UNAUTHORIZED {
        // A failed login form is not a request for Basic credentials.
        if context.challenge && route != Some(&Route::Public(Public::Login)) {
            reply = reply.with_header(WWW_AUTHENTICATE, auth::CHALLENGE);
        }
        // The browser's session is dead: let it forget the cookie.
        if context.had_session_cookie {
            reply = reply.with_header(SET_COOKIE, auth::cleared_cookie());
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> ErrorContext {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        ErrorContext::of(&headers)
    }

    fn header(reply: &Response<Full<Bytes>>, name: HeaderName) -> Option<&str> {
        reply.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn throttled_login_is_429_with_retry_after_and_a_json_body() {
        for path in ["/login", "/vms"] {
            let route = Route::parse(path).unwrap();
            let err = Error::Throttled {
                retry_after: std::time::Duration::from_millis(2500),
            };
            let r = error_reply(&err, Some(&route), &context(&[]), "r").into_response(false);
            assert_eq!(r.status(), 429, "{path}");
            assert_eq!(header(&r, RETRY_AFTER), Some("3"), "{path}");
            assert_eq!(header(&r, WWW_AUTHENTICATE), None, "{path}");
            assert!(header(&r, hyper::header::CONTENT_TYPE)
                .is_some_and(|t| t.starts_with("application/json")));
        }
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let route = Route::parse("/vms").unwrap();
        let err = route.check_method(&Method::DELETE).unwrap_err();
        let r = error_reply(&err, Some(&route), &context(&[]), "r").into_response(false);
        assert_eq!(r.status(), 405);
        assert_eq!(header(&r, ALLOW), Some("GET, HEAD, POST"));
    }

    #[test]
    fn writes_to_kimchi_isos_are_405_with_what_is_allowed_there() {
        let route = Route::parse("/storagepools/kimchi_isos").unwrap();
        let err = route.check_method(&Method::DELETE).unwrap_err();
        let r = error_reply(&err, Some(&route), &context(&[]), "r").into_response(false);
        assert_eq!(r.status(), 405);
        assert_eq!(header(&r, ALLOW), Some("GET, HEAD"));

        let route = Route::parse("/storagepools/kimchi_isos/activate").unwrap();
        let err = route.check_method(&Method::POST).unwrap_err();
        let r = error_reply(&err, Some(&route), &context(&[]), "r").into_response(false);
        assert_eq!(r.status(), 405);
        assert_eq!(header(&r, ALLOW), Some(""));
    }

    #[test]
    fn writes_to_host_interfaces_are_405_with_allow() {
        for path in ["/interfaces", "/interfaces/eth0"] {
            let route = Route::parse(path).unwrap();
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let err = route.check_method(&method).unwrap_err();
                let r = error_reply(&err, Some(&route), &context(&[]), "r").into_response(false);
                assert_eq!(r.status(), 405, "{method} {path}");
                assert_eq!(header(&r, ALLOW), Some("GET, HEAD"), "{method} {path}");
            }
        }
    }

    #[test]
    fn failed_authentication_gets_basic_challenge() {
        let route = Route::parse("/vms").unwrap();
        for err in [
            Error::NoCredentials,
            Error::InvalidCredentials("Authorization header: not ASCII".into()),
            Error::from(kimchi_dbus::Error::AuthenticationFailed("no".into())),
        ] {
            let r = error_reply(&err, Some(&route), &context(&[]), "r").into_response(false);
            assert_eq!(r.status(), 401);
            assert_eq!(header(&r, WWW_AUTHENTICATE), Some("Basic realm=\"kimchi\""));
            assert_eq!(header(&r, SET_COOKIE), None);
        }
    }

    #[test]
    fn failed_authentication_of_a_page_script_gets_no_challenge() {
        let route = Route::parse("/vms").unwrap();
        let xhr = context(&[("x-requested-with", "XMLHttpRequest")]);
        for err in [
            Error::NoCredentials,
            Error::InvalidCredentials("Authorization header: not ASCII".into()),
            Error::from(kimchi_dbus::Error::AuthenticationFailed("no".into())),
            Error::from(kimchi_dbus::Error::SessionInvalid("expired".into())),
        ] {
            let r = error_reply(&err, Some(&route), &xhr, "r").into_response(false);
            assert_eq!(r.status(), 401, "{err:?}");
            assert_eq!(header(&r, WWW_AUTHENTICATE), None, "{err:?}");
        }
    }

    #[test]
    fn failed_login_has_no_challenge_and_no_session_cookie() {
        let route = Route::parse("/login").unwrap();
        let err = Error::from(kimchi_dbus::Error::AuthenticationFailed("no".into()));
        let r = error_reply(&err, Some(&route), &context(&[]), "r").into_response(false);
        assert_eq!(r.status(), 401);
        assert_eq!(header(&r, WWW_AUTHENTICATE), None);
        assert_eq!(header(&r, SET_COOKIE), None);
    }

    #[test]
    fn dead_session_cookie_is_cleared() {
        let route = Route::parse("/vms").unwrap();
        let err = Error::from(kimchi_dbus::Error::SessionInvalid("expired".into()));
        let r = error_reply(
            &err,
            Some(&route),
            &context(&[("cookie", "kimchi_session=tok")]),
            "r",
        )
        .into_response(false);
        assert!(header(&r, SET_COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
    }
}
