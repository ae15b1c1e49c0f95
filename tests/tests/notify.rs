//! kimchid speaks the sd_notify protocol the way systemd expects of a Type=notify
//! service with a watchdog. Each test runs its own kimchid (libvirt test driver) on a
//! private bus and plays systemd's part with a datagram socket.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kimchi_tests::{poll, unique_name};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The kimchid under test: `KIMCHID_BIN`, else the installed one, else the workspace build.
fn kimchid_bin() -> PathBuf {
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
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private bus, a notify socket and a kimchid using both; all removed on drop.
struct Notified {
    kimchid: Reaped,
    _bus: Reaped,
    socket: UnixDatagram,
    dir: PathBuf,
    /// Every `KEY=VALUE` line received so far.
    lines: Vec<String>,
}

impl Notified {
    fn start() -> Notified {
        let dir = std::env::temp_dir().join(unique_name("notify"));
        std::fs::create_dir_all(&dir).unwrap();
        let bus_socket = dir.join("bus");
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<busconfig><listen>unix:path={}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                 <allow own=\"*\"/></policy></busconfig>",
                bus_socket.display()
            ),
        )
        .unwrap();
        let mut bus = Reaped(
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
        BufReader::new(bus.0.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}; log:\n{}",
            std::fs::read_to_string(dir.join("bus.log")).unwrap_or_default()
        );

        let notify_path = dir.join("notify");
        let socket = UnixDatagram::bind(&notify_path).unwrap();
        let kimchid = Reaped(
            Command::new(kimchid_bin())
                .args(["--config", dir.join("none.conf").to_str().unwrap()])
                .args(["--libvirt-uri", "test:///default"])
                .args(["--state-dir", dir.join("state").to_str().unwrap()])
                .env("DBUS_SYSTEM_BUS_ADDRESS", address.trim())
                .env("NOTIFY_SOCKET", &notify_path)
                .env("WATCHDOG_USEC", "200000")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("kimchid.log")).unwrap())
                .spawn()
                .expect("run kimchid"),
        );
        Notified {
            kimchid,
            _bus: bus,
            socket,
            dir,
            lines: Vec::new(),
        }
    }

    /// Collects notifications until `done` holds for what arrived, or `timeout` passes.
    fn wait_for(&mut self, timeout: Duration, done: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !done(&self.lines) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                self.lines.extend(text.lines().map(str::to_owned));
            }
        }
        true
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kimchid.log")).unwrap_or_default()
    }

    #[track_caller]
    fn expect(&mut self, timeout: Duration, what: &str, done: impl Fn(&[String]) -> bool) {
        if !self.wait_for(timeout, done) {
            panic!(
                "expected {what}; got {:?}\nkimchid log:\n{}",
                self.lines,
                self.log()
            );
        }
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn has(lines: &[String], line: &str) -> bool {
    lines.iter().any(|l| l == line)
}

#[test]
fn kimchid_reports_ready_with_a_status_line() {
    let mut n = Notified::start();
    n.expect(Duration::from_secs(5), "READY=1 and STATUS=", |l| {
        has(l, "READY=1") && l.iter().any(|s| s.starts_with("STATUS="))
    });
}

#[test]
fn kimchid_pets_the_watchdog_while_running() {
    let mut n = Notified::start();
    n.expect(Duration::from_secs(5), "READY=1", |l| has(l, "READY=1"));
    // WATCHDOG_USEC=200000: a ping every 100 ms, so two within 2 s is lenient.
    n.expect(Duration::from_secs(2), "WATCHDOG=1 twice", |l| {
        l.iter().filter(|s| *s == "WATCHDOG=1").count() >= 2
    });
}

#[test]
fn kimchid_reports_stopping_and_exits_0_on_sigterm() {
    let mut n = Notified::start();
    n.expect(Duration::from_secs(5), "READY=1", |l| has(l, "READY=1"));
    // systemd may stop a service as soon as it is ready.
    let pid = Pid::from_raw(n.kimchid.0.id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let status = poll(Duration::from_secs(5), || n.kimchid.0.try_wait().unwrap())
        .unwrap_or_else(|| panic!("kimchid still running 5 s after SIGTERM\n{}", n.log()));
    // Its last datagrams are queued on the socket by now.
    let what = format!("STOPPING=1 before exiting ({status})");
    n.expect(Duration::from_millis(100), &what, |l| has(l, "STOPPING=1"));
    assert!(status.success(), "{status}\n{}", n.log());
}
