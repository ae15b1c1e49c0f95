//! Accept loops: TLS handshake, then HTTP/1.1 or HTTP/2 (as ALPN chose) on each
//! connection, until shutdown, when open connections get to finish their requests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
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
    shutdown: impl Future<Output = ()>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL);
    let http = Arc::new(http);
    let graceful = Arc::new(GracefulShutdown::new());

    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(
            listener,
            tls.clone(),
            app.clone(),
            http.clone(),
            graceful.clone(),
        ));
    }
    shutdown.await;
    loops.abort_all();
    while loops.join_next().await.is_some() {}

    let graceful = Arc::into_inner(graceful).expect("accept loops have ended");
    tracing::info!(connections = graceful.count(), "draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

async fn accept_loop(
    listener: Listener,
    tls: TlsAcceptor,
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
) {
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
        let watcher = graceful.watcher();
        let (tls, app, http) = (tls.clone(), app.clone(), http.clone());
        tokio::spawn(async move {
            let Some(stream) = handshake(&tls, tcp, conn).await else {
                return;
            };
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app.handle(req, conn).await) }
            });
            let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(peer = %conn.peer, "connection ended: {e}");
            }
        });
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
