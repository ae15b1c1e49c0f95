//! Reading request bodies within the size limit, and parsing them into typed requests.

use std::pin::{pin, Pin};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::Error;

/// How much of an unwanted body (too big, or refused before it was read) is still read
/// and thrown away before answering. Clients that cannot take an answer before they have
/// sent their whole request (curl 7 over HTTP/2 reports a reset stream instead of the
/// answer) then see the error document; anything bigger or slower is cut off.
const DISCARD_BYTES: u64 = 16 * 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// The whole body, refused with 413 once it is known to exceed `limit` bytes (from
/// `Content-Length` before reading anything, else while reading).
pub async fn read<B>(body: B, limit: u64) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = pin!(body);
    if body.size_hint().lower() > limit {
        drain(body).await;
        return Err(Error::BodyTooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::InvalidBody(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                drain(body).await;
                return Err(Error::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and drops a body nobody needs, as far as [`DISCARD_BYTES`] and
/// [`DISCARD_TIME`] allow, before an early answer goes out.
pub async fn discard<B: Body<Data = Bytes>>(body: B) {
    drain(pin!(body)).await;
}

async fn drain<B: Body<Data = Bytes>>(mut body: Pin<&mut B>) {
    if body.is_end_stream() || body.size_hint().lower() > DISCARD_BYTES {
        return;
    }
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DISCARD_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Parses a JSON object request body into `T`; serde's message says what is wrong
/// and where.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    // serde would also take an array for a struct; the API only ever takes objects.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::InvalidBody(
            "this request needs a JSON object as its body".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::InvalidBody(format!("invalid JSON request body: {e}")))
}

/// The body of a request that takes no parameters: none at all, or `{}`. Anything
/// else is refused, so that a misspelt option is never silently ignored.
pub fn no_parameters(body: &[u8]) -> Result<(), Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParameters {}
    json::<NoParameters>(body).map(drop)
}

/// A string from a request body that can be passed to kimchid: D-Bus strings cannot
/// hold NUL characters, so they are refused here (400) rather than failing on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Text(String);

impl TryFrom<String> for Text {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.contains('\0') {
            Err("strings cannot contain NUL characters (\\u0000)")
        } else {
            Ok(Text(s))
        }
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::Full;
    use hyper::body::Frame;
    use serde::Deserialize;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn body_within_the_limit_is_read() {
        let body = Full::new(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(block_on(read(body, 7)).unwrap(), "{\"a\":1}");
    }

    #[test]
    fn declared_length_over_the_limit_is_413_before_reading() {
        let body = Full::new(Bytes::from(vec![b'x'; 11]));
        let err = block_on(read(body, 10)).unwrap_err();
        assert_eq!(err.status().as_u16(), 413);
    }

    /// Chunks with no size hint, as chunked transfer encoding delivers them.
    struct Chunks(std::vec::IntoIter<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
        }
    }

    #[test]
    fn streamed_body_over_the_limit_is_413() {
        let body = Chunks(vec![Bytes::from(vec![b'x'; 4]); 4].into_iter());
        assert_eq!(body.size_hint().lower(), 0);
        let err = block_on(read(body, 10)).unwrap_err();
        assert!(matches!(err, Error::BodyTooLarge { limit: 10 }), "{err:?}");
    }

    #[test]
    fn streamed_body_exactly_at_the_limit_is_read() {
        let body = Chunks(vec![Bytes::from(vec![b'x'; 5]); 2].into_iter());
        assert_eq!(block_on(read(body, 10)).unwrap().len(), 10);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
    }

    #[test]
    fn json_body_is_parsed() {
        assert_eq!(json::<Sample>(b"{\"name\": \"a\"}").unwrap().name, "a");
    }

    #[test]
    fn malformed_json_is_400_with_serde_message() {
        let err = json::<Sample>(b"{\"name\": ").unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("EOF"), "{err}");
        let err = json::<Sample>(b"{\"name\": \"a\", \"x\": 1}").unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn no_parameters_means_no_body_or_an_empty_object() {
        for body in [&b""[..], b" \n", b"{}", b" { } "] {
            no_parameters(body).unwrap();
        }
        for body in [&b"{\"force\": true}"[..], b"[]", b"null", b"{"] {
            let err = no_parameters(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body:?}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct Named {
        name: Text,
    }

    #[test]
    fn text_refuses_nul() {
        let ok: Named = json(br#"{"name": "caf\u00e9"}"#).unwrap();
        assert_eq!(String::from(ok.name), "café");
        let err = json::<Named>(br#"{"name": "a\u0000b"}"#).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn empty_or_non_object_body_is_400() {
        for body in [&b" \n"[..], b"[\"a\"]", b"\"a\"", b"null"] {
            let err = json::<Sample>(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400);
            assert!(err.to_string().contains("JSON object"), "{err}");
        }
    }
}
