//! The model: hypervisor events turned into model updates and announced changes,
//! with no re-read for what the model shows already, and what connecting does.

use kimchi_dbus::{PoolState, ScreenshotSupport, VmState};

use super::{adopt, assert_error, drain, engine_over, libvirt};
use crate::engine::hypervisor::{DomainEvent, HostEvent, Hypervisor};
use crate::engine::model::Change;
use crate::engine::sim::{harness, Sim};

fn domain(uuid: &str, event: DomainEvent) -> HostEvent {
    HostEvent::Domain {
        uuid: uuid.into(),
        event,
    }
}

// ---- domain events ----

#[tokio::test]
async fn became_the_state_the_model_shows_is_not_re_read_and_changes_nothing() {
    let mut h = harness().await;
    let uuid = adopt(&h, "web", VmState::Running).await;
    drain(&mut h.changes);
    let reads = h.sim.calls("domain");
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Became(VmState::Running)))
        .await;
    assert_eq!(h.sim.calls("domain"), reads);
    assert!(drain(&mut h.changes).is_empty());
}

#[tokio::test]
async fn became_another_state_re_reads_and_announces_the_change() {
    let mut h = harness().await;
    let uuid = adopt(&h, "web", VmState::Running).await;
    drain(&mut h.changes);
    h.sim.set_state(&uuid, VmState::Paused);
    let reads = h.sim.calls("domain");
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Became(VmState::Paused)))
        .await;
    assert_eq!(h.sim.calls("domain"), reads + 1);
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Paused);
    assert_eq!(drain(&mut h.changes), [Change::VmChanged(uuid)]);
}

#[tokio::test]
async fn became_is_recorded_as_libvirt_reports_it_not_as_the_event_says() {
    let mut h = harness().await;
    let uuid = adopt(&h, "web", VmState::Running).await;
    drain(&mut h.changes);
    // A stale event: the guest was paused and resumed since.
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Became(VmState::Paused)))
        .await;
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Running);
    assert!(drain(&mut h.changes).is_empty());
}

#[tokio::test]
async fn undefined_for_an_unknown_domain_does_nothing() {
    let mut h = harness().await;
    drain(&mut h.changes);
    let reads = h.sim.calls("domain");
    h.engine
        .model
        .apply(domain(
            "00000000-0000-4000-8000-999999999999",
            DomainEvent::Undefined,
        ))
        .await;
    assert_eq!(h.sim.calls("domain"), reads);
    assert!(drain(&mut h.changes).is_empty());
}

#[tokio::test]
async fn undefined_for_a_known_domain_re_reads_and_removes_it() {
    let mut h = harness().await;
    let uuid = adopt(&h, "web", VmState::Shutoff).await;
    drain(&mut h.changes);
    h.sim.undefine(&uuid).unwrap();
    let reads = h.sim.calls("domain");
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Undefined))
        .await;
    assert_eq!(h.sim.calls("domain"), reads + 1);
    assert_error!(h.engine.vms.get("web"), NotFound, "no VM named 'web'");
    assert_eq!(drain(&mut h.changes), [Change::VmRemoved(uuid)]);
}

#[tokio::test]
async fn undefined_of_a_domain_defined_again_meanwhile_keeps_it() {
    // Undefine then define under the same UUID: the re-read finds it, so it stays.
    let mut h = harness().await;
    let uuid = adopt(&h, "web", VmState::Shutoff).await;
    drain(&mut h.changes);
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Undefined))
        .await;
    assert!(h.engine.vms.get("web").is_ok());
    assert!(drain(&mut h.changes).is_empty());
}

#[tokio::test]
async fn changed_always_re_reads() {
    let mut h = harness().await;
    let uuid = adopt(&h, "web", VmState::Shutoff).await;
    drain(&mut h.changes);
    let reads = h.sim.calls("domain");
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Changed))
        .await;
    assert_eq!(h.sim.calls("domain"), reads + 1);
    // Nothing differed, so nothing is announced.
    assert!(drain(&mut h.changes).is_empty());
}

#[tokio::test]
async fn a_domain_defined_behind_our_back_appears_after_its_event() {
    let mut h = harness().await;
    drain(&mut h.changes);
    let uuid = h.sim.add_domain("web", VmState::Shutoff);
    assert_error!(h.engine.vms.get("web"), NotFound, "no VM named 'web'");
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Changed))
        .await;
    let vm = h.engine.vms.get("web").unwrap();
    assert_eq!(
        (vm.uuid.as_str(), vm.state),
        (uuid.as_str(), VmState::Shutoff)
    );
    assert_eq!(drain(&mut h.changes), [Change::VmAdded(uuid)]);
}

#[tokio::test]
async fn a_failed_re_read_leaves_the_model_as_it_was() {
    let mut h = harness().await;
    let uuid = adopt(&h, "web", VmState::Running).await;
    drain(&mut h.changes);
    h.sim.set_state(&uuid, VmState::Shutoff);
    h.sim.fail_next("domain", libvirt("connection reset"));
    h.engine
        .model
        .apply(domain(&uuid, DomainEvent::Became(VmState::Shutoff)))
        .await;
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Running);
    assert!(drain(&mut h.changes).is_empty());
}

// ---- pool events ----

#[tokio::test]
async fn a_pool_event_for_a_new_pool_adds_it() {
    let mut h = harness().await;
    drain(&mut h.changes);
    let uuid = h.sim.add_pool("p1", "dir", false);
    let reads = h.sim.calls("pool");
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.clone() })
        .await;
    assert_eq!(h.sim.calls("pool"), reads + 1);
    assert_eq!(
        h.engine.model.pool_by_name("p1").unwrap().state,
        PoolState::Inactive
    );
    assert_eq!(drain(&mut h.changes), [Change::PoolAdded(uuid)]);
}

#[tokio::test]
async fn a_pool_event_re_reads_a_changed_pool() {
    let mut h = harness().await;
    let uuid = h.sim.add_pool("p1", "dir", false);
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.clone() })
        .await;
    drain(&mut h.changes);
    h.sim.activate_pool("p1").unwrap();
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.clone() })
        .await;
    assert_eq!(
        h.engine.model.pool_by_name("p1").unwrap().state,
        PoolState::Active
    );
    assert_eq!(drain(&mut h.changes), [Change::PoolChanged(uuid)]);
}

#[tokio::test]
async fn a_pool_started_outside_kimchid_brings_its_iso_images_into_the_view() {
    let h = harness().await;
    let uuid = h.sim.add_pool("p1", "dir", false);
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.clone() })
        .await;
    h.sim.activate_pool("p1").unwrap();
    h.sim.add_volume("p1", "install.iso", "iso", 10);
    h.engine.model.apply(HostEvent::Pool { uuid }).await;
    let isos: Vec<String> = h.engine.model.isos().into_iter().map(|v| v.name).collect();
    assert_eq!(isos, ["install.iso"]);
}

#[tokio::test]
async fn a_pool_event_for_a_pool_gone_removes_it() {
    let mut h = harness().await;
    let uuid = h.sim.add_pool("p1", "dir", false);
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.clone() })
        .await;
    drain(&mut h.changes);
    h.sim.undefine_pool("p1").unwrap();
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.clone() })
        .await;
    assert_error!(
        h.engine.model.pool_by_name("p1"),
        NotFound,
        "no storage pool named 'p1'"
    );
    assert_eq!(drain(&mut h.changes), [Change::PoolRemoved(uuid)]);
}

// ---- connecting ----

#[tokio::test]
async fn connecting_fills_in_the_hosts_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    let (engine, _changes) = engine_over(&sim, dir.path());
    let host = engine.model.host();
    assert!(!host.libvirt_connected);
    assert_eq!(
        (host.memory_mib, host.screenshot),
        (0, ScreenshotSupport::Unknown)
    );
    engine.model.apply(HostEvent::Connected).await;
    let host = engine.model.host();
    assert!(host.libvirt_connected);
    assert_eq!(host.memory_mib, 8192);
    assert!(host.kvm);
    assert_eq!(host.stream_protocols, ["http", "https"]);
    assert_eq!(host.screenshot, ScreenshotSupport::Yes);
}

#[tokio::test]
async fn a_failed_capability_probe_is_retried_on_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    let (engine, _changes) = engine_over(&sim, dir.path());
    sim.fail_next("probe_capabilities", libvirt("no capabilities"));
    engine.model.apply(HostEvent::Connected).await;
    assert_eq!(engine.model.host().screenshot, ScreenshotSupport::Unknown);
    assert_eq!(engine.model.host().memory_mib, 0);
    engine.model.apply(HostEvent::Connected).await;
    assert_eq!(engine.model.host().screenshot, ScreenshotSupport::Yes);
    assert_eq!(engine.model.host().memory_mib, 8192);
    assert_eq!(sim.calls("probe_capabilities"), 2);
}

#[tokio::test]
async fn known_capabilities_are_not_probed_again_on_reconnection() {
    let h = harness().await;
    h.engine
        .model
        .apply(HostEvent::Disconnected("restart".into()))
        .await;
    h.engine.model.apply(HostEvent::Connected).await;
    assert_eq!(h.sim.calls("probe_capabilities"), 1);
}

#[tokio::test]
async fn connecting_starts_an_inactive_default_pool() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    sim.deactivate_pool("default").unwrap();
    let (engine, _changes) = engine_over(&sim, dir.path());
    engine.model.apply(HostEvent::Connected).await;
    assert_eq!(
        engine.model.pool_by_name("default").unwrap().state,
        PoolState::Active
    );
    assert_eq!(
        sim.pool_by_name("default").unwrap().state,
        PoolState::Active
    );
    assert_eq!(
        (sim.calls("define_pool"), sim.calls("activate_pool")),
        (0, 1)
    );
}

#[tokio::test]
async fn connecting_defines_and_starts_a_missing_default_pool() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    sim.deactivate_pool("default").unwrap();
    sim.undefine_pool("default").unwrap();
    let (engine, _changes) = engine_over(&sim, dir.path());
    engine.model.apply(HostEvent::Connected).await;
    assert_eq!(
        engine.model.pool_by_name("default").unwrap().state,
        PoolState::Active
    );
    assert_eq!(
        (sim.calls("define_pool"), sim.calls("activate_pool")),
        (1, 1)
    );
}

#[tokio::test]
async fn connecting_leaves_an_active_default_pool_alone() {
    let h = harness().await;
    assert_eq!(
        h.engine.model.pool_by_name("default").unwrap().state,
        PoolState::Active
    );
    assert_eq!(
        (h.sim.calls("define_pool"), h.sim.calls("activate_pool")),
        (0, 0)
    );
}

#[tokio::test]
async fn connecting_resyncs_what_changed_while_disconnected() {
    let mut h = harness().await;
    let gone = adopt(&h, "gone", VmState::Shutoff).await;
    h.engine
        .model
        .apply(HostEvent::Disconnected("restart".into()))
        .await;
    h.sim.undefine(&gone).unwrap();
    let new = h.sim.add_domain("new", VmState::Running);
    drain(&mut h.changes);
    h.engine.model.apply(HostEvent::Connected).await;
    let changes = drain(&mut h.changes);
    assert!(changes.contains(&Change::VmRemoved(gone)), "{changes:?}");
    assert!(changes.contains(&Change::VmAdded(new)), "{changes:?}");
    let names: Vec<String> = h.engine.vms.list().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["new"]);
}

#[tokio::test]
async fn connecting_lists_the_iso_images_of_active_pools() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    sim.add_volume("default", "a.iso", "iso", 10);
    let (engine, _changes) = engine_over(&sim, dir.path());
    engine.model.apply(HostEvent::Connected).await;
    assert_eq!(engine.pools.list().last().unwrap().nr_volumes, 1);
}

#[tokio::test]
async fn disconnection_marks_libvirt_unreachable() {
    let mut h = harness().await;
    assert!(h.engine.model.host().libvirt_connected);
    drain(&mut h.changes);
    h.engine
        .model
        .apply(HostEvent::Disconnected("connection reset".into()))
        .await;
    assert!(!h.engine.model.host().libvirt_connected);
    assert_eq!(drain(&mut h.changes), [Change::Host]);
}

/// The `default` pool started on connection joins the ISO view at once, not at the
/// next resync.
#[tokio::test]
async fn connecting_lists_the_iso_images_of_a_default_pool_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    sim.add_volume("default", "a.iso", "iso", 10);
    sim.deactivate_pool("default").unwrap();
    let (engine, _changes) = engine_over(&sim, dir.path());
    engine.model.apply(HostEvent::Connected).await;
    let pools = engine.pools.list();
    assert_eq!(pools[0].nr_volumes, 1);
    assert_eq!(pools.last().unwrap().nr_volumes, 1);
}
