//! The gateway's TLS versions and the privileges it runs with.

use kimchi_tests::request;

#[test]
fn tls_1_1_is_refused_by_the_server() {
    // SECLEVEL=0 lets this client offer TLS 1.1 at all, so a failure is the server's doing.
    let err = request("GET", "/config")
        .arg("--tlsv1.1")
        .arg("--tls-max")
        .arg("1.1")
        .arg("--ciphers")
        .arg("DEFAULT:@SECLEVEL=0")
        .try_send()
        .expect_err("TLS 1.1 handshake must fail");
    // OpenSSL names an alert the server sent ("tlsv1 alert protocol version",
    // "sslv3 alert handshake failure"); a refusal by the client itself has no alert.
    assert!(err.contains(" alert "), "{err}");
}

#[test]
fn tls_1_2_is_accepted() {
    let resp = request("GET", "/config")
        .arg("--tlsv1.2")
        .arg("--tls-max")
        .arg("1.2")
        .send();
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn tls_1_3_is_accepted() {
    let resp = request("GET", "/config").arg("--tlsv1.3").send();
    assert_eq!(resp.status, 200, "{resp:?}");
}

/// `/proc/<pid>/status` of the running gateway, found by its pid file or by name.
fn gateway_status() -> String {
    let from_pid_file = std::fs::read_to_string("/run/kimchi/gateway.pid")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|pid| comm(*pid).as_deref() == Some("kimchi-gateway"));
    let pid = from_pid_file
        .or_else(|| {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .find(|pid| comm(*pid).as_deref() == Some("kimchi-gateway"))
        })
        .expect("a running kimchi-gateway process");
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

fn comm(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// The whitespace-separated values of a `/proc/<pid>/status` field.
fn field<'a>(status: &'a str, name: &str) -> Vec<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .split_whitespace()
        .collect()
}

#[test]
fn gateway_runs_as_a_non_root_user() {
    let status = gateway_status();
    let uids = field(&status, "Uid");
    // real, effective, saved set, filesystem
    assert!(uids.iter().all(|uid| *uid != "0"), "Uid: {uids:?}");
}

#[test]
fn gateway_holds_no_capabilities() {
    let status = gateway_status();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let value = field(&status, set);
        assert_eq!(value, ["0000000000000000"], "{set}");
    }
}
