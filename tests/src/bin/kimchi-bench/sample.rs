//! Timing a call many times in a row and summarising the times.

use std::time::{Duration, Instant};

use crate::Result;

/// How many timed calls a median is taken over: `requests`, unless they take longer
/// than `budget` (GET /vms with a thousand guests, Basic logins), then as many as fit
/// but at least [`MIN_SAMPLES`].
pub struct Plan {
    pub requests: usize,
    pub budget: Duration,
}

const MIN_SAMPLES: usize = 30;

/// Calls `call` untimed a tenth as often first (connections, caches and the
/// allocator settle), then times each call.
pub async fn sample(plan: &Plan, mut call: impl AsyncFnMut() -> Result<()>) -> Result<Samples> {
    let warm_up = Instant::now();
    for _ in 0..(plan.requests / 10).max(1) {
        call().await?;
        if warm_up.elapsed() > plan.budget / 4 {
            break;
        }
    }
    let start = Instant::now();
    let mut times = Vec::with_capacity(plan.requests);
    while times.len() < plan.requests
        && (times.len() < MIN_SAMPLES || start.elapsed() < plan.budget)
    {
        let t = Instant::now();
        call().await?;
        times.push(t.elapsed());
    }
    Ok(Samples::new(times))
}

/// Durations, sorted.
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut times: Vec<Duration>) -> Samples {
        times.sort();
        Samples(times)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The nearest-rank percentile `p` (0–100), in ms; NaN when there are none.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0 * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        ms(self.0[rank - 1])
    }

    pub fn median_ms(&self) -> f64 {
        self.percentile_ms(50.0)
    }

    /// `median 0.81 ms, p99 1.90 ms (n=2000)`.
    pub fn describe(&self) -> String {
        format!(
            "median {} ms, p99 {} ms (n={})",
            fmt_ms(self.median_ms()),
            fmt_ms(self.percentile_ms(99.0)),
            self.len()
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Three significant digits or so.
pub fn fmt_ms(ms: f64) -> String {
    match ms {
        x if x < 1.0 => format!("{x:.3}"),
        x if x < 10.0 => format!("{x:.2}"),
        x if x < 100.0 => format!("{x:.1}"),
        x => format!("{x:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        Samples::new(ms.iter().map(|&m| Duration::from_millis(m)).collect())
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = samples(&[5, 1, 4, 2, 3]);
        assert_eq!(s.median_ms(), 3.0);
        assert_eq!(s.percentile_ms(99.0), 5.0);
        assert_eq!(s.percentile_ms(0.0), 1.0);
        let hundred = samples(&(1..=100).collect::<Vec<_>>());
        assert_eq!(hundred.percentile_ms(99.0), 99.0);
        assert!(samples(&[]).median_ms().is_nan());
    }
}
