use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;

use super::client::UrlChecker;
use super::helper::serve;
use super::UrlCheckAnswer;
use crate::assert_error;
use crate::error::Error;

/// The helper as kimchi-url-check.socket runs it, one `serve` per connection, in this
/// process: what engine tests check URLs with.
pub fn helper_at(socket: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(socket).expect("bind the URL check socket");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (input, output) = stream.into_split();
                let _ = serve(input, output).await;
            });
        }
    })
}

/// An HTTP server on 127.0.0.1 answering every request with `status`; the request
/// lines it got come back through the returned channel.
pub fn http_server(status: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut first = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut first).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = tx.send(first.trim_end().to_owned());
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (format!("http://{address}"), rx)
}

struct Helper {
    _dir: tempfile::TempDir,
    checker: UrlChecker,
    _task: tokio::task::JoinHandle<()>,
}

fn helper() -> Helper {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("url-check.sock");
    let task = helper_at(&socket);
    Helper {
        checker: UrlChecker::new(&socket),
        _dir: dir,
        _task: task,
    }
}

/// What the helper answers to `request` written as is.
async fn raw(request: &[u8]) -> UrlCheckAnswer {
    let (mut peer, ours) = tokio::io::duplex(64 * 1024);
    let (input, output) = tokio::io::split(ours);
    tokio::io::AsyncWriteExt::write_all(&mut peer, request)
        .await
        .unwrap();
    serve(input, output).await.unwrap()
}

fn refused(reason: &str) -> UrlCheckAnswer {
    UrlCheckAnswer::Refused {
        reason: reason.into(),
    }
}

#[tokio::test]
async fn a_url_whose_server_answers_passes_and_the_server_was_asked() {
    let h = helper();
    let (base, requests) = http_server("200 OK");
    h.checker
        .check(&format!("{base}/isos/x.iso"))
        .await
        .unwrap();
    assert_eq!(requests.recv().unwrap(), "HEAD /isos/x.iso HTTP/1.1");
}

#[tokio::test]
async fn a_url_answering_404_or_on_a_closed_port_is_refused_with_curls_reason() {
    let h = helper();
    let (base, _requests) = http_server("404 Not Found");
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for url in [format!("{base}/gone.iso"), format!("{closed}/x.iso")] {
        // The reason after the colon is curl's.
        let start = format!("cdrom URL '{url}' does not answer: ");
        match h.checker.check(&url).await {
            Err(Error::InvalidArgument(m)) => assert!(m.starts_with(&start), "{m}"),
            other => panic!("{url}: expected InvalidArgument({start:?}…), got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_helper_checks_the_url_again_whatever_the_peer_sent() {
    assert_eq!(
        raw(b"{\"url\": \"gopher://h/x.iso\"}\n").await,
        refused("cdrom URL 'gopher://h/x.iso': only http, https and ftp images can be streamed")
    );
    assert_eq!(
        raw(b"{\"url\": \"file:///etc/shadow\"}\n").await,
        refused("cdrom URL 'file:///etc/shadow': only http, https and ftp images can be streamed")
    );
    assert_eq!(
        raw(b"{\"url\": \"http://h/x.iso\", \"curl\": \"-o /x\"}\n").await,
        refused("bad request: unknown field `curl`, expected `url` at line 1 column 32")
    );
    match raw(b"not json\n").await {
        UrlCheckAnswer::Refused { reason } => {
            assert!(reason.starts_with("bad request: "), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let long = format!("{{\"url\": \"http://h/{}.iso\"}}\n", "x".repeat(20_000));
    assert_eq!(
        raw(long.as_bytes()).await,
        refused("request longer than 16384 bytes")
    );
}

#[tokio::test]
async fn a_peer_that_sends_nothing_is_answered_after_5_s() {
    let (_peer, ours) = tokio::io::duplex(1024);
    let (input, output) = tokio::io::split(ours);
    let started = Instant::now();
    let answer = serve(input, output).await.unwrap();
    println!("a silent peer was answered in {:?}", started.elapsed());
    assert_eq!(answer, refused("no request within 5 s"));
}

#[tokio::test]
async fn no_helper_listening_is_unavailable_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let message = format!(
        "URL check service not reachable at {}: No such file or directory (os error 2); \
         is kimchi-url-check.socket enabled?",
        socket.display()
    );
    assert_error!(
        UrlChecker::new(&socket).check("http://h/x.iso").await,
        Unavailable,
        message
    );
}

#[tokio::test]
async fn a_helper_that_never_answers_or_hangs_up_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let accepted = tokio::spawn(async move {
        let (silent, _) = listener.accept().await.unwrap();
        // Reads the request, then ends without answering (as a helper killed would).
        let (hung_up, _) = listener.accept().await.unwrap();
        let mut request = String::new();
        tokio::io::AsyncBufReadExt::read_line(
            &mut tokio::io::BufReader::new(hung_up),
            &mut request,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(silent);
    });
    let checker = UrlChecker::with_bound(&socket, Duration::from_secs(1));
    let message = format!(
        "the URL check service at {} gave no answer within 1 s",
        socket.display()
    );
    assert_error!(checker.check("http://h/x.iso").await, Unavailable, message);
    let message = format!(
        "the URL check service at {} closed the connection without an answer",
        socket.display()
    );
    assert_error!(checker.check("http://h/x.iso").await, Unavailable, message);
    accepted.abort();
}
