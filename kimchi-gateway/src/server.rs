//! Accept loops: TLS handshake, then HTTP/1.1 or HTTP/2 (as ALPN chose) on each
//! connection, until the connection is idle too long or the gateway shuts down, when
//! open connections get to finish their requests.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::app::{App, Conn};
use crate::listener::Listener;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send the request headers (slow clients would otherwise hold sockets).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings at this interval find peers that vanished without closing.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long open connections may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listeners: Vec<Listener>,
    tls: TlsAcceptor,
    app: Arc<App>,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL);
    let server = Arc::new(Server {
        tls,
        app,
        http,
        idle_timeout,
        stopping: watch::channel(false).0,
    });
    // Every connection holds a sender; the receiver sees the end of the last one.
    let (open, mut all_closed) = mpsc::channel::<()>(1);

    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, server.clone(), open.clone()));
    }
    drop(open);
    shutdown.await;
    loops.abort_all();
    while loops.join_next().await.is_some() {}

    tracing::info!("draining connections");
    server.stopping.send_replace(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// What every connection shares.
struct Server {
    tls: TlsAcceptor,
    app: Arc<App>,
    http: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
    /// Becomes true when the gateway shuts down.
    stopping: watch::Sender<bool>,
}

async fn accept_loop(listener: Listener, server: Arc<Server>, open: mpsc::Sender<()>) {
    loop {
        let (tcp, peer) = match listener.socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: pause instead of spinning on the error.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers are whole when written: without this, the last segment of a large
        // answer (a list of a thousand VMs) waits for the client's delayed ACK, 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let conn = Conn {
            local_port: listener.port,
            peer,
        };
        tokio::spawn(serve_connection(server.clone(), tcp, conn, open.clone()));
    }
}

async fn serve_connection(
    server: Arc<Server>,
    tcp: TcpStream,
    conn: Conn,
    _open: mpsc::Sender<()>,
) {
    let Some(stream) = handshake(&server.tls, tcp, conn).await else {
        return;
    };
    let activity = Arc::new(Activity::new());
    let service = {
        let (app, activity) = (server.app.clone(), activity.clone());
        service_fn(move |req| {
            let (app, activity) = (app.clone(), activity.clone());
            async move {
                let _busy = activity.request();
                Ok::<_, std::convert::Infallible>(app.handle(req, conn).await)
            }
        })
    };
    let connection = server
        .http
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut stopping = server.stopping.subscribe();
    tokio::select! {
        ended = connection.as_mut() => return log_end(conn, ended),
        _ = stopping.wait_for(|stop| *stop) => {}
        _ = activity.idle(server.idle_timeout) => {
            tracing::debug!(peer = %conn.peer, "closing a connection idle for {:?}", server.idle_timeout);
        }
    }
    // Requests in flight finish; HTTP/1 closes after them, HTTP/2 sends GOAWAY.
    connection.as_mut().graceful_shutdown();
    log_end(conn, connection.await);
}

fn log_end<E: std::fmt::Display>(conn: Conn, ended: Result<(), E>) {
    if let Err(e) = ended {
        tracing::debug!(peer = %conn.peer, "connection ended: {e}");
    }
}

/// When a connection last finished a request, and how many it is answering: a
/// connection is idle while it answers none (an open websocket has left hyper and is
/// not counted here).
struct Activity {
    last: Mutex<Instant>,
    busy: AtomicUsize,
}

/// Marks a request in flight until dropped.
struct Busy<'a>(&'a Activity);

impl Activity {
    fn new() -> Activity {
        Activity {
            last: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
        }
    }

    fn request(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    /// How long the connection has been idle, or `None` while it answers a request.
    fn idle_for(&self) -> Option<Duration> {
        let last = *self.last.lock().expect("activity lock poisoned");
        (self.busy.load(Ordering::SeqCst) == 0).then(|| last.elapsed())
    }

    /// Resolves once the connection has been idle for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let wait = match self.idle_for() {
                Some(idle) if idle >= timeout => return,
                Some(idle) => timeout - idle,
                None => timeout,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.last.lock().expect("activity lock poisoned") = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handshake(
    tls: &TlsAcceptor,
    tcp: TcpStream,
    conn: Conn,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(peer = %conn.peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_connection_without_requests_becomes_idle() {
        let activity = Activity::new();
        tokio::time::timeout(Duration::from_secs(10), activity.idle(SHORT))
            .await
            .expect("idle after the timeout");
    }

    #[tokio::test]
    async fn a_request_in_flight_keeps_the_connection_and_its_end_restarts_the_clock() {
        let activity = Activity::new();
        let busy = activity.request();
        assert_eq!(activity.idle_for(), None);
        assert!(
            tokio::time::timeout(SHORT * 4, activity.idle(SHORT))
                .await
                .is_err(),
            "idle while a request is answered"
        );
        drop(busy);
        let idle = activity.idle_for().expect("no request in flight");
        assert!(idle < SHORT * 4, "the clock restarts when a request ends");
        tokio::time::timeout(Duration::from_secs(10), activity.idle(SHORT))
            .await
            .expect("idle after the last request");
    }
}
