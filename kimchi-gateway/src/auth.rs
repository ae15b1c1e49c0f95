//! Who is calling: a session cookie (plus, on state-changing requests, proof that the
//! request comes from this site's own pages) or HTTP Basic credentials. Sessions
//! themselves live in kimchid; the gateway never stores a password (`throttle.rs`
//! holds a salted digest of one only while kimchid checks it).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::{HeaderValue, AUTHORIZATION, COOKIE};
use hyper::{HeaderMap, Method};
use sha2::{Digest, Sha256};

use crate::error::Error;

pub const SESSION_COOKIE: &str = "kimchi_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub enum Credentials {
    /// The token of a session opened by `POST /login`.
    Session(String),
    /// Checked by kimchid for this request only (login, call, logout).
    Basic { user: String, password: String },
}

/// The credentials a request carries; an `Authorization` header wins over a cookie
/// because it was given for this very request. An empty one carries nothing (Kimchi's
/// own tests send one next to their session cookie).
pub fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, Error> {
    let authorization = headers
        .get(AUTHORIZATION)
        .filter(|v| !v.as_bytes().trim_ascii().is_empty());
    if let Some(value) = authorization {
        let (user, password) = parse_basic(value)?;
        return Ok(Some(Credentials::Basic { user, password }));
    }
    Ok(session_token(headers).map(Credentials::Session))
}

/// The value of the session cookie, if the request has one.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

fn parse_basic(value: &HeaderValue) -> Result<(String, String), Error> {
    let invalid = |why: &str| Error::InvalidCredentials(format!("Authorization header: {why}"));
    let value = value.to_str().map_err(|_| invalid("not ASCII"))?;
    let (scheme, encoded) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid("only the Basic scheme is supported"));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid("Basic credentials are not valid base64"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| invalid("Basic credentials are not valid UTF-8"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| invalid("Basic credentials lack the ':' between user and password"))?;
    if user.is_empty() {
        return Err(invalid("Basic credentials have an empty user name"));
    }
    if decoded.contains('\0') {
        return Err(invalid("Basic credentials contain a NUL character"));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// The CSRF token of a session. Derived from the session token, so the gateway stores
/// nothing, while a cross-site page (which cannot read the HttpOnly cookie) cannot
/// compute it.
pub fn csrf_token(session: &str) -> String {
    hex::encode(Sha256::digest(format!("kimchi-csrf:{session}")))
}

/// GET and HEAD change nothing; every other method may.
pub fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Cookie-authenticated requests that may change state must come from this site's
/// own pages: they echo the CSRF token, or they are scripts that say so (see
/// [`from_script`]; Kimchi's UI never sends the token).
pub fn check_csrf(method: &Method, headers: &HeaderMap, session: &str) -> Result<(), Error> {
    if is_safe(method) || from_script(headers) {
        return Ok(());
    }
    let given = headers
        .get(CSRF_HEADER)
        .ok_or(Error::CsrfRejected(
            "this request needs the X-CSRF-Token header returned by POST /login, \
             or X-Requested-With: XMLHttpRequest",
        ))?
        .as_bytes();
    if constant_time_eq(given, csrf_token(session).as_bytes()) {
        Ok(())
    } else {
        Err(Error::CsrfRejected(
            "the X-CSRF-Token header does not match this session",
        ))
    }
}

/// Browsers attach cached Basic credentials to cross-site requests too; a
/// state-changing request a browser marks as cross-site is refused whatever it carries.
pub fn refuse_cross_site(method: &Method, headers: &HeaderMap) -> Result<(), Error> {
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site && !is_safe(method) {
        Err(Error::CsrfRejected(
            "state-changing requests from other sites are refused",
        ))
    } else {
        Ok(())
    }
}

/// A script in a page (jQuery sends `X-Requested-With: XMLHttpRequest` on every call).
/// A page of another site cannot send this header: a form has no headers, and a
/// script needs a CORS preflight for it, which this gateway never answers with a
/// grant. So with the SameSite=Strict cookie it shows the request is same-origin.
pub fn from_script(headers: &HeaderMap) -> bool {
    headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
}

/// Scripts in a page must not get a Basic challenge: the browser would pop up a
/// password dialog over the page's own login.
pub fn wants_challenge(headers: &HeaderMap) -> bool {
    !from_script(headers)
}

pub const CHALLENGE: HeaderValue = HeaderValue::from_static("Basic realm=\"kimchi\"");

/// `Set-Cookie` for a new session.
pub fn session_cookie(token: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/"
    ))
    .map_err(|_| Error::BadReply("kimchid returned a session token unfit for a cookie".into()))
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "kimchi_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderName;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn basic(value: &str) -> Result<(String, String), Error> {
        parse_basic(&HeaderValue::from_str(value).unwrap())
    }

    #[test]
    fn csrf_token_is_hex_sha256_of_prefixed_session() {
        // printf 'kimchi-csrf:abc' | sha256sum
        assert_eq!(
            csrf_token("abc"),
            "447fad5f7183563510a279ce8e8c7fbf2e421c8eabcc72198c401c1dab4dfd55"
        );
        assert_eq!(csrf_token("abc").len(), 64);
        assert_ne!(csrf_token("abc"), csrf_token("abd"));
    }

    #[test]
    fn basic_header_is_parsed() {
        // "alice:pa:ss" — the password may contain ':'.
        assert_eq!(
            basic("Basic YWxpY2U6cGE6c3M=").unwrap(),
            ("alice".into(), "pa:ss".into())
        );
        assert_eq!(
            basic("basic   YWxpY2U6").unwrap(),
            ("alice".into(), String::new())
        );
    }

    #[test]
    fn malformed_basic_header_is_401() {
        for value in [
            "Bearer abc",
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=", // "alice": no ':'
            "Basic OnB3",     // ":pw": empty user
            "Basic /w==",     // not UTF-8
            "Basic YTpiAGM=", // "a:b\0c"
        ] {
            let err = basic(value).unwrap_err();
            assert_eq!(err.status().as_u16(), 401, "{value}");
        }
    }

    #[test]
    fn authorization_wins_over_cookie() {
        let h = headers(&[
            ("cookie", "kimchi_session=tok"),
            ("authorization", "Basic YWxpY2U6cHc="),
        ]);
        assert!(matches!(
            credentials(&h).unwrap(),
            Some(Credentials::Basic { user, password }) if user == "alice" && password == "pw"
        ));
    }

    #[test]
    fn empty_authorization_leaves_the_session_cookie_in_charge() {
        for empty in ["", " "] {
            let h = headers(&[("authorization", empty), ("cookie", "kimchi_session=tok")]);
            assert!(
                matches!(credentials(&h).unwrap(), Some(Credentials::Session(t)) if t == "tok"),
                "{empty:?}"
            );
            let h = headers(&[("authorization", empty)]);
            assert!(credentials(&h).unwrap().is_none(), "{empty:?}");
        }
    }

    #[test]
    fn non_empty_authorization_still_wins_over_cookie_even_when_malformed() {
        let h = headers(&[
            ("authorization", "Bearer x"),
            ("cookie", "kimchi_session=tok"),
        ]);
        let err = credentials(&h)
            .err()
            .expect("a malformed header is refused");
        assert_eq!(err.status().as_u16(), 401);
        assert_eq!(
            err.to_string(),
            "Authorization header: only the Basic scheme is supported"
        );
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; kimchi_session=tok; b=2")]);
        assert_eq!(session_token(&h).as_deref(), Some("tok"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "kimchi_session=t2")]);
        assert_eq!(session_token(&h).as_deref(), Some("t2"));
        let h = headers(&[("cookie", "kimchi_session=")]);
        assert_eq!(session_token(&h), None);
        assert!(credentials(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn safe_methods_need_no_csrf_proof() {
        for method in [Method::GET, Method::HEAD] {
            assert!(check_csrf(&method, &HeaderMap::new(), "tok").is_ok());
        }
    }

    #[test]
    fn write_with_the_sessions_csrf_token_is_accepted() {
        let good = headers(&[("x-csrf-token", &csrf_token("tok"))]);
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            assert!(check_csrf(&method, &good, "tok").is_ok(), "{method}");
        }
    }

    #[test]
    fn write_from_a_page_script_is_accepted_without_a_token() {
        // jQuery's exact value, and any case of it.
        for value in ["XMLHttpRequest", "xmlhttprequest", "XMLHTTPREQUEST"] {
            let xhr = headers(&[("x-requested-with", value)]);
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                assert!(check_csrf(&method, &xhr, "tok").is_ok(), "{method} {value}");
            }
        }
    }

    #[test]
    fn write_with_neither_token_nor_script_header_is_403() {
        for h in [
            HeaderMap::new(),
            headers(&[("x-requested-with", "fetch")]),
            headers(&[("x-requested-with", "")]),
        ] {
            let err = check_csrf(&Method::POST, &h, "tok").unwrap_err();
            assert_eq!(err.status().as_u16(), 403);
            assert_eq!(
                err.to_string(),
                "this request needs the X-CSRF-Token header returned by POST /login, \
                 or X-Requested-With: XMLHttpRequest"
            );
        }
    }

    #[test]
    fn write_with_a_wrong_or_foreign_token_is_403() {
        let refused = [
            (Method::DELETE, headers(&[("x-csrf-token", "nope")]), "tok"),
            // A token of another session does not do.
            (
                Method::PUT,
                headers(&[("x-csrf-token", &csrf_token("tok"))]),
                "other",
            ),
        ];
        for (method, h, session) in refused {
            let err = check_csrf(&method, &h, session).unwrap_err();
            assert_eq!(err.status().as_u16(), 403, "{method}");
            assert_eq!(
                err.to_string(),
                "the X-CSRF-Token header does not match this session"
            );
        }
    }

    #[test]
    fn cross_site_state_change_is_refused() {
        let cross = headers(&[("sec-fetch-site", "cross-site")]);
        let same = headers(&[("sec-fetch-site", "same-origin")]);
        assert!(refuse_cross_site(&Method::POST, &cross).is_err());
        assert!(refuse_cross_site(&Method::GET, &cross).is_ok());
        assert!(refuse_cross_site(&Method::POST, &same).is_ok());
        assert!(refuse_cross_site(&Method::POST, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn xhr_requests_get_no_challenge() {
        assert!(wants_challenge(&HeaderMap::new()));
        assert!(wants_challenge(&headers(&[("x-requested-with", "fetch")])));
        for value in ["XMLHttpRequest", "xmlhttprequest"] {
            assert!(!wants_challenge(&headers(&[("x-requested-with", value)])));
        }
    }

    #[test]
    fn cookies_are_secure_and_clearable() {
        let set = session_cookie("abc").unwrap();
        assert_eq!(
            set,
            "kimchi_session=abc; HttpOnly; Secure; SameSite=Strict; Path=/"
        );
        assert!(session_cookie("a\nb").is_err());
        assert!(cleared_cookie().to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
