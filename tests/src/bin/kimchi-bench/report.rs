//! The summary of a whole run: every number by guest count, then one PASS/FAIL line
//! per target. A target whose numbers were not taken (no soak, one size) is n/a.

use std::collections::BTreeMap;

use crate::memory::{mib, DAEMONS};
use crate::sample::fmt_ms;
use crate::{results, say, step, Config, Result};

/// `GET /vms/:name` with Basic credentials before this benchmark's work, req/s at 8
/// connections on this kind of machine (2 cores).
const BASIC_RATE_BEFORE: f64 = 49.6;

/// Rows of the per-size table: label, unit, key.
const ROWS: [(&str, &str, &str); 12] = [
    ("GET /vms/:name, session", "ms", "vm_session_ms"),
    ("GET /config, no auth (floor)", "ms", "config_ms"),
    ("GET /vms, session", "ms", "vms_ms"),
    ("GET /vms/:name, Basic", "ms", "vm_basic_ms"),
    ("D-Bus Manager.GetVM", "ms", "getvm_ms"),
    ("D-Bus Peer.Ping (floor)", "ms", "ping_ms"),
    ("libvirt-dbus GetAll, one domain", "ms", "lvdbus_getall_ms"),
    (
        "libvirt-dbus GetAll, every domain",
        "dom/s",
        "lvdbus_domains_per_s",
    ),
    ("virConnectGetAllDomainStats", "ms", "bulk_stats_ms"),
    ("GET /vms/:name, session", "req/s", "vm_session_rate"),
    ("GET /config, no auth", "req/s", "config_rate"),
    ("GET /vms/:name, Basic", "req/s", "vm_basic_rate"),
];

struct Numbers(BTreeMap<String, f64>);

impl Numbers {
    fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied().filter(|v| v.is_finite())
    }

    fn at(&self, guests: usize, key: &str) -> Option<f64> {
        self.get(&format!("{guests}.{key}"))
    }

    fn rss_mib(&self, label: &str, daemon: &str) -> Option<f64> {
        self.get(&format!("mem.{label}.{daemon}.rss_kib"))
            .map(|kib| kib / 1024.0)
    }

    /// `12.3/14.0` (VmRSS/VmHWM, MiB) or `-`.
    fn memory(&self, label: &str, daemon: &str) -> String {
        let kib = |what| self.get(&format!("mem.{label}.{daemon}.{what}_kib"));
        match (kib("rss"), kib("hwm")) {
            (Some(rss), Some(hwm)) => format!("{}/{}", mib(rss), mib(hwm)),
            _ => "-".into(),
        }
    }

    /// The guest counts measured, in ascending order.
    fn sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = self
            .0
            .keys()
            .filter_map(|k| k.split_once('.')?.0.parse().ok())
            .collect();
        sizes.sort();
        sizes.dedup();
        sizes
    }
}

pub fn print(cfg: &Config) -> Result<()> {
    let n = Numbers(results::load(&cfg.results)?);
    let sizes = n.sizes();
    step(&format!(
        "summary: medians over one keep-alive connection, rates with wrk at {} connections",
        cfg.connections
    ));
    let mut head = format!("{:<36} {:>6}", "guests", "");
    for size in &sizes {
        head.push_str(&format!(" {size:>11}"));
    }
    say(&head);
    for (label, unit, key) in ROWS {
        let mut line = format!("{label:<36} {unit:>6}");
        for &size in &sizes {
            let cell = match (n.at(size, key), unit) {
                (None, _) => "-".into(),
                (Some(v), "ms") => fmt_ms(v),
                (Some(v), _) => format!("{v:.0}"),
            };
            line.push_str(&format!(" {cell:>11}"));
        }
        say(&line);
    }
    for daemon in DAEMONS {
        let mut line = format!("{:<36} {:>6}", format!("{daemon} VmRSS/VmHWM"), "MiB");
        for size in &sizes {
            line.push_str(&format!(" {:>11}", n.memory(&size.to_string(), daemon)));
        }
        say(&line);
    }
    println!();
    for (label, what) in [
        ("after-run", "after the run"),
        ("after-soak", "right after the soak"),
        ("after-tasks", "once finished tasks are gone"),
    ] {
        say(&format!(
            "memory {what:<30} kimchid {:>11}  kimchi-gateway {:>11} MiB",
            n.memory(label, "kimchid"),
            n.memory(label, "kimchi-gateway")
        ));
    }
    if let Some(guests) = n.get("changes.guests") {
        for (what, key) in [("REST", "rest"), ("D-Bus", "signal")] {
            let get = |stat: &str| n.get(&format!("changes.{key}_{stat}"));
            say(&format!(
                "state change seen over {what} at {guests} guests: p50 {}, p99 {}, {} missed",
                ms(get("p50_ms")),
                ms(get("p99_ms")),
                get("missed").unwrap_or(0.0)
            ));
        }
    }
    if let Some(calls) = n.get("soak.calls") {
        say(&format!(
            "soak: {calls} requests, {} failed; GET /tasks listed {} tasks after it, {} finished ones still after {:.0} s",
            n.get("soak.failed").unwrap_or(0.0),
            n.get("soak.tasks_listed").unwrap_or(f64::NAN),
            n.get("soak.finished_tasks_left").unwrap_or(f64::NAN),
            n.get("soak.task_wait_s").unwrap_or(f64::NAN),
        ));
    }

    let largest = sizes.last().copied();
    step(&format!(
        "targets (at {} guests)",
        largest.map_or("no".into(), |s| s.to_string())
    ));
    let checks = checks(&n, &sizes);
    for check in &checks {
        say(&check.line());
    }
    let judged: Vec<_> = checks.iter().filter_map(|c| c.pass).collect();
    say(&format!(
        "{} of {} targets met ({} not measured)",
        judged.iter().filter(|&&p| p).count(),
        judged.len(),
        checks.len() - judged.len()
    ));
    Ok(())
}

#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
    Below(f64),
}

/// One target: a measured value (usually a ratio) against its bound.
struct Check {
    what: String,
    value: Option<f64>,
    pass: Option<bool>,
    detail: String,
}

impl Check {
    fn new(what: String, value: Option<f64>, bound: Bound, detail: String) -> Check {
        let pass = value.map(|v| match bound {
            Bound::AtMost(limit) => v <= limit,
            Bound::AtLeast(limit) => v >= limit,
            Bound::Below(limit) => v < limit,
        });
        Check {
            what,
            value,
            pass,
            detail,
        }
    }

    /// Fails the check, whatever its value, unless `condition` holds.
    fn requiring(mut self, condition: bool) -> Check {
        self.pass = self.pass.map(|pass| pass && condition);
        self
    }

    fn line(&self) -> String {
        let verdict = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a ",
        };
        let value = self.value.map_or("-".into(), |v| format!("{v:.3}"));
        format!("{verdict}  {}: {value}  ({})", self.what, self.detail)
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{} ms", fmt_ms(v)))
}

fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} req/s"))
}

fn mib_of(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} MiB"))
}

fn checks(n: &Numbers, sizes: &[usize]) -> Vec<Check> {
    let top = sizes.last().copied().unwrap_or(0);
    let at = |key| n.at(top, key);
    let mut checks = vec![
        Check::new(
            "GET /vms/:name (session) median / libvirt-dbus GetAll median ≤ 0.1".into(),
            ratio(at("vm_session_ms"), at("lvdbus_getall_ms")),
            Bound::AtMost(0.1),
            format!(
                "{} / {}",
                ms(at("vm_session_ms")),
                ms(at("lvdbus_getall_ms"))
            ),
        ),
        Check::new(
            "GET /vms/:name (session) rate / GET /config rate ≥ 0.25".into(),
            ratio(at("vm_session_rate"), at("config_rate")),
            Bound::AtLeast(0.25),
            format!(
                "{} / {}",
                rate(at("vm_session_rate")),
                rate(at("config_rate"))
            ),
        ),
        Check::new(
            "D-Bus GetVM median / Ping median ≤ 3".into(),
            ratio(at("getvm_ms"), at("ping_ms")),
            Bound::AtMost(3.0),
            format!("{} / {}", ms(at("getvm_ms")), ms(at("ping_ms"))),
        ),
        Check::new(
            "GET /vms median / virConnectGetAllDomainStats median ≤ 0.5".into(),
            ratio(at("vms_ms"), at("bulk_stats_ms")),
            Bound::AtMost(0.5),
            format!("{} / {}", ms(at("vms_ms")), ms(at("bulk_stats_ms"))),
        ),
    ];
    // Linear or better: the median grows no faster than the guest count.
    if let [.., smaller, larger] = *sizes {
        let growth = larger as f64 / smaller as f64;
        checks.push(Check::new(
            format!("GET /vms median at {larger} / at {smaller} guests ≤ {growth}"),
            ratio(n.at(larger, "vms_ms"), n.at(smaller, "vms_ms")),
            Bound::AtMost(growth),
            format!(
                "{} / {}",
                ms(n.at(larger, "vms_ms")),
                ms(n.at(smaller, "vms_ms"))
            ),
        ));
    }
    checks.push(Check::new(
        format!("GET /vms/:name (Basic) rate / {BASIC_RATE_BEFORE} req/s (before) ≥ 10"),
        at("vm_basic_rate").map(|r| r / BASIC_RATE_BEFORE),
        Bound::AtLeast(10.0),
        rate(at("vm_basic_rate")),
    ));
    for (what, key) in [("REST", "rest"), ("D-Bus", "signal")] {
        let missed = n.get(&format!("changes.{key}_missed")).unwrap_or(0.0);
        // A change that never showed is slower than any p99.
        checks.push(
            Check::new(
                format!("state change seen over {what}: p99 ms ≤ 100"),
                n.get(&format!("changes.{key}_p99_ms")),
                Bound::AtMost(100.0),
                format!("{missed} changes missed"),
            )
            .requiring(missed == 0.0),
        );
    }
    for (what, label, daemon, limit) in [
        (
            "kimchid VmRSS after the run, MiB ≤ 30",
            "after-run",
            "kimchid",
            30.0,
        ),
        (
            "kimchi-gateway VmRSS after the run, MiB ≤ 20",
            "after-run",
            "kimchi-gateway",
            20.0,
        ),
        (
            "kimchid VmRSS right after the soak, MiB ≤ 64",
            "after-soak",
            "kimchid",
            64.0,
        ),
    ] {
        let v = n.rss_mib(label, daemon);
        checks.push(Check::new(what.into(), v, Bound::AtMost(limit), mib_of(v)));
    }
    // Below 40, and only once the finished tasks are really gone.
    let after_tasks = n.rss_mib("after-tasks", "kimchid");
    let left = n.get("soak.finished_tasks_left").unwrap_or(0.0);
    checks.push(
        Check::new(
            "kimchid VmRSS once finished tasks are gone, MiB < 40".into(),
            after_tasks,
            Bound::Below(40.0),
            format!(
                "{}, {left} finished tasks still listed",
                mib_of(after_tasks)
            ),
        )
        .requiring(left == 0.0),
    );
    checks
}
