//! The gateway serves HTTPS from a socket systemd hands it (`LISTEN_FDS`), even in a
//! network namespace of its own — what `PrivateNetwork=yes` gives it — and binds
//! its own socket when none is handed over.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kimchi_tests::{poll, run, unique_name};

const GATEWAY: &str = "/usr/sbin/kimchi-gateway";
const DROP_TO_GATEWAY_USER: &str =
    "setpriv --reuid=_kimchi-gw --regid=_kimchi-gw --init-groups --inh-caps=-all --bounding-set=-all";

/// A gateway process of the test's own, killed on drop, with a state directory the
/// gateway user owns.
struct Gateway {
    child: Child,
    state_dir: PathBuf,
}

impl Gateway {
    /// `sh` sets LISTEN_PID to its own pid and execs, as do unshare and setpriv,
    /// so the gateway sees its own pid there.
    fn spawn(shell: &str, inherited: Option<&TcpListener>) -> Gateway {
        let state_dir = std::env::temp_dir().join(unique_name("gw-state"));
        std::fs::create_dir(&state_dir).unwrap();
        run(Command::new("chown").arg("_kimchi-gw:").arg(&state_dir)).expect_ok();
        let script = format!("{shell} {GATEWAY} --state-dir {}", state_dir.display());
        let log = std::fs::File::create(state_dir.join("gateway.log")).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(listener) = inherited {
            let fd = listener.as_raw_fd();
            // SAFETY: between fork and exec only dup2/fcntl run (async-signal-safe);
            // the listener outlives the spawn, and fd 3 is left open for the gateway.
            unsafe {
                cmd.pre_exec(move || {
                    let listener = BorrowedFd::borrow_raw(fd);
                    if fd == 3 {
                        // dup2 onto itself would keep close-on-exec set.
                        fcntl(listener, FcntlArg::F_SETFD(FdFlag::empty()))?;
                    } else {
                        let _ = nix::unistd::dup2_raw(listener, 3)?.into_raw_fd();
                    }
                    Ok(())
                });
            }
        }
        Gateway {
            child: cmd.spawn().expect("start the gateway"),
            state_dir,
        }
    }

    fn config(&self, port: u16) -> Option<serde_json::Value> {
        let ran = run(Command::new("curl")
            .args(["-sk", "--max-time", "2"])
            .arg(format!("https://127.0.0.1:{port}/config")));
        ran.ok
            .then(|| serde_json::from_str(&ran.stdout).ok())
            .flatten()
    }

    fn wait_for_config(&self, port: u16) -> serde_json::Value {
        poll(Duration::from_secs(20), || self.config(port)).unwrap_or_else(|| {
            let log = std::fs::read_to_string(self.state_dir.join("gateway.log"));
            panic!("gateway on port {port} never answered; its log:\n{log:?}")
        })
    }

    fn net_namespace(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/ns/net", self.child.id())).unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn gateway_serves_inherited_socket_from_its_own_network_namespace() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gw = Gateway::spawn(
        &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec unshare --net {DROP_TO_GATEWAY_USER}"),
        Some(&listener),
    );
    let config = gw.wait_for_config(port);
    assert_eq!(config["http_port"], port);
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        gw.net_namespace(),
        own,
        "the gateway must run in another netns"
    );
}

#[test]
fn gateway_binds_its_own_socket_without_socket_activation() {
    let port = free_port();
    let gw = Gateway::spawn(
        &format!("KIMCHI_LISTEN=127.0.0.1:{port} exec {DROP_TO_GATEWAY_USER}"),
        None,
    );
    assert_eq!(gw.wait_for_config(port)["http_port"], port);
}
