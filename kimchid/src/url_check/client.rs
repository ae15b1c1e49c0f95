//! kimchid's side of the URL check: one connection to the helper's socket per URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::helper::CHECK_TIMEOUT;
use super::{UrlCheckAnswer, UrlCheckRequest};
use crate::error::{Error, Result};

/// How long the helper may take for its answer: its own bound and a margin.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(CHECK_TIMEOUT.as_secs() + 5);
/// An answer line longer than this is not one the helper writes.
const MAX_ANSWER_BYTES: u64 = 16 * 1024;

pub struct UrlChecker {
    socket: PathBuf,
    bound: Duration,
}

impl UrlChecker {
    pub fn new(socket: &Path) -> Self {
        UrlChecker {
            socket: socket.to_owned(),
            bound: ANSWER_TIMEOUT,
        }
    }

    #[cfg(test)]
    pub fn with_bound(socket: &Path, bound: Duration) -> Self {
        UrlChecker {
            socket: socket.to_owned(),
            bound,
        }
    }

    /// Whether the server of `url` answers for it: refused (the caller's mistake) when
    /// it does not; unavailable when the helper cannot be asked.
    pub async fn check(&self, url: &str) -> Result<()> {
        let answer = tokio::time::timeout(self.bound, self.ask(url))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the URL check service at {} gave no answer within {} s",
                    self.socket.display(),
                    self.bound.as_secs()
                ))
            })??;
        match answer {
            UrlCheckAnswer::Answers => Ok(()),
            UrlCheckAnswer::Refused { reason } => Err(Error::InvalidArgument(reason)),
            UrlCheckAnswer::Failed { reason } => Err(Error::Internal(reason)),
        }
    }

    async fn ask(&self, url: &str) -> Result<UrlCheckAnswer> {
        let mut stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            Error::Unavailable(format!(
                "URL check service not reachable at {}: {e}; is kimchi-url-check.socket enabled?",
                self.socket.display()
            ))
        })?;
        let broken = |e: std::io::Error| {
            Error::Unavailable(format!(
                "the URL check service at {} broke off: {e}",
                self.socket.display()
            ))
        };
        let mut request = serde_json::to_vec(&UrlCheckRequest {
            url: url.to_owned(),
        })
        .expect("requests serialize");
        request.push(b'\n');
        stream.write_all(&request).await.map_err(broken)?;
        let mut line = String::new();
        BufReader::new(stream.take(MAX_ANSWER_BYTES))
            .read_line(&mut line)
            .await
            .map_err(broken)?;
        if line.is_empty() {
            return Err(Error::Unavailable(format!(
                "the URL check service at {} closed the connection without an answer",
                self.socket.display()
            )));
        }
        serde_json::from_str(line.trim_end()).map_err(|e| {
            Error::Internal(format!(
                "the URL check service at {} answered what kimchid does not understand ({e}): '{}'",
                self.socket.display(),
                crate::excerpt::excerpt(line.trim_end())
            ))
        })
    }
}
