//! The gateway's edges: idle connections are closed, busy ones are not, every answer
//! carries the browser security headers, and malformed HTTP is refused.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kimchi_tests::daemons::{free_port, Gateway, AS_GATEWAY_USER};
use kimchi_tests::request;
use kimchi_tests::tls::client_config;
use rustls::pki_types::ServerName;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(port: u16) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client_config()), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One keep-alive `GET /config` on `tls`; the status code.
fn get_config(tls: &mut Tls) -> u16 {
    tls.write_all(b"GET /config HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0; length];
    tls.read_exact(&mut body).unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Blocks until the server closes `tls`; true if it did (EOF or reset).
fn closed_by_server(tls: &mut Tls) -> bool {
    let mut buf = [0u8; 64];
    match tls.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected {n} bytes from an idle connection"),
        Err(e) => matches!(
            e.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
    }
}

fn private_gateway(idle_secs: &str) -> (Gateway, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::spawn(
        &format!("exec {AS_GATEWAY_USER}"),
        &[
            ("KIMCHI_LISTEN", &listen),
            ("KIMCHI_IDLE_TIMEOUT_SECS", idle_secs),
        ],
        None,
    );
    gw.wait_for(port, "/config", 200);
    (gw, port)
}

#[test]
fn idle_connections_are_closed_and_busy_ones_kept() {
    let (_gw, port) = private_gateway("2");

    // Never sends a request (not even the TLS handshake beyond what connect does).
    let mut silent = connect(port);
    let mut idle = connect(port);
    assert_eq!(get_config(&mut idle), 200);
    let started = Instant::now();
    assert!(closed_by_server(&mut idle), "an idle connection stays open");
    let after = started.elapsed();
    println!("idle connection closed after {after:?} (timeout 2 s)");
    assert!(
        after >= Duration::from_millis(1500),
        "closed before the idle timeout: {after:?}"
    );
    assert!(
        closed_by_server(&mut silent),
        "a silent connection stays open"
    );

    // A request every half second for three timeouts keeps the connection.
    let mut busy = connect(port);
    for _ in 0..12 {
        assert_eq!(get_config(&mut busy), 200);
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_answer_carries_the_security_headers() {
    for resp in [
        request("GET", "/config").send(),
        request("GET", "/vms").send(),
        request("GET", "/no/such/thing").send(),
    ] {
        let h = |name| {
            resp.header(name)
                .unwrap_or_else(|| panic!("{name} missing: {resp:?}"))
        };
        assert_eq!(h("strict-transport-security"), "max-age=31536000");
        assert_eq!(h("x-frame-options"), "DENY");
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("referrer-policy"), "no-referrer");
        assert!(h("content-security-policy").contains("frame-ancestors 'none'"));
    }
}

/// hyper answers what it cannot parse itself, before the gateway sees a request: the
/// status is right but it has no body (the library offers no hook for one).
#[test]
fn malformed_http_is_refused_with_a_client_error() {
    let port = 8001;
    for (what, raw) in [
        ("a bad request line", b"GET  / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "huge headers",
            format!(
                "GET /config HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(512 * 1024)
            )
            .into_bytes(),
        ),
    ] {
        let mut tls = connect(port);
        // The peer may close while the oversized head is still being written.
        let _ = tls.write_all(&raw).and_then(|_| tls.flush());
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        let status: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no HTTP answer: {answer:?}"));
        assert!((400..500).contains(&status), "{what}: {answer:?}");
    }
}
