//! Throughput with wrk: `connections` keep-alive connections, each sending its next
//! request as soon as the last is answered, for `secs` seconds.

use tokio::process::Command;

use crate::{say, Config, Result};

/// Runs wrk against `path` with `header` (credentials), prints its summary and
/// returns the responses per second that were 2xx/3xx: a rate of errors is no
/// throughput.
pub async fn run(cfg: &Config, what: &str, path: &str, header: Option<&str>) -> Result<f64> {
    let url = format!("{}{path}", kimchi_tests::base_url());
    let mut wrk = Command::new("wrk");
    wrk.arg(format!("-t{}", cfg.connections.min(2)))
        .arg(format!("-c{}", cfg.connections))
        .arg(format!("-d{}s", cfg.wrk_secs))
        .arg("--latency")
        .args(["-H", "Accept: application/json"]);
    if let Some(header) = header {
        wrk.args(["-H", header]);
    }
    let out = wrk.arg(&url).output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk {url} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rate: f64 = field("Requests/sec:")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output: {text}"))?;
    let not_ok: f64 = field("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    // `12345 requests in 10.00s, 2.10MB read`
    let total: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .ok_or_else(|| format!("no request count in wrk's output: {text}"))?;
    let ok_rate = if total > 0.0 {
        rate * (total - not_ok) / total
    } else {
        0.0
    };
    let mut line = format!(
        "{what:<44} {rate:>9.1} req/s at {} connections (p50 {}, p99 {})",
        cfg.connections,
        field("50%").unwrap_or("?"),
        field("99%").unwrap_or("?"),
    );
    if not_ok > 0.0 {
        line.push_str(&format!(
            ", {not_ok} of {total} responses NOT 2xx/3xx: {ok_rate:.1} ok/s"
        ));
    }
    if let Some(errors) = field("Socket errors:") {
        line.push_str(&format!(", socket errors: {errors}"));
    }
    say(&line);
    Ok(ok_rate)
}
