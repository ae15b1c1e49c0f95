//! Run as the gateway's user by `tests/tests/gateway_link.rs`: opens kimchid's gateway
//! link, shows what it answers, then leaves the system bus and says how soon the link
//! stops answering (a link must not outlive its opener's bus name, which is polkit's
//! subject for every call on it). One line per step on stdout.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kimchi_dbus::{link_connection, CallOptions, ManagerProxy};
use zbus::proxy::CacheProperties;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match probe().await {
        Ok(code) => code,
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn probe() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let options = || CallOptions::default().to_dict();
    let bus = zbus::Connection::system().await?;
    let manager = ManagerProxy::builder(&bus)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let fd: std::os::fd::OwnedFd = manager.open_gateway_link(options()).await?.into();
    let link = link_connection(UnixStream::from(fd)).build().await?;
    let on_link = ManagerProxy::builder(&link)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    on_link.get_capabilities(options()).await?;
    println!("capabilities: answered on the link");
    match on_link.list_vms(options()).await {
        Ok(vms) => println!("ListVMs without a session: {} VMs", vms.len()),
        Err(e) => println!("ListVMs without a session: {e}"),
    }
    bus.close().await?;
    let left = Instant::now();
    while left.elapsed() < Duration::from_secs(10) {
        if let Err(e) = on_link.get_capabilities(options()).await {
            println!("after leaving the bus: link closed ({e})");
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("after leaving the bus: the link still answers after 10 s");
    Ok(ExitCode::FAILURE)
}
