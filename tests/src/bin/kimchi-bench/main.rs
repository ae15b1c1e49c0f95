//! The measurements of `tests/bench.sh`, which defines the guests, installs and starts
//! what this needs, and calls one subcommand per phase; each appends its numbers to
//! the results file (`KIMCHI_BENCH_RESULTS`) and `report` judges them all at the end.
//!
//!   kimchi-bench size N       with N bench guests defined: medians, rates, memory
//!   kimchi-bench changes N    suspend/resume one bench guest: time until REST and
//!                             D-Bus show it (N: the guests defined, for the record)
//!   kimchi-bench memory LABEL the daemons' VmRSS/VmHWM, recorded as LABEL
//!   kimchi-bench soak SECS    64 clients reading and creating; then memory and tasks
//!   kimchi-bench cleanup      removes what a soak left behind
//!   kimchi-bench report       the summary table and a PASS/FAIL line per target
//!
//! Runs as root (D-Bus calls to kimchid, libvirt, the daemons' /proc entries).

mod bus;
mod changes;
mod http;
mod libvirt;
mod memory;
mod report;
mod results;
mod sample;
mod size;
mod soak;
mod wrk;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::Target;
use sample::Plan;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// The bench guests are `kimchi-bench-0001`, `-0002`, … (tests/bench.sh defines them).
const GUEST_PREFIX: &str = "kimchi-bench-";

fn guest_name(n: usize) -> String {
    format!("{GUEST_PREFIX}{n:04}")
}

/// What tests/bench.sh passes in the environment.
struct Config {
    target: Arc<Target>,
    user: String,
    password: String,
    results: PathBuf,
    /// Seconds per wrk run, and its connections.
    wrk_secs: u32,
    connections: u32,
    plan: Plan,
    /// Suspends plus resumes timed by `changes`.
    changes: usize,
    soak_clients: usize,
    /// How long the soak waits for finished tasks to leave `GET /tasks`.
    task_wait: Duration,
}

impl Config {
    fn from_env() -> Result<Config> {
        Ok(Config {
            target: Target::new(&kimchi_tests::base_url())?,
            user: required("KIMCHI_BENCH_USER")?,
            password: required("KIMCHI_BENCH_PASSWORD")?,
            results: required("KIMCHI_BENCH_RESULTS")?.into(),
            wrk_secs: number("KIMCHI_BENCH_DURATION", 10)?,
            connections: number("KIMCHI_BENCH_CONNECTIONS", 8)?,
            plan: Plan {
                requests: number("KIMCHI_BENCH_REQUESTS", 2000)?,
                budget: Duration::from_secs(number("KIMCHI_BENCH_BUDGET", 20)?),
            },
            changes: number("KIMCHI_BENCH_CHANGES", 200)?,
            soak_clients: number("KIMCHI_BENCH_SOAK_CLIENTS", 64)?,
            task_wait: Duration::from_secs(number("KIMCHI_BENCH_TASK_WAIT", 900)?),
        })
    }
}

fn required(name: &str) -> Result<String> {
    std::env::var(name)
        .map_err(|_| format!("{name} is not set (run me from tests/bench.sh)").into())
}

fn number<T: FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

/// A heading, as tests/stack-lib.sh prints them.
fn step(what: &str) {
    println!("\n==> {what}");
}

fn say(what: &str) {
    println!("    {what}");
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("kimchi-bench: ERROR: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // libvirt would print every error it reports to stderr as well.
    virt::error::clear_error_callback();
    let cfg = Config::from_env()?;
    match args.as_slice() {
        ["size", n] => size::run(&cfg, count(n)?).await,
        ["changes", n] => changes::run(&cfg, count(n)?).await,
        ["memory", label] => memory::record(&cfg, label),
        ["soak", secs] => soak::run(&cfg, Duration::from_secs(count(secs)? as u64)).await,
        ["cleanup"] => soak::cleanup().await,
        ["report"] => report::print(&cfg),
        _ => Err(
            "usage: kimchi-bench size N | changes N | memory LABEL | soak SECS | cleanup | report"
                .into(),
        ),
    }
}

fn count(text: &str) -> Result<usize> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a count").into())
}
