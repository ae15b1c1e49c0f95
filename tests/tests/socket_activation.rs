//! The gateway serves HTTPS from a socket systemd hands it (`LISTEN_FDS`), even in a
//! network namespace of its own — what `PrivateNetwork=yes` gives it — and binds
//! its own socket when none is handed over.

use std::net::TcpListener;

use kimchi_tests::daemons::{free_port, Gateway, AS_GATEWAY_USER};

#[test]
fn gateway_serves_inherited_socket_from_its_own_network_namespace() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gw = Gateway::spawn(
        &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec unshare --net {AS_GATEWAY_USER}"),
        &[],
        Some(&listener),
    );
    let config = gw.wait_for(port, "/config", 200);
    assert_eq!(config["http_port"], port);
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let its = std::fs::read_link(format!("/proc/{}/ns/net", gw.pid())).unwrap();
    assert_ne!(its, own, "the gateway must run in another netns");
}

#[test]
fn gateway_binds_its_own_socket_without_socket_activation() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = Gateway::spawn(
        &format!("exec {AS_GATEWAY_USER}"),
        &[("KIMCHI_LISTEN", &listen)],
        None,
    );
    assert_eq!(gw.wait_for(port, "/config", 200)["http_port"], port);
}
