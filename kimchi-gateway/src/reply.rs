//! Responses: JSON bodies (or none, for 204; or a screenshot's PNG) with the headers
//! every answer carries.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    LOCATION, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use crate::error::Error;

#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    body: Option<Bytes>,
    content_type: &'static str,
    headers: HeaderMap,
}

const JSON: &str = "application/json";

/// Headers on every answer. The gateway serves only JSON and PNG over TLS: a browser
/// may load nothing because of them, frame them, or send their URLs elsewhere, and
/// should never again reach this host without TLS.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    (X_FRAME_OPTIONS, "DENY"),
    (
        CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (REFERRER_POLICY, "no-referrer"),
];

impl Reply {
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
        let mut body = serde_json::to_vec(value).expect("plain data always serializes");
        body.push(b'\n');
        Reply {
            status,
            body: Some(body.into()),
            content_type: JSON,
            headers: HeaderMap::new(),
        }
    }

    /// 200 with a JSON document serialized ahead of time.
    pub fn json_bytes(body: Bytes) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Some(body),
            content_type: JSON,
            headers: HeaderMap::new(),
        }
    }

    pub fn png(image: Bytes) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Some(image),
            content_type: "image/png",
            headers: HeaderMap::new(),
        }
    }

    pub fn ok<T: Serialize>(value: &T) -> Reply {
        Reply::json(StatusCode::OK, value)
    }

    pub fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: None,
            content_type: JSON,
            headers: HeaderMap::new(),
        }
    }

    /// 101 to a websocket handshake, with the headers the upgrade produced.
    pub fn switching_protocols(headers: HeaderMap) -> Reply {
        Reply {
            status: StatusCode::SWITCHING_PROTOCOLS,
            body: None,
            content_type: JSON,
            headers,
        }
    }

    pub fn error(err: &Error) -> Reply {
        Reply::json(err.status(), &err.body())
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.append(name, value);
        self
    }

    /// `Location: uri`; `uri` comes from the router's builders, which percent-encode
    /// every name, so it is always a valid header value.
    pub fn with_location(self, uri: &str) -> Reply {
        let value = HeaderValue::from_str(uri).expect("an encoded path is a valid header value");
        self.with_header(LOCATION, value)
    }

    /// The HTTP response; for HEAD the body is left out but its length still announced.
    pub fn into_response(self, head: bool) -> Response<Full<Bytes>> {
        let mut headers = self.headers;
        // Only screenshots say otherwise: their URL names one image.
        headers
            .entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        for (name, value) in SECURITY_HEADERS {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let body = match self.body {
            Some(body) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
                headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                if head {
                    Bytes::new()
                } else {
                    body
                }
            }
            None => Bytes::new(),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn body_of(response: Response<Full<Bytes>>) -> Bytes {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes()
    }

    #[test]
    fn json_reply_has_type_and_no_store() {
        let r = Reply::ok(&serde_json::json!({"a": 1})).into_response(false);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(body_of(r), "{\"a\":1}\n");
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        for r in [
            Reply::ok(&serde_json::json!({})).into_response(false),
            Reply::no_content().into_response(false),
            Reply::error(&Error::NotAcceptable).into_response(true),
            Reply::png(Bytes::from_static(b"png")).into_response(false),
        ] {
            assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(r.headers()[STRICT_TRANSPORT_SECURITY], "max-age=31536000");
            assert_eq!(r.headers()[X_FRAME_OPTIONS], "DENY");
            assert_eq!(
                r.headers()[CONTENT_SECURITY_POLICY],
                "default-src 'none'; frame-ancestors 'none'"
            );
            assert_eq!(r.headers()[REFERRER_POLICY], "no-referrer");
        }
    }

    #[test]
    fn head_reply_announces_length_without_body() {
        let r = Reply::ok(&serde_json::json!([])).into_response(true);
        assert_eq!(r.headers()[CONTENT_LENGTH], "3");
        assert!(body_of(r).is_empty());
    }

    #[test]
    fn no_content_has_no_type() {
        let r = Reply::no_content().into_response(false);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.headers().get(CONTENT_TYPE).is_none());
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    }

    #[test]
    fn error_reply_is_the_error_document() {
        let r = Reply::error(&Error::NotAcceptable).into_response(false);
        assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
        let doc: serde_json::Value = serde_json::from_slice(&body_of(r)).unwrap();
        assert_eq!(doc["code"], "406 Not Acceptable");
        assert_eq!(doc["error"], "kimchi.gateway.NotAcceptable");
    }
}
