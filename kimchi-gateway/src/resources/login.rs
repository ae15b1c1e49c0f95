//! `POST /login` and `POST /logout`: web sessions, opened and closed by kimchid.

use std::net::IpAddr;

use hyper::header::SET_COOKIE;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth;
use crate::body;
use crate::error::Error;
use crate::kimchid::Kimchid;
use crate::reply::Reply;
use crate::throttle::Throttle;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// Kimchi's own UI sends `userid`.
    #[serde(alias = "userid")]
    username: String,
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LoginReply {
    user: String,
    groups: Vec<String>,
    csrf_token: String,
}

pub async fn login(
    kimchid: &Kimchid,
    throttle: &Throttle,
    peer: IpAddr,
    request_id: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let request: LoginRequest = body::json(body)?;
    if request.username.contains('\0') || request.password.contains('\0') {
        return Err(Error::InvalidBody(
            "user name and password cannot contain NUL characters".into(),
        ));
    }
    let (token, info) = throttle
        .login(
            kimchid,
            peer,
            &request.username,
            &request.password,
            request_id,
        )
        .await?;
    tracing::info!(user = %info.user, "session opened");
    let cookie = auth::session_cookie(&token)?;
    Ok(Reply::ok(&LoginReply {
        user: info.user,
        groups: info.groups,
        csrf_token: auth::csrf_token(&token),
    })
    .with_header(SET_COOKIE, cookie))
}

/// Its body, like any action's, may be any JSON object (Kimchi's tests send `{}`).
pub async fn logout(
    kimchid: &Kimchid,
    request_id: &str,
    token: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    body::action_without_parameters(body)?;
    kimchid.logout(token, request_id).await?;
    Ok(Reply::no_content().with_header(SET_COOKIE, auth::cleared_cookie()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_or_kimchi_userid_is_accepted() {
        for body in [
            r#"{"username": "alice", "password": "pw"}"#,
            r#"{"userid": "alice", "password": "pw"}"#,
        ] {
            let r: LoginRequest = body::json(body.as_bytes()).unwrap();
            assert_eq!((r.username.as_str(), r.password.as_str()), ("alice", "pw"));
        }
    }

    #[test]
    fn incomplete_or_unknown_fields_are_400() {
        for body in [
            r#"{"username": "alice"}"#,
            r#"{"password": "pw"}"#,
            r#"{"username": "a", "password": "pw", "remember": true}"#,
            r#"["alice", "pw"]"#,
        ] {
            let err = body::json::<LoginRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body}");
        }
    }
}
