//! The gateway outlives kimchid: while kimchid is away it answers 503 with a JSON body,
//! and it serves again as soon as kimchid is back, without a restart. Runs on a private
//! bus with a private kimchid so the shared stack is not disturbed.

use std::process::{Command, Stdio};

use kimchi_tests::daemons::{free_port, kimchid_bin, Gateway, PrivateBus, Reaped, AS_GATEWAY_USER};
use kimchi_tests::unique_name;

fn start_kimchid(bus: &PrivateBus, dir: &std::path::Path) -> Reaped {
    Reaped(
        Command::new(kimchid_bin())
            .args(["--config", "/nonexistent/kimchid.conf"])
            .args(["--libvirt-uri", "test:///default"])
            .args(["--state-dir", dir.join("state").to_str().unwrap()])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run kimchid"),
    )
}

#[test]
fn gateway_answers_503_while_kimchid_is_away_and_recovers_without_restart() {
    let dir = std::env::temp_dir().join(unique_name("recovery"));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = PrivateBus::start(&dir);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut gw = Gateway::spawn(
        &format!("exec {AS_GATEWAY_USER}"),
        &[
            ("KIMCHI_LISTEN", &listen),
            ("DBUS_SYSTEM_BUS_ADDRESS", &bus.address),
        ],
        None,
    );
    gw.wait_for(port, "/config", 200);

    let down = gw.wait_for(port, "/config/capabilities", 503);
    assert_eq!(down["code"], "503 Service Unavailable", "{down}");
    assert_eq!(down["error"], "kimchi.gateway.KimchidUnreachable", "{down}");

    let kimchid = start_kimchid(&bus, &dir);
    let up = gw.wait_for(port, "/config/capabilities", 200);
    assert!(up["stream_protocols"].is_array(), "{up}");

    drop(kimchid);
    gw.wait_for(port, "/config/capabilities", 503);

    let _kimchid = start_kimchid(&bus, &dir);
    gw.wait_for(port, "/config/capabilities", 200);
    assert!(gw.is_running(), "the gateway must not have restarted");
    let _ = std::fs::remove_dir_all(&dir);
}
