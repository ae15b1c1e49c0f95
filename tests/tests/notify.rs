//! kimchid speaks the sd_notify protocol the way systemd expects of a Type=notify-reload
//! service with a watchdog. Each test runs its own kimchid (libvirt test driver) on a
//! private bus and plays systemd's part with a datagram socket.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kimchi_dbus::{ManagerProxy, BUS_NAME, MANAGER_PATH};
use kimchi_tests::daemons::{kimchid_bin, PrivateBus, Reaped};
use kimchi_tests::{poll, unique_name};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use zbus::fdo::{DBusProxy, IntrospectableProxy};
use zbus::proxy::CacheProperties;

/// The watchdog interval the tests ask for, as systemd passes it.
const WATCHDOG_USEC: u64 = 400_000;

/// A private bus, a notify socket and a kimchid using both; all removed on drop.
struct Notified {
    kimchid: Reaped,
    _bus: PrivateBus,
    socket: UnixDatagram,
    dir: PathBuf,
    /// The private bus, for clients of the kimchid under test.
    address: String,
    /// kimchid's `--config` file.
    config: PathBuf,
    /// Every `KEY=VALUE` line received so far.
    lines: Vec<String>,
    /// When each line of `lines` arrived.
    arrivals: Vec<Instant>,
}

impl Notified {
    /// kimchid with an empty configuration file (all defaults).
    fn start() -> Notified {
        Notified::start_with("")
    }

    /// kimchid with `config` as its configuration file.
    fn start_with(config_text: &str) -> Notified {
        let dir = std::env::temp_dir().join(unique_name("notify"));
        std::fs::create_dir_all(&dir).unwrap();
        let kimchid_config = dir.join("kimchid.conf");
        std::fs::write(&kimchid_config, config_text).unwrap();
        let bus = PrivateBus::start(&dir);
        let address = bus.address.clone();

        let notify_path = dir.join("notify");
        let socket = UnixDatagram::bind(&notify_path).unwrap();
        let kimchid = Reaped(
            Command::new(kimchid_bin())
                .args(["--config", kimchid_config.to_str().unwrap()])
                .args(["--libvirt-uri", "test:///default"])
                .args(["--state-dir", dir.join("state").to_str().unwrap()])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .env("NOTIFY_SOCKET", &notify_path)
                .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
                .env_remove("WATCHDOG_PID")
                // It would win over the file's log_level, which the tests change.
                .env_remove("RUST_LOG")
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
            address,
            config: kimchid_config,
            lines: Vec::new(),
            arrivals: Vec::new(),
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
                let now = Instant::now();
                let text = String::from_utf8_lossy(&buf[..n]);
                for line in text.lines() {
                    self.lines.push(line.to_owned());
                    self.arrivals.push(now);
                }
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

impl Notified {
    fn pid(&self) -> u32 {
        self.kimchid.0.id()
    }

    /// Panics (with the log) unless kimchid still runs.
    #[track_caller]
    fn assert_running(&mut self) {
        if let Some(status) = self.kimchid.0.try_wait().unwrap() {
            panic!("kimchid exited ({status})\nkimchid log:\n{}", self.log());
        }
    }

    /// Sends SIGHUP and expects the notify-reload handshake for it: `RELOADING=1` with
    /// `MONOTONIC_USEC=`, then `READY=1` again.
    #[track_caller]
    fn reload(&mut self) {
        let from = self.lines.len();
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGHUP).unwrap();
        self.expect(
            Duration::from_secs(5),
            "RELOADING=1, MONOTONIC_USEC=<n>, then READY=1 after SIGHUP",
            |l| reload_handshake(&l[from..]),
        );
    }
}

/// `RELOADING=1` and a plausible `MONOTONIC_USEC=` in one datagram, `READY=1` after them.
fn reload_handshake(lines: &[String]) -> bool {
    let Some(reloading) = lines.iter().position(|l| l == "RELOADING=1") else {
        return false;
    };
    let after = &lines[reloading..];
    let usec_ok = after
        .iter()
        .filter_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .any(|v| v.parse::<u64>().is_ok_and(|n| n > 0));
    usec_ok && after.iter().any(|l| l == "READY=1")
}

/// A client of the private bus, on a runtime of its own so that the synchronous
/// notify-socket waits can go on between calls while the connection stays open.
struct Client {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
}

impl Client {
    fn connect(address: &str) -> Client {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let conn = rt
            .block_on(zbus::connection::Builder::address(address).build())
            .expect("connect to the private bus");
        Client { rt, conn }
    }

    /// Manager.Version read from the daemon (not from a proxy cache), the Manager
    /// object's introspection, and the pid owning org.kimchi.Kimchi1 on the bus.
    fn answers(&self) -> Result<(String, String, u32), zbus::Error> {
        self.rt.block_on(async {
            let manager = ManagerProxy::builder(&self.conn)
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            let version = manager.version().await?;
            let xml = IntrospectableProxy::builder(&self.conn)
                .destination(BUS_NAME)
                .path(MANAGER_PATH)
                .build()
                .await?
                .introspect()
                .await?;
            let owner = DBusProxy::new(&self.conn)
                .await?
                .get_connection_unix_process_id(BUS_NAME.try_into()?)
                .await?;
            Ok((version, xml, owner))
        })
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
fn kimchid_pets_the_watchdog_at_half_the_requested_interval() {
    let mut n = Notified::start();
    n.expect(Duration::from_secs(5), "READY=1", |l| has(l, "READY=1"));
    let from = n.lines.len();
    // Listen for 2 s: about ten pings at WATCHDOG_USEC / 2 = 200 ms.
    n.wait_for(Duration::from_secs(2), |_| false);
    let pings: Vec<Instant> = n.lines[from..]
        .iter()
        .zip(&n.arrivals[from..])
        .filter(|(l, _)| *l == "WATCHDOG=1")
        .map(|(_, at)| *at)
        .collect();
    assert!(
        pings.len() >= 4,
        "only {} WATCHDOG=1 in 2 s with WATCHDOG_USEC={WATCHDOG_USEC}: {:?}\nkimchid log:\n{}",
        pings.len(),
        &n.lines[from..],
        n.log()
    );
    let mut gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    // Half of 400 ms is 200 ms. The median shrugs off a late wakeup here or there; the
    // upper bound stays clear of the full interval, which would be too late for systemd.
    assert!(
        (Duration::from_millis(100)..=Duration::from_millis(300)).contains(&median),
        "median gap between WATCHDOG=1 is {median:?}, expected about {:?}; gaps {gaps:?}",
        Duration::from_micros(WATCHDOG_USEC / 2)
    );
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

#[test]
fn sighup_reload_keeps_an_open_bus_client_working() {
    let mut n = Notified::start_with("log_level = \"warn\"\n");
    n.expect(Duration::from_secs(5), "READY=1", |l| has(l, "READY=1"));
    let client = Client::connect(&n.address);
    let (version, xml, owner) = client.answers().unwrap_or_else(|e| {
        panic!(
            "kimchid does not answer before the reload: {e}\n{}",
            n.log()
        )
    });
    assert_eq!(owner, n.pid(), "org.kimchi.Kimchi1 is not our kimchid");
    assert!(xml.contains("org.kimchi.Kimchi1.Manager"), "{xml}");
    // At warn, the start's info lines are not logged.
    assert!(!n.log().contains("serving"), "{}", n.log());

    std::fs::write(&n.config, "log_level = \"info\"\n").unwrap();
    n.reload();

    n.assert_running();
    let (version_after, xml_after, owner_after) = client.answers().unwrap_or_else(|e| {
        panic!(
            "the open connection gets no answer after SIGHUP: {e}\n{}",
            n.log()
        )
    });
    assert_eq!(version_after, version);
    assert_eq!(xml_after, xml);
    assert_eq!(
        owner_after,
        n.pid(),
        "another process owns the name after the reload"
    );
    // The new log_level took effect: the info line of the reload is there.
    assert!(n.log().contains("configuration reloaded"), "{}", n.log());
}

#[test]
fn bad_configuration_at_reload_keeps_the_daemon_running() {
    let mut n = Notified::start_with("log_level = \"warn\"\n");
    n.expect(Duration::from_secs(5), "READY=1", |l| has(l, "READY=1"));
    let client = Client::connect(&n.address);
    let before = client.answers().unwrap_or_else(|e| {
        panic!(
            "kimchid does not answer before the reload: {e}\n{}",
            n.log()
        )
    });

    std::fs::write(&n.config, "log_level = \"info,=[\"\n").unwrap();
    n.reload();
    n.assert_running();
    let after = client
        .answers()
        .unwrap_or_else(|e| panic!("no answer after a refused reload: {e}\n{}", n.log()));
    assert_eq!(after, before);
    let log = n.log();
    assert!(
        log.lines()
            .any(|l| l.contains("reload refused") && l.contains("log_level")),
        "no complaint naming log_level:\n{log}"
    );
    // Still at the old level (warn): the info line of a successful reload is absent.
    assert!(!log.contains("configuration reloaded"), "{log}");

    // Fixing the file and reloading again works.
    std::fs::write(&n.config, "log_level = \"info\"\n").unwrap();
    n.reload();
    assert!(n.log().contains("configuration reloaded"), "{}", n.log());
    assert_eq!(client.answers().unwrap(), before);
}

/// Runs kimchid with `config` as its file, on a bus address that leads nowhere and
/// without a notify socket; returns its exit status and stderr.
fn start_with_bad_config(dir: &Path, config: &str) -> (std::process::ExitStatus, String) {
    let file = dir.join("kimchid.conf");
    std::fs::write(&file, config).unwrap();
    let stderr = dir.join("stderr");
    let mut child = Reaped(
        Command::new(kimchid_bin())
            .args(["--config", file.to_str().unwrap()])
            .args(["--state-dir", dir.join("state").to_str().unwrap()])
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", dir.join("no-bus").display()),
            )
            .env_remove("NOTIFY_SOCKET")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("run kimchid"),
    );
    let status = poll(Duration::from_secs(10), || child.0.try_wait().unwrap())
        .unwrap_or_else(|| panic!("kimchid still running 10 s after start with {config:?}"));
    (status, std::fs::read_to_string(&stderr).unwrap())
}

#[test]
fn bad_configuration_at_start_exits_2_naming_the_key() {
    let dir = std::env::temp_dir().join(unique_name("badconf"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("log_level = \"info,=[\"\n", "log_level"),
        ("libvirt_url = \"qemu:///system\"\n", "libvirt_url"),
        ("session_idle_secs = \"soon\"\n", "session_idle_secs"),
    ];
    let results: Vec<_> = cases
        .iter()
        .map(|(config, key)| (config, key, start_with_bad_config(&dir, config)))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    for (config, key, (status, stderr)) in results {
        assert_eq!(status.code(), Some(2), "{config:?}: {status}\n{stderr}");
        assert!(
            stderr.contains(key),
            "{config:?}: stderr does not name {key}:\n{stderr}"
        );
    }
}
