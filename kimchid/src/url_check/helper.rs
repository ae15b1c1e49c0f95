//! `kimchid check-url`: the side of the URL check that has IP and nothing else. It
//! serves one connection: reads one request line (bounded in size and time), checks
//! the URL with `IsoUrl::parse` whatever the peer checked before, asks the server with
//! curl and writes one answer line.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;

use super::{UrlCheckAnswer, UrlCheckRequest};
use crate::excerpt::excerpt;
use crate::iso_url::IsoUrl;

/// How long a server may take to answer the check (curl's own bound).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the peer may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request line longer than this is refused unread.
const MAX_REQUEST_BYTES: u64 = 16 * 1024;

/// Reads the request from `input`, answers on `output`; the answer is returned too.
pub async fn serve(
    input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> std::io::Result<UrlCheckAnswer> {
    let answer = match read_request(input).await {
        Ok(request) => check(&request.url).await,
        Err(reason) => UrlCheckAnswer::Refused { reason },
    };
    let mut line = serde_json::to_vec(&answer).expect("answers serialize");
    line.push(b'\n');
    output.write_all(&line).await?;
    output.flush().await?;
    Ok(answer)
}

async fn read_request(input: impl AsyncRead + Unpin) -> Result<UrlCheckRequest, String> {
    let mut reader = BufReader::new(input.take(MAX_REQUEST_BYTES));
    let mut line = String::new();
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return Err(format!("no request within {} s", READ_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("unreadable request: {e}")),
        Ok(Ok(_)) => {}
    }
    if !line.ends_with('\n') && line.len() as u64 == MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    serde_json::from_str(line.trim_end()).map_err(|e| format!("bad request: {e}"))
}

/// The URL checked as kimchid checks it, then asked for.
async fn check(url: &str) -> UrlCheckAnswer {
    if let Err(e) = IsoUrl::parse(url) {
        return UrlCheckAnswer::Refused {
            reason: e.to_string(),
        };
    }
    ask_server(url).await
}

/// Asks the server for the image's headers (HEAD, or SIZE over FTP) with curl, the
/// library QEMU itself streams with; a server that does not answer or answers with an
/// error is refused. `--disable` first: no curlrc of whoever runs this applies.
async fn ask_server(url: &str) -> UrlCheckAnswer {
    let output = Command::new("curl")
        .args([
            "--disable",
            "--silent",
            "--show-error",
            "--fail",
            "--head",
            "--location",
        ])
        .args([
            "--proto",
            "=http,https,ftp",
            "--proto-redir",
            "=http,https,ftp",
        ])
        .args(["--max-time", &CHECK_TIMEOUT.as_secs().to_string()])
        .args(["--output", "/dev/null", "--"])
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await;
    match output {
        Err(e) => UrlCheckAnswer::Failed {
            reason: format!("cannot run curl to check '{}': {e}", excerpt(url)),
        },
        Ok(output) if output.status.success() => UrlCheckAnswer::Answers,
        Ok(output) => {
            let reason = String::from_utf8_lossy(&output.stderr);
            let reason = reason.trim().trim_start_matches("curl: ");
            UrlCheckAnswer::Refused {
                reason: format!("cdrom URL '{}' does not answer: {reason}", excerpt(url)),
            }
        }
    }
}

/// The subcommand: serves the connection systemd accepted (or
/// `systemd-socket-activate --accept --inetd`), which is stdin and stdout.
pub async fn run() -> std::process::ExitCode {
    let served = match connection() {
        Ok(stream) => {
            let (input, output) = stream.into_split();
            serve(input, output).await
        }
        Err(e) => Err(e),
    };
    match served {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kimchid check-url: cannot answer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Standard input as the socket it must be (read and written through one descriptor).
fn connection() -> std::io::Result<UnixStream> {
    let stdin = File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    if !stdin.metadata()?.file_type().is_socket() {
        return Err(std::io::Error::other(
            "standard input is not a socket: this subcommand serves a connection accepted \
             on kimchi-url-check.socket",
        ));
    }
    let stream = std::os::unix::net::UnixStream::from(OwnedFd::from(stdin));
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}
