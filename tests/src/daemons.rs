//! Private instances of the daemons and of a bus, for tests that must start, stop or
//! point them somewhere without disturbing the shared stack.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::{poll, run, unique_name};

pub const GATEWAY_BIN: &str = "/usr/sbin/kimchi-gateway";
/// Runs what follows as the gateway's user, with no capabilities, as the units do.
pub const AS_GATEWAY_USER: &str =
    "setpriv --reuid=_kimchi-gw --regid=_kimchi-gw --init-groups --inh-caps=-all --bounding-set=-all";

/// The kimchid under test: `KIMCHID_BIN`, else the installed one, else the workspace build.
pub fn kimchid_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("KIMCHID_BIN") {
        return bin.into();
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        PathBuf::from("/usr/sbin/kimchid"),
        workspace.join("target/debug/kimchid"),
        workspace.join("target/release/kimchid"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("no kimchid binary: set KIMCHID_BIN")
}

/// A process that is killed when the test ends, however it ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A dbus-daemon of the test's own that lets every user connect, own and call.
pub struct PrivateBus {
    /// The bus address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
    _daemon: Reaped,
}

impl PrivateBus {
    /// Listens on `dir/bus`; its log is `dir/bus.log`.
    pub fn start(dir: &Path) -> PrivateBus {
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<busconfig><listen>unix:path={}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>\
                 <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                 <allow own=\"*\"/></policy></busconfig>",
                dir.join("bus").display()
            ),
        )
        .unwrap();
        let mut daemon = Reaped(
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", config.display()))
                .args(["--print-address=1", "--nofork"])
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(dir.join("bus.log")).unwrap())
                .spawn()
                .expect("run dbus-daemon"),
        );
        // The address is printed once the bus listens.
        let mut address = String::new();
        BufReader::new(daemon.0.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}; log:\n{}",
            std::fs::read_to_string(dir.join("bus.log")).unwrap_or_default()
        );
        PrivateBus {
            address: address.trim().to_owned(),
            _daemon: daemon,
        }
    }
}

/// A gateway process of the test's own, as the gateway user, killed on drop, with a
/// state directory that user owns.
pub struct Gateway {
    child: Child,
    state_dir: PathBuf,
}

impl Gateway {
    /// Runs `sh -c "<shell> kimchi-gateway --state-dir …"` with `env`; `shell` must end
    /// in a command that execs (so that `LISTEN_PID=$$` names the gateway). With
    /// `inherited`, that socket is the gateway's fd 3.
    pub fn spawn(shell: &str, env: &[(&str, &str)], inherited: Option<&TcpListener>) -> Gateway {
        let state_dir = std::env::temp_dir().join(unique_name("gw-state"));
        std::fs::create_dir(&state_dir).unwrap();
        run(Command::new("chown").arg("_kimchi-gw:").arg(&state_dir)).expect_ok();
        let script = format!("{shell} {GATEWAY_BIN} --state-dir {}", state_dir.display());
        let log = std::fs::File::create(state_dir.join("gateway.log")).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            // The machine's gateway.conf must not leak in.
            .env("KIMCHI_GATEWAY_CONFIG", "/nonexistent/gateway.conf")
            .envs(env.iter().copied())
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET path` on this gateway: (status, JSON body), or `None` if it did not answer.
    pub fn get(&self, port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
        let ran = run(Command::new("curl")
            .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:{port}{path}")));
        let (body, status) = ran.stdout.rsplit_once('\n')?;
        let status: u16 = status.trim().parse().ok().filter(|s| *s != 0)?;
        Some((status, serde_json::from_str(body).ok()?))
    }

    /// Waits until `GET path` answers with `status`, and returns the body.
    pub fn wait_for(&self, port: u16, path: &str, status: u16) -> serde_json::Value {
        poll(Duration::from_secs(20), || {
            self.get(port, path)
                .filter(|(s, _)| *s == status)
                .map(|(_, body)| body)
        })
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(self.state_dir.join("gateway.log"));
            panic!(
                "gateway never answered {status} on {path}; now: {:?}; log:\n{log:?}",
                self.get(port, path)
            )
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
