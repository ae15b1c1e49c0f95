//! The listening sockets: inherited from systemd (socket activation, `LISTEN_FDS` for
//! this `LISTEN_PID`) or bound here, for development.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd};

use nix::sys::stat::{fstat, SFlag};

use tokio::net::TcpListener;

use crate::Startup;

pub struct Listener {
    pub socket: TcpListener,
    /// The port clients reach this socket on, reported by `GET /config`.
    pub port: u16,
}

pub async fn open(fallback: SocketAddr) -> Startup<Vec<Listener>> {
    let inherited = inherited()?;
    if !inherited.is_empty() {
        return Ok(inherited);
    }
    let socket = TcpListener::bind(fallback)
        .await
        .map_err(|e| format!("cannot listen on {fallback}: {e}"))?;
    let port = socket.local_addr()?.port();
    tracing::info!(address = %fallback, "listening");
    Ok(vec![Listener { socket, port }])
}

fn inherited() -> Startup<Vec<Listener>> {
    let fds = sd_notify::listen_fds().map_err(|e| format!("bad LISTEN_FDS: {e}"))?;
    fds.map(|fd| {
        // Ownership is taken only of a socket: closing some other descriptor that a
        // confused supervisor announced would pull it from under its real owner.
        // SAFETY: the descriptor stays open for this borrow.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let mode = fstat(borrowed)
            .map_err(|e| format!("socket-activated fd {fd} is not open: {e}"))?
            .st_mode;
        if SFlag::from_bits_truncate(mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
            return Err(format!("socket-activated fd {fd} is not a socket").into());
        }
        // SAFETY: systemd passes these descriptors to this process (LISTEN_PID was
        // checked) and nothing else in the process owns them.
        let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        let address = std
            .local_addr()
            .map_err(|e| format!("socket-activated fd {fd} is not a TCP socket: {e}"))?;
        std.set_nonblocking(true)?;
        let socket = TcpListener::from_std(std)?;
        tracing::info!(%address, fd, "listening on a socket from systemd");
        Ok(Listener {
            socket,
            port: address.port(),
        })
    })
    .collect()
}
