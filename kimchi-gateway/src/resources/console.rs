//! `/vms/:name/console`: a websocket (noVNC's `binary` subprotocol) carrying the
//! guest's VNC stream. kimchid hands over a socket already connected to the VNC
//! server (`VM.OpenConsole`); this gateway opens no VNC TCP connection.

use std::os::fd::OwnedFd;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use hyper::{HeaderMap, Request};
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::HyperWebsocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;

const SUBPROTOCOL: &str = "binary";
/// VNC frames are small; this is plenty for one read of a screen update.
const READ_BUFFER: usize = 64 * 1024;

/// Browsers send cookies with cross-site websocket handshakes too, and the
/// handshake is a GET that CSRF tokens do not cover: the page must be ours.
pub fn check_origin(headers: &HeaderMap) -> Result<(), Error> {
    let Some(origin) = headers.get(ORIGIN) else {
        // Not a browser.
        return Ok(());
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(Error::CsrfRejected(
            "the console can only be opened from pages of this server",
        )),
    }
}

/// Opens the console through kimchid, then completes the websocket handshake and
/// bridges the two until either side closes.
pub async fn open(
    kimchid: &Kimchid,
    call: &Call<'_>,
    name: &str,
    req: &mut Request<Incoming>,
) -> Result<Reply, Error> {
    let info = kimchid
        .manager()
        .await?
        .get_vm(name, call.options())
        .await?;
    let fd = kimchid.open_console(call, &info).await?;
    let offered = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    let (response, websocket) = hyper_tungstenite::upgrade(req, None)
        .map_err(|e| Error::InvalidBody(format!("bad websocket handshake: {e}")))?;
    let vm = info.name.clone();
    tokio::spawn(async move {
        if let Err(e) = bridge(websocket, fd).await {
            tracing::debug!(%vm, "console closed: {e}");
        }
    });
    let mut reply = Reply::switching_protocols(response.headers().clone());
    if offered {
        reply = reply.with_header(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(reply)
}

async fn bridge(
    websocket: HyperWebsocket,
    fd: OwnedFd,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true)?;
    let (mut from_vm, mut to_vm) = tokio::net::UnixStream::from_std(socket)?.into_split();
    let (mut to_client, mut from_client) = websocket.await?.split();

    let upstream = async {
        while let Some(message) = from_client.next().await {
            match message? {
                Message::Binary(data) => to_vm.write_all(&data).await?,
                Message::Close(_) => break,
                // Pings are answered by the websocket layer; text is not VNC.
                _ => {}
            }
        }
        to_vm.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    let downstream = async {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = from_vm.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            to_client
                .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                .await?;
        }
        to_client.send(Message::Close(None)).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    tokio::select! {
        r = upstream => r,
        r = downstream => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    hyper::header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn only_our_own_pages_may_open_a_console() {
        assert!(check_origin(&headers(&[("host", "h:8001")])).is_ok());
        assert!(check_origin(&headers(&[
            ("host", "h:8001"),
            ("origin", "https://h:8001")
        ]))
        .is_ok());
        assert!(check_origin(&headers(&[
            ("host", "h:8001"),
            ("origin", "https://evil:8001")
        ]))
        .is_err());
        assert!(check_origin(&headers(&[("origin", "https://h:8001")])).is_err());
        assert!(check_origin(&headers(&[("host", "h:8001"), ("origin", "null")])).is_err());
    }
}
