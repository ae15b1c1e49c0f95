//! A minimal websocket client for the console tests: the HTTP/1.1 upgrade handshake
//! and reading of the server's frames, over TLS (tokio-rustls, ALPN `http/1.1` only)
//! to the gateway, whose self-signed certificate is accepted as it is.
//!
//! The handshake's answer is returned whatever its status, so that refusals (403,
//! 404, 426, …) can be asserted as well as the 101.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The key of RFC 6455's example handshake, and the accept value it must produce.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const EXPECTED_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// How long any single read may take before it is an error.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;

/// The server's answer to the handshake and, after a 101, the connection.
pub struct Upgrade {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body of a refusal (as much as `Content-Length` says); empty after a 101.
    pub body: Vec<u8>,
    stream: TlsStream<TcpStream>,
    /// Bytes read past the end of the header block (or of the last frame).
    buffered: Vec<u8>,
}

/// One websocket frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Opens `wss://<gateway><path>`, sending the usual handshake headers plus
/// `headers` (cookies, `Origin`, `Sec-WebSocket-Protocol`, …).
pub async fn connect(path: &str, headers: &[(&str, &str)]) -> io::Result<Upgrade> {
    let base = crate::base_url();
    let authority = base
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("the gateway URL {base} is not https://"))
        .trim_end_matches('/')
        .to_owned();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let tcp = TcpStream::connect(&authority).await?;
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stream = TlsConnector::from(Arc::new(crate::tls::client_config()))
        .connect(server_name, tcp)
        .await?;

    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut buffered = Vec::new();
    let head_end = loop {
        if let Some(i) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        read_more(&mut stream, &mut buffered).await?;
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
    buffered.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_data(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut upgrade = Upgrade {
        status,
        headers,
        body: Vec::new(),
        stream,
        buffered,
    };
    if status != 101 {
        let length: usize = upgrade
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while upgrade.buffered.len() < length {
            read_more(&mut upgrade.stream, &mut upgrade.buffered).await?;
        }
        upgrade.body = upgrade.buffered.drain(..length).collect();
    }
    Ok(upgrade)
}

impl Upgrade {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body of a refusal as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The next frame the server sends (server frames are never masked).
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        self.fill(2).await?;
        let (b0, b1) = (self.buffered[0], self.buffered[1]);
        if b1 & 0x80 != 0 {
            return Err(bad_data("the server sent a masked frame".into()));
        }
        let (mut header_len, mut len) = (2usize, u64::from(b1 & 0x7f));
        if len == 126 {
            self.fill(4).await?;
            len = u64::from(u16::from_be_bytes([self.buffered[2], self.buffered[3]]));
            header_len = 4;
        } else if len == 127 {
            self.fill(10).await?;
            let bytes: [u8; 8] = self.buffered[2..10].try_into().expect("8 bytes");
            len = u64::from_be_bytes(bytes);
            header_len = 10;
        }
        let len = usize::try_from(len).map_err(|_| bad_data("frame too long".into()))?;
        self.fill(header_len + len).await?;
        let frame: Vec<u8> = self.buffered.drain(..header_len + len).collect();
        Ok(Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload: frame[header_len..].to_vec(),
        })
    }

    /// The payloads of binary frames (and their continuations) concatenated until
    /// at least `n` bytes came; an error for any other kind of frame.
    pub async fn read_binary(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        while data.len() < n {
            let frame = self.read_frame().await?;
            match frame.opcode {
                OPCODE_BINARY | 0x0 => data.extend_from_slice(&frame.payload),
                other => {
                    return Err(bad_data(format!(
                        "expected binary data, got a frame with opcode {other:#x} \
                         after {data:?}: {frame:?}"
                    )))
                }
            }
        }
        Ok(data)
    }

    /// Sends a binary frame (masked, as a client must).
    pub async fn send_binary(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(OPCODE_BINARY, payload).await
    }

    /// Sends a close frame; the server's answer is not awaited.
    pub async fn close(&mut self) -> io::Result<()> {
        self.send(OPCODE_CLOSE, &[]).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = [0x5a, 0xc3, 0x17, 0x8e];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        self.stream.write_all(&frame).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self, n: usize) -> io::Result<()> {
        while self.buffered.len() < n {
            read_more(&mut self.stream, &mut self.buffered).await?;
        }
        Ok(())
    }
}

async fn read_more(stream: &mut TlsStream<TcpStream>, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no data from the gateway"))??;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the gateway closed the connection after {:?}",
                String::from_utf8_lossy(buf)
            ),
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn bad_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
