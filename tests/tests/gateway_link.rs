//! The gateway's link to kimchid (`Manager.OpenGatewayLink`): only the gateway's user
//! gets one; calls on it are judged as the gateway's calls on the bus; web requests
//! travel over it, not through the bus daemon; and it closes when its opener leaves
//! the bus (its bus name is polkit's subject for every call on the link).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{expect, Web};
use kimchi_tests::{as_gateway_user, gdbus_call, manager_call, run};

#[test]
fn only_the_gateways_user_may_open_a_link() {
    let ran = gdbus_call(
        false,
        kimchi_dbus::MANAGER_PATH,
        "org.kimchi.Kimchi1.Manager.OpenGatewayLink",
        &["{}"],
    );
    assert!(!ran.ok, "root got a link: {ran:?}");
    assert!(
        ran.stderr
            .contains("org.kimchi.Kimchi1.Error.NotAuthorized")
            && ran
                .stderr
                .contains("only the gateway's user may open a gateway link, not uid 0"),
        "{ran:?}"
    );
}

#[test]
fn a_link_serves_the_gateway_as_the_bus_does_and_closes_when_it_leaves_the_bus() {
    let probe = env!("CARGO_BIN_EXE_kimchi-link-probe");
    let ran = run(&mut as_gateway_user(&[probe]));
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(ran.ok, "{ran:?}");
    assert_eq!(lines[0], "capabilities: answered on the link", "{ran:?}");
    // The gateway has no authority of its own, on the link as on the bus.
    assert!(
        lines[1].starts_with("ListVMs without a session: ")
            && lines[1].contains("calls from the gateway must carry a web session"),
        "{ran:?}"
    );
    assert!(
        lines[2].starts_with("after leaving the bus: link closed"),
        "{ran:?}"
    );
}

#[test]
fn web_requests_do_not_cross_the_bus() {
    let web = Web::admin();
    // Everything sent to or from kimchid on the system bus, while the test runs.
    let mut monitor = Command::new("busctl")
        .args(["--system", "monitor", "--json=short", kimchi_dbus::BUS_NAME])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("busctl monitor");
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..5 {
        expect(web.get("/vms"), 200, "list VMs");
    }
    // The same read made on the bus: the monitor sees it.
    manager_call("ListVMs", "a{sv}", &["0"]).expect_ok();
    std::thread::sleep(Duration::from_secs(1));
    let _ = monitor.kill();
    let calls: Vec<serde_json::Value> = BufReader::new(monitor.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .filter(|m: &serde_json::Value| m["type"] == "method_call" && m["member"] == "ListVMs")
        .collect();
    let _ = monitor.wait();
    assert_eq!(
        calls.len(),
        1,
        "only busctl's ListVMs crosses the bus: {calls:?}"
    );
}
