//! The model: hypervisor events turned into model updates and announced changes,
//! with no re-read for what the model shows already, and what connecting does.

use std::sync::Arc;

use kimchi_dbus::{PoolState, ScreenshotSupport, VmState};
use tokio::sync::mpsc;

use super::{adopt, adopt_pool, assert_error, drain, engine_over, libvirt, with_vm};
use crate::engine::hypervisor::{DomainEvent, HostEvent, Hypervisor};
use crate::engine::model::Change;
use crate::engine::sim::{harness, Harness, Sim};
use crate::engine::Engine;

fn domain(uuid: &str, event: DomainEvent) -> HostEvent {
    HostEvent::Domain {
        uuid: uuid.into(),
        event,
    }
}

/// What applying `event` for domain `uuid` did: how many times the model read the
/// domain again, and what it announced.
async fn apply(h: &mut Harness, uuid: &str, event: DomainEvent) -> (usize, Vec<Change>) {
    let reads = h.sim.calls("domain");
    h.engine.model.apply(domain(uuid, event)).await;
    (h.sim.calls("domain") - reads, drain(&mut h.changes))
}

/// What a pool event for `uuid` announced.
async fn pool_event(h: &mut Harness, uuid: &str) -> Vec<Change> {
    h.engine
        .model
        .apply(HostEvent::Pool { uuid: uuid.into() })
        .await;
    drain(&mut h.changes)
}

/// A fresh harness with pool `p1` (inactive) adopted, and its UUID; what the
/// adoption announced is drained.
async fn with_pool() -> (Harness, String) {
    let mut h = harness().await;
    let uuid = adopt_pool(&h, "p1", "dir", false).await;
    drain(&mut h.changes);
    (h, uuid)
}

/// What keeps an engine made by `unconnected` working: its store's directory and
/// the receiver of its announcements.
type Kept = (tempfile::TempDir, mpsc::UnboundedReceiver<Change>);

/// An engine over `sim` that has not connected yet.
fn unconnected(sim: &Arc<Sim>) -> (Arc<Engine>, Kept) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, changes) = engine_over(sim, dir.path());
    (engine, (dir, changes))
}

/// An engine over `sim` that has connected once.
async fn connected(sim: &Arc<Sim>) -> (Arc<Engine>, Kept) {
    let (engine, kept) = unconnected(sim);
    engine.model.apply(HostEvent::Connected).await;
    (engine, kept)
}

// ---- domain events ----

/// Events after which the guest is as the model shows it: the domain is read again
/// only where the event leaves room for doubt, and nothing is announced.
#[tokio::test]
async fn an_event_that_leaves_the_guest_as_the_model_shows_it_announces_nothing() {
    for (case, state, event, reads) in [
        (
            "became the state the model shows: not read again",
            VmState::Running,
            DomainEvent::Became(VmState::Running),
            0,
        ),
        (
            "became another state, stale: the guest was paused and resumed since; \
             recorded as libvirt reports it",
            VmState::Running,
            DomainEvent::Became(VmState::Paused),
            1,
        ),
        (
            "changed: always read again",
            VmState::Shutoff,
            DomainEvent::Changed,
            1,
        ),
        (
            "undefined, then defined again under the same UUID: the re-read keeps it",
            VmState::Shutoff,
            DomainEvent::Undefined,
            1,
        ),
    ] {
        let (mut h, uuid) = with_vm(state).await;
        assert_eq!(apply(&mut h, &uuid, event).await, (reads, vec![]), "{case}");
        let now = h.engine.vms.get("web").unwrap().state;
        assert_eq!(now, state, "{case}");
    }
}

#[tokio::test]
async fn became_another_state_re_reads_and_announces_the_change() {
    let (mut h, uuid) = with_vm(VmState::Running).await;
    h.sim.set_state(&uuid, VmState::Paused);
    let event = DomainEvent::Became(VmState::Paused);
    let (reads, changes) = apply(&mut h, &uuid, event).await;
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Paused);
    assert_eq!((reads, changes), (1, vec![Change::VmChanged(uuid)]));
}

#[tokio::test]
async fn undefined_for_an_unknown_domain_does_nothing() {
    let mut h = harness().await;
    drain(&mut h.changes);
    let unknown = "00000000-0000-4000-8000-999999999999";
    let seen = apply(&mut h, unknown, DomainEvent::Undefined).await;
    assert_eq!(seen, (0, vec![]));
}

#[tokio::test]
async fn undefined_for_a_known_domain_re_reads_and_removes_it() {
    let (mut h, uuid) = with_vm(VmState::Shutoff).await;
    h.sim.undefine(&uuid).unwrap();
    let (reads, changes) = apply(&mut h, &uuid, DomainEvent::Undefined).await;
    assert_error!(h.engine.vms.get("web"), NotFound, "no VM named 'web'");
    assert_eq!((reads, changes), (1, vec![Change::VmRemoved(uuid)]));
}

#[tokio::test]
async fn a_domain_defined_behind_our_back_appears_after_its_event() {
    let mut h = harness().await;
    drain(&mut h.changes);
    let uuid = h.sim.add_domain("web", VmState::Shutoff);
    assert_error!(h.engine.vms.get("web"), NotFound, "no VM named 'web'");
    let (_, changes) = apply(&mut h, &uuid, DomainEvent::Changed).await;
    let vm = h.engine.vms.get("web").unwrap();
    assert_eq!(
        (vm.uuid.as_str(), vm.state),
        (uuid.as_str(), VmState::Shutoff)
    );
    assert_eq!(changes, [Change::VmAdded(uuid)]);
}

#[tokio::test]
async fn a_failed_re_read_leaves_the_model_as_it_was() {
    let (mut h, uuid) = with_vm(VmState::Running).await;
    h.sim.set_state(&uuid, VmState::Shutoff);
    h.sim.fail_next("domain", libvirt("connection reset"));
    let event = DomainEvent::Became(VmState::Shutoff);
    let (_, changes) = apply(&mut h, &uuid, event).await;
    assert_eq!(h.engine.vms.get("web").unwrap().state, VmState::Running);
    assert!(changes.is_empty());
}

// ---- pool events ----

#[tokio::test]
async fn a_pool_event_for_a_new_pool_adds_it() {
    let mut h = harness().await;
    drain(&mut h.changes);
    let uuid = h.sim.add_pool("p1", "dir", false);
    let reads = h.sim.calls("pool");
    let changes = pool_event(&mut h, &uuid).await;
    assert_eq!(h.sim.calls("pool"), reads + 1);
    assert_eq!(
        h.engine.model.pool_by_name("p1").unwrap().state,
        PoolState::Inactive
    );
    assert_eq!(changes, [Change::PoolAdded(uuid)]);
}

#[tokio::test]
async fn a_pool_event_re_reads_a_changed_pool() {
    let (mut h, uuid) = with_pool().await;
    h.sim.activate_pool("p1").unwrap();
    let changes = pool_event(&mut h, &uuid).await;
    let state = h.engine.model.pool_by_name("p1").unwrap().state;
    assert_eq!(state, PoolState::Active);
    assert_eq!(changes, [Change::PoolChanged(uuid)]);
}

#[tokio::test]
async fn a_pool_started_outside_kimchid_brings_its_iso_images_into_the_view() {
    let (mut h, uuid) = with_pool().await;
    h.sim.activate_pool("p1").unwrap();
    h.sim.add_volume("p1", "install.iso", "iso", 10);
    pool_event(&mut h, &uuid).await;
    let isos: Vec<String> = h.engine.model.isos().into_iter().map(|v| v.name).collect();
    assert_eq!(isos, ["install.iso"]);
}

#[tokio::test]
async fn a_pool_event_for_a_pool_gone_removes_it() {
    let (mut h, uuid) = with_pool().await;
    h.sim.undefine_pool("p1").unwrap();
    let changes = pool_event(&mut h, &uuid).await;
    assert_error!(
        h.engine.model.pool_by_name("p1"),
        NotFound,
        "no storage pool named 'p1'"
    );
    assert_eq!(changes, [Change::PoolRemoved(uuid)]);
}

// ---- connecting ----

#[tokio::test]
async fn connecting_fills_in_the_hosts_capabilities() {
    let sim = Sim::new();
    let (engine, _kept) = unconnected(&sim);
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
    let sim = Sim::new();
    sim.fail_next("probe_capabilities", libvirt("no capabilities"));
    let (engine, _kept) = connected(&sim).await;
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
async fn connecting_leaves_the_default_pool_defined_and_active() {
    for (case, deactivated, undefined, define_and_activate) in [
        ("an active default pool is left alone", false, false, (0, 0)),
        ("an inactive default pool is started", true, false, (0, 1)),
        (
            "a missing default pool is defined and started",
            true,
            true,
            (1, 1),
        ),
    ] {
        let sim = Sim::new();
        if deactivated {
            sim.deactivate_pool("default").unwrap();
        }
        if undefined {
            sim.undefine_pool("default").unwrap();
        }
        let (engine, _kept) = connected(&sim).await;
        let in_model = engine.model.pool_by_name("default").unwrap().state;
        let in_libvirt = sim.pool_by_name("default").unwrap().state;
        assert_eq!(
            (in_model, in_libvirt),
            (PoolState::Active, PoolState::Active),
            "{case}"
        );
        let calls = (sim.calls("define_pool"), sim.calls("activate_pool"));
        assert_eq!(calls, define_and_activate, "{case}");
    }
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

/// The `default` pool started on connection joins the ISO view at once, not at the
/// next resync.
#[tokio::test]
async fn connecting_lists_the_iso_images_of_active_pools_and_of_a_default_pool_it_starts() {
    for deactivated in [false, true] {
        let sim = Sim::new();
        sim.add_volume("default", "a.iso", "iso", 10);
        if deactivated {
            sim.deactivate_pool("default").unwrap();
        }
        let (engine, _kept) = connected(&sim).await;
        let pools = engine.pools.list();
        let counts = (pools[0].nr_volumes, pools.last().unwrap().nr_volumes);
        assert_eq!(counts, (1, 1), "default pool deactivated: {deactivated}");
    }
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

/// A listing runs beside the events: what an event brought while it ran is newer
/// than what it listed, and stays.
#[tokio::test]
async fn a_listing_does_not_undo_what_events_brought_while_it_ran() {
    let mut h = harness().await;
    let changed = adopt(&h, "changed", VmState::Shutoff).await;
    let listed = h.sim.list_domains().unwrap();

    h.sim.set_state(&changed, VmState::Running);
    apply(&mut h, &changed, DomainEvent::Became(VmState::Running)).await;
    let added = h.sim.add_domain("added", VmState::Shutoff);
    apply(&mut h, &added, DomainEvent::Changed).await;

    let newer = [changed.clone(), added.clone()].into_iter().collect();
    h.engine.model.sync_domains(listed.clone(), &newer);
    assert_eq!(h.engine.vms.get("changed").unwrap().state, VmState::Running);
    assert!(h.engine.vms.get("added").is_ok());

    h.engine.model.sync_domains(listed, &Default::default());
    assert_eq!(
        h.engine.vms.get("changed").unwrap().state,
        VmState::Shutoff,
        "without the events, the listing wins"
    );
    assert!(h.engine.vms.get("added").is_err());
    drain(&mut h.changes);
}

/// Reads by name follow renames, also when two guests trade names.
#[tokio::test]
async fn guests_are_found_by_their_current_name() {
    let h = harness().await;
    let a = adopt(&h, "a", VmState::Shutoff).await;
    let b = adopt(&h, "b", VmState::Shutoff).await;
    let renamed = |uuid: &str, name: &str| {
        let mut record = h.engine.model.vm_by_uuid(uuid).unwrap();
        record.name = name.into();
        record
    };
    // b takes a's name before a's rename is recorded, as events may tell it.
    h.engine.model.upsert(renamed(&b, "a"));
    h.engine.model.upsert(renamed(&a, "c"));
    let uuid_of = |name: &str| h.engine.model.vm_by_name(name).map(|v| v.uuid);
    assert_eq!(uuid_of("a").unwrap(), b);
    assert_eq!(uuid_of("c").unwrap(), a);
    assert!(uuid_of("b").is_err());
    h.engine.model.remove(&b);
    assert!(uuid_of("a").is_err());
    assert_eq!(uuid_of("c").unwrap(), a);
}
