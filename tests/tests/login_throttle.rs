//! Failed logins are throttled per client address and per user name at it, answered
//! at once with 429 and `Retry-After`, while other clients' logins and Basic calls go
//! on being served (issue #14). Latencies are printed (`--nocapture`), bounded only
//! generously (a valid login took ~23 s during such a burst before).
//!
//! Clients take source addresses in 127/8 (loopback accepts any of them; the gateway
//! listens on the dual-stack wildcard), picked fresh per run: the other test binaries
//! come from 127.0.0.1, and neither they nor a run minutes ago may share counters
//! with these.

use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kimchi_tests::{ensure_test_users, request, unique_name, Request, Response, READER};
use serde_json::json;

/// Concurrent wrong-password requests in a burst.
const BURST: usize = 50;
/// Well above what the gateway answers in now, well below the ~23 s of before.
const GENEROUS: Duration = Duration::from_secs(10);

/// A source address no other test binary or earlier run uses: 127.a.b.c with `a` ≥ 100.
fn fresh_address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let seed = (secs as u32) ^ std::process::id().rotate_left(16);
    let a = 100 + seed % 150;
    let b = (seed / 150) % 256;
    format!("127.{a}.{b}.{n}")
}

/// `request` sent from `address`.
fn from(address: &str, req: Request) -> Request {
    req.arg("--interface").arg(address)
}

fn login_from(address: &str, user: &str, password: &str) -> Request {
    from(
        address,
        request("POST", "/login").json(&json!({"username": user, "password": password})),
    )
}

fn basic_get_from(address: &str, user: &str, password: &str, path: &str) -> Request {
    from(address, request("GET", path).basic_auth(user, password))
}

/// Sends and times a request.
fn timed(req: Request) -> (Response, Duration) {
    let started = Instant::now();
    let resp = req.send();
    (resp, started.elapsed())
}

/// Sends all `requests` at once; their answers and latencies, in order.
fn concurrently(requests: Vec<Request>) -> Vec<(Response, Duration)> {
    let threads: Vec<_> = requests
        .into_iter()
        .map(|req| thread::spawn(move || timed(req)))
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The seconds a 429 says to wait, after checking it is the gateway's JSON error.
#[track_caller]
fn retry_after(resp: &Response) -> u64 {
    let doc = resp.assert_error(429);
    assert_eq!(doc["error"], "kimchi.gateway.Throttled", "{doc}");
    let secs: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {resp:?}"));
    assert!((1..=60).contains(&secs), "{resp:?}");
    secs
}

/// Counts 401s and 429s of a burst (checking every answer is one of them), prints
/// what each took, and returns the counts.
#[track_caller]
fn tally(what: &str, answers: &[(Response, Duration)]) -> (usize, usize) {
    let mut refused = Vec::new();
    let mut throttled = Vec::new();
    for (resp, took) in answers {
        match resp.status {
            401 => {
                resp.assert_error(401);
                refused.push(*took);
            }
            429 => {
                retry_after(resp);
                throttled.push(*took);
            }
            _ => panic!("{what}: neither 401 nor 429: {resp:?}"),
        }
    }
    let span = |v: &[Duration]| {
        let min = v.iter().min().copied().unwrap_or_default();
        let max = v.iter().max().copied().unwrap_or_default();
        format!("{min:.2?}..{max:.2?}")
    };
    println!(
        "{what}: {} × 401 in {}, {} × 429 in {}",
        refused.len(),
        span(&refused),
        throttled.len(),
        span(&throttled)
    );
    (refused.len(), throttled.len())
}

#[test]
fn a_wrong_password_burst_is_throttled_while_other_clients_are_served() {
    ensure_test_users();
    let attacker = fresh_address();
    let other = fresh_address();

    // 50 wrong passwords for a real user from one address, all at once…
    let burst: Vec<Request> = (0..BURST)
        .map(|i| login_from(&attacker, READER.name, &format!("wrong-{i}")))
        .collect();
    let burst = thread::spawn(move || concurrently(burst));
    // …and meanwhile that user logs in from another address, and calls with Basic.
    thread::sleep(Duration::from_millis(300));
    let (login, login_took) = timed(login_from(&other, READER.name, READER.password));
    let (basic, basic_took) = timed(basic_get_from(&other, READER.name, READER.password, "/vms"));
    println!("during the burst: POST /login {login_took:.2?}, Basic GET /vms {basic_took:.2?}");
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(basic.status, 200, "{basic:?}");
    assert!(login_took < GENEROUS, "login took {login_took:?}");
    assert!(basic_took < GENEROUS, "Basic GET took {basic_took:?}");

    let answers = burst.join().unwrap();
    let (refused, throttled) = tally("same-user burst", &answers);
    assert!(refused >= 1, "some passwords were checked (401)");
    assert!(throttled >= 1, "the rest were throttled (429)");
    // The 429s were answered at once, without waiting for PAM's failure delay.
    let fastest_refusal = answers
        .iter()
        .filter(|(r, _)| r.status == 401)
        .map(|(_, took)| *took)
        .min()
        .unwrap();
    let slowest_throttle = answers
        .iter()
        .filter(|(r, _)| r.status == 429)
        .map(|(_, took)| *took)
        .max()
        .unwrap();
    println!("fastest 401 {fastest_refusal:.2?}, slowest 429 {slowest_throttle:.2?}");

    // The attacked address is throttled for this user, even with the right password…
    let (resp, _) = timed(login_from(&attacker, READER.name, READER.password));
    let mut wait = retry_after(&resp);
    // …until the wait it was told is over: then the user logs in from there again.
    let started = Instant::now();
    let resp = loop {
        thread::sleep(Duration::from_secs(wait));
        let (resp, _) = timed(login_from(&attacker, READER.name, READER.password));
        if resp.status != 429 || started.elapsed() > Duration::from_secs(180) {
            break resp;
        }
        wait = retry_after(&resp);
    };
    println!(
        "the attacked address logged in again after {:.1?}",
        started.elapsed()
    );
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn a_burst_cycling_user_names_is_throttled_per_address() {
    ensure_test_users();
    let attacker = fresh_address();
    let other = fresh_address();

    // Every request a different user name, half of them logins, half Basic calls.
    let guess = |i: usize| {
        let user = unique_name(&format!("nobody{i}"));
        if i.is_multiple_of(2) {
            login_from(&attacker, &user, "guess")
        } else {
            basic_get_from(&attacker, &user, "guess", "/vms")
        }
    };
    let answers = concurrently((0..BURST).map(guess).collect());
    let (refused, throttled) = tally("user-cycling burst", &answers);
    assert!(refused >= 1, "some passwords were checked (401)");
    assert!(
        throttled >= 1,
        "a burst from one address is throttled (429)"
    );

    // Once the address has failed that often, a second wave gets fewer through.
    let answers = concurrently((BURST..BURST + 20).map(guess).collect());
    let (second_refused, second_throttled) = tally("second wave", &answers);
    assert!(second_throttled >= 1, "the second wave is throttled");
    assert!(second_refused < refused, "{second_refused} ≥ {refused}");

    // The real user at another address is not concerned.
    let (resp, took) = timed(login_from(&other, READER.name, READER.password));
    println!("a valid login from another address: {took:.2?}");
    assert_eq!(resp.status, 200, "{resp:?}");
}
