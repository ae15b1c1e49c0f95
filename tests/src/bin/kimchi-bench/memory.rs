//! The daemons' memory as the kernel counts it: VmRSS (resident now) and VmHWM (the
//! most it was resident), from /proc/<pid>/status.

use crate::{results, say, step, Config, Result};

pub const DAEMONS: [&str; 2] = ["kimchid", "kimchi-gateway"];

/// Prints and records both daemons' memory under `label`.
pub fn record(cfg: &Config, label: &str) -> Result<()> {
    step(&format!("memory: {label}"));
    for daemon in DAEMONS {
        let Some(pid) = newest_process(daemon)? else {
            say(&format!("{daemon} is not running"));
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |field: &str| -> Result<f64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
        };
        let (rss, hwm) = (kib("VmRSS:")?, kib("VmHWM:")?);
        say(&format!(
            "{daemon:<15} (PID {pid:>6}) VmRSS {} MiB, VmHWM {} MiB",
            mib(rss),
            mib(hwm)
        ));
        results::record(&cfg.results, &format!("mem.{label}.{daemon}.rss_kib"), rss)?;
        results::record(&cfg.results, &format!("mem.{label}.{daemon}.hwm_kib"), hwm)?;
    }
    Ok(())
}

pub fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

/// The most recently started process named `comm` (as `pgrep -n` picks).
fn newest_process(comm: &str) -> Result<Option<u32>> {
    let mut newest: Option<(u64, u32)> = None;
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes may end while this looks.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state …`: the comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != comm {
            continue;
        }
        // starttime is the 22nd field; the 3rd (state) follows ") ".
        let started: u64 = stat[close + 2..]
            .split_whitespace()
            .nth(19)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if newest.is_none_or(|(t, _)| started > t) {
            newest = Some((started, pid));
        }
    }
    Ok(newest.map(|(_, pid)| pid))
}
