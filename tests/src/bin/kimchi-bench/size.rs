//! Everything measured at one number of defined guests, each against its anchor:
//! the gateway's floor (`GET /config`), D-Bus's floor (Ping), libvirt-dbus's
//! per-guest read and libvirt's bulk statistics call.

use std::time::{Duration, Instant};

use crate::http::{basic_header, Client};
use crate::libvirt::Libvirt;
use crate::sample::{sample, Samples};
use crate::{bus, guest_name, memory, results, say, step, wrk, Config, Result, GUEST_PREFIX};

/// How long kimchid may take to learn of newly defined guests.
const LIST_WAIT: Duration = Duration::from_secs(600);

pub async fn run(cfg: &Config, guests: usize) -> Result<()> {
    let record =
        |key: &str, value: f64| results::record(&cfg.results, &format!("{guests}.{key}"), value);
    let show = |what: &str, key: &str, s: &Samples| -> Result<()> {
        say(&format!("{what:<44} {}", s.describe()));
        record(key, s.median_ms())
    };
    let name = guest_name(guests.div_ceil(2));
    let vm = format!("/vms/{name}");

    step(&format!(
        "{guests} guests: waiting for GET /vms to list them"
    ));
    let mut web = Client::session(&cfg.target, &cfg.user, &cfg.password).await?;
    let listed = wait_until_listed(&mut web, guests).await?;

    step(&format!(
        "{guests} guests: medians, one connection, calls in sequence (:name = {name})"
    ));
    let s = sample(&cfg.plan, async || web.get_ok(&vm).await.map(drop)).await?;
    show("GET /vms/:name (session)", "vm_session_ms", &s)?;
    let mut anonymous = Client::anonymous(&cfg.target).await?;
    let s = sample(&cfg.plan, async || {
        anonymous.get_ok("/config").await.map(drop)
    })
    .await?;
    show("GET /config (no auth)", "config_ms", &s)?;
    let s = sample(&cfg.plan, async || web.get_ok("/vms").await.map(drop)).await?;
    show(
        &format!("GET /vms ({listed} guests, session)"),
        "vms_ms",
        &s,
    )?;
    let mut basic = Client::basic(&cfg.target, &cfg.user, &cfg.password).await?;
    let s = sample(&cfg.plan, async || basic.get_ok(&vm).await.map(drop)).await?;
    show("GET /vms/:name (Basic)", "vm_basic_ms", &s)?;

    let conn = zbus::Connection::system().await?;
    let manager = bus::manager(&conn).await?;
    let s = sample(&cfg.plan, async || {
        manager.get_vm(&name, bus::Options::new()).await?;
        Ok(())
    })
    .await?;
    show("D-Bus Manager.GetVM (root)", "getvm_ms", &s)?;
    let s = sample(&cfg.plan, async || bus::ping_kimchid(&conn).await).await?;
    show("D-Bus Peer.Ping to kimchid (root)", "ping_ms", &s)?;

    let domain = bus::libvirt_dbus_domain(&conn, &name).await?;
    let s = sample(&cfg.plan, async || {
        bus::libvirt_dbus_get_all(&conn, &domain).await
    })
    .await?;
    show(
        "libvirt-dbus GetAll(org.libvirt.Domain)",
        "lvdbus_getall_ms",
        &s,
    )?;
    let domains = bus::libvirt_dbus_domains(&conn).await?;
    let start = Instant::now();
    let mut read = 0;
    // What a guest list through libvirt-dbus costs: one GetAll per domain.
    for domain in &domains {
        bus::libvirt_dbus_get_all(&conn, domain).await?;
        read += 1;
        if start.elapsed() > cfg.plan.budget {
            break;
        }
    }
    let rate = read as f64 / start.elapsed().as_secs_f64();
    say(&format!(
        "{:<44} {rate:.0} domains/s ({read} of {} domains, one after another)",
        "libvirt-dbus GetAll over every domain",
        domains.len()
    ));
    record("lvdbus_domains_per_s", rate)?;

    let libvirt = Libvirt::open()?;
    let mut reported = 0;
    let s = sample(&cfg.plan, async || {
        reported = tokio::task::block_in_place(|| libvirt.all_domain_stats())?;
        Ok(())
    })
    .await?;
    show(
        &format!("virConnectGetAllDomainStats ({reported} domains)"),
        "bulk_stats_ms",
        &s,
    )?;

    step(&format!(
        "{guests} guests: throughput, wrk, {} s per run",
        cfg.wrk_secs
    ));
    let rate = wrk::run(cfg, "GET /config (no auth)", "/config", None).await?;
    record("config_rate", rate)?;
    let cookie = web.cookie_header().ok_or("the web client has no session")?;
    let rate = wrk::run(cfg, "GET /vms/:name (session)", &vm, Some(&cookie)).await?;
    record("vm_session_rate", rate)?;
    let credentials = basic_header(&cfg.user, &cfg.password)?;
    let header = format!("Authorization: {}", credentials.to_str()?);
    let rate = wrk::run(cfg, "GET /vms/:name (Basic)", &vm, Some(&header)).await?;
    record("vm_basic_rate", rate)?;

    web.logout().await;
    memory::record(cfg, &guests.to_string())
}

/// Polls `GET /vms` until it lists at least `guests` bench guests (kimchid learns of
/// them from libvirt's events); returns how many guests it lists in all.
async fn wait_until_listed(web: &mut Client, guests: usize) -> Result<usize> {
    let start = Instant::now();
    loop {
        let list = web.get_ok("/vms").await?.json()?;
        let all = list.as_array().ok_or("GET /vms is not a list")?;
        let bench = all
            .iter()
            .filter(|vm| {
                vm["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(GUEST_PREFIX))
            })
            .count();
        if bench >= guests {
            say(&format!(
                "GET /vms lists {} guests, {bench} of them {GUEST_PREFIX}* (waited {:.1} s)",
                all.len(),
                start.elapsed().as_secs_f64()
            ));
            return Ok(all.len());
        }
        if start.elapsed() > LIST_WAIT {
            return Err(format!(
                "GET /vms lists only {bench} of {guests} bench guests after {LIST_WAIT:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
