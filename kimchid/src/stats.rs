//! Activity rates of the running guests, from successive samples of libvirt's
//! cumulative counters, with the original Kimchi's formulas and units.

use std::collections::HashMap;
use std::time::Instant;

use kimchi_dbus::VmStats;

use crate::engine::hypervisor::DomainCounters;

/// Remembers each running domain's last sample and peaks between updates.
pub struct Sampler {
    last: HashMap<String, Last>,
}

struct Last {
    at: Instant,
    counters: DomainCounters,
    net_peak: f64,
    io_peak: f64,
}

impl Sampler {
    pub fn new() -> Self {
        Sampler {
            last: HashMap::new(),
        }
    }

    /// The rates since the previous update, keyed by UUID, for exactly the domains in
    /// `counters`; any other domain stopped, so its history is dropped.
    pub fn update(
        &mut self,
        now: Instant,
        counters: &[DomainCounters],
    ) -> HashMap<String, VmStats> {
        let mut previous = std::mem::take(&mut self.last);
        let mut rates = HashMap::with_capacity(counters.len());
        for c in counters {
            let mut stats = VmStats::default();
            if let Some(prev) = previous.remove(&c.uuid) {
                stats.net_throughput_peak = prev.net_peak;
                stats.io_throughput_peak = prev.io_peak;
                let secs = now.saturating_duration_since(prev.at).as_secs_f64();
                if secs > 0.0 {
                    // A counter that went backwards (guest restarted) gives 0, not a wrap.
                    let p = &prev.counters;
                    let cpu_ns = c.cpu_time_ns.saturating_sub(p.cpu_time_ns) as f64;
                    let net = c.net_bytes.saturating_sub(p.net_bytes) as f64;
                    let io = c.block_bytes.saturating_sub(p.block_bytes) as f64;
                    // Busy time over all vCPUs; jitter in the sampling can overshoot.
                    stats.cpu_utilization =
                        (cpu_ns / (secs * 1e9) * 100.0 / f64::from(c.vcpus.max(1))).min(100.0);
                    stats.net_throughput = net / 1000.0 / secs;
                    stats.io_throughput = io / 1024.0 / secs;
                }
            }
            stats.net_throughput_peak = stats.net_throughput_peak.max(stats.net_throughput);
            stats.io_throughput_peak = stats.io_throughput_peak.max(stats.io_throughput);
            self.last.insert(
                c.uuid.clone(),
                Last {
                    at: now,
                    counters: c.clone(),
                    net_peak: stats.net_throughput_peak,
                    io_peak: stats.io_throughput_peak,
                },
            );
            rates.insert(c.uuid.clone(), stats);
        }
        rates
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn counters(uuid: &str, cpu_time_ns: u64, vcpus: u32, net: u64, block: u64) -> DomainCounters {
        DomainCounters {
            uuid: uuid.to_owned(),
            cpu_time_ns,
            vcpus,
            net_bytes: net,
            block_bytes: block,
        }
    }

    /// A sampler fed at whole seconds after one start.
    struct Series {
        sampler: Sampler,
        start: Instant,
    }

    impl Series {
        fn new() -> Self {
            Series {
                sampler: Sampler::new(),
                start: Instant::now(),
            }
        }

        /// The rates from a sample of `domains` taken `secs` seconds after the start.
        fn at(&mut self, secs: u64, domains: &[DomainCounters]) -> HashMap<String, VmStats> {
            let now = self.start + Duration::from_secs(secs);
            self.sampler.update(now, domains)
        }
    }

    #[test]
    fn first_sample_has_zero_rates_and_default_peaks() {
        let mut s = Series::new();
        let rates = s.at(0, &[counters("a", 5_000_000_000, 2, 1 << 30, 1 << 30)]);
        assert_eq!(rates.len(), 1);
        assert_eq!(rates["a"], VmStats::default());
    }

    #[test]
    fn steady_rates_per_second() {
        let mut s = Series::new();
        s.at(0, &[counters("a", 1_000_000_000, 2, 10_000, 20_480)]);
        // Over 2 s: 1 s of CPU on 2 vCPUs, 400 kB sent, 600 KiB written.
        let written = 20_480 + 614_400;
        let rates = s.at(2, &[counters("a", 2_000_000_000, 2, 410_000, written)]);
        let a = rates["a"];
        assert_eq!(a.cpu_utilization, 25.0);
        assert_eq!(a.net_throughput, 200.0);
        assert_eq!(a.io_throughput, 300.0);
        assert_eq!(a.net_throughput_peak, 200.0);
        assert_eq!(a.io_throughput_peak, 300.0);
    }

    #[test]
    fn cpu_is_clamped_at_100() {
        let mut s = Series::new();
        s.at(0, &[counters("a", 0, 1, 0, 0)]);
        let rates = s.at(1, &[counters("a", 3_000_000_000, 1, 0, 0)]);
        assert_eq!(rates["a"].cpu_utilization, 100.0);
    }

    #[test]
    fn counter_reset_gives_zero_then_counts_from_the_new_base() {
        let mut s = Series::new();
        s.at(0, &[counters("a", 9_000_000_000, 1, 900_000, 900_000)]);
        let reset = s.at(1, &[counters("a", 100, 1, 1_000, 1_024)]);
        assert_eq!(reset["a"], VmStats::default());
        let after = s.at(2, &[counters("a", 500_000_100, 1, 2_000, 2_048)]);
        let a = after["a"];
        assert_eq!(
            (a.cpu_utilization, a.net_throughput, a.io_throughput),
            (50.0, 1.0, 1.0)
        );
    }

    #[test]
    fn peak_keeps_the_highest_rate() {
        let mut s = Series::new();
        s.at(0, &[counters("a", 0, 1, 0, 0)]);
        s.at(1, &[counters("a", 0, 1, 500_000, 512 * 1024)]);
        let quiet = s.at(2, &[counters("a", 0, 1, 510_000, 522 * 1024)])["a"];
        assert_eq!(
            (quiet.net_throughput, quiet.net_throughput_peak),
            (10.0, 500.0)
        );
        assert_eq!(
            (quiet.io_throughput, quiet.io_throughput_peak),
            (10.0, 512.0)
        );
    }

    #[test]
    fn absent_domain_is_forgotten() {
        let mut s = Series::new();
        let idle = |uuid| counters(uuid, 0, 1, 0, 0);
        s.at(0, &[idle("a"), idle("b")]);
        s.at(1, &[counters("a", 0, 1, 900_000, 0), idle("b")]);
        let rates = s.at(2, &[idle("b")]);
        assert!(!rates.contains_key("a"));
        assert_eq!(rates.len(), 1);
        // Back again: a fresh start, neither a rate from the old sample nor its peak.
        let back = s.at(3, &[counters("a", 0, 1, 2_000_000, 0), idle("b")]);
        assert_eq!(back["a"], VmStats::default());
    }
}
