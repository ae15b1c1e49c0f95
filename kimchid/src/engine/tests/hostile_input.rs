//! Input chosen to hurt: a medium that would block its reader, names too long for
//! the files made from them, megabytes quoted back in errors, and changes racing a
//! deletion. Each is refused with a reason, and no other request waits for it.

use std::path::Path;
use std::time::{Duration, Instant};

use kimchi_dbus::{TemplatePatch, VmState};

use super::vm_ops::cdrom;
use super::{
    assert_error, bootable_iso, new_vm, spec, template, with_cdrom, with_template, with_vm,
};
use crate::engine::hypervisor::Power;
use crate::engine::tasks::Wait;
use crate::excerpt::excerpt;

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[tokio::test]
async fn a_cdrom_that_is_a_fifo_is_refused_at_once() {
    let h = super::harness().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.iso");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let message = format!("cdrom '{fifo}' is not a regular file or block device");

    let started = Instant::now();
    let refused = h.engine.templates.create(with_cdrom("t", fifo)).await;
    println!(
        "template create with a FIFO refused in {:?}",
        started.elapsed()
    );
    assert_error!(refused, InvalidArgument, message);

    template(&h, "t").await;
    let patch = TemplatePatch {
        cdrom: Some(fifo.into()),
        ..TemplatePatch::default()
    };
    let refused = h.engine.templates.update("t", patch).await;
    assert_error!(refused, InvalidArgument, message);
}

#[tokio::test]
async fn a_vm_cdrom_that_is_a_fifo_or_a_directory_is_refused() {
    let (h, _) = with_vm(VmState::Shutoff).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.iso");
    mkfifo(&fifo);
    for path in [fifo.to_str().unwrap(), dir.path().to_str().unwrap()] {
        let message = format!("cdrom '{path}' is not a regular file or block device");
        let refused = h.engine.vms.attach_storage("web", cdrom(path)).await;
        assert_error!(refused, InvalidArgument, message, "{path}");
    }
}

/// A server that accepts connections and never answers: checking a cdrom URL on it
/// takes curl's whole time bound.
fn silent_server() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/install.iso",
        listener.local_addr().expect("bound address")
    );
    (listener, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_does_not_wait_for_another_ones_medium() {
    let h = super::harness().await;
    template(&h, "other").await;
    let (_server, url) = silent_server();
    let engine = h.engine.clone();
    let slow = tokio::spawn(async move { engine.templates.create(with_cdrom("slow", &url)).await });
    // Let the slow creation reach its medium check.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (_dir, iso) = bootable_iso();
    let started = Instant::now();
    h.engine
        .templates
        .create(with_cdrom("fast", &iso))
        .await
        .unwrap();
    let patch = TemplatePatch {
        cpus: Some(2),
        ..TemplatePatch::default()
    };
    h.engine.templates.update("other", patch).await.unwrap();
    let took = started.elapsed();
    println!("two template changes beside a stalled medium check took {took:?}");
    assert!(!slow.is_finished(), "the medium check did not stall");
    assert!(took < Duration::from_secs(10), "{took:?}");
    slow.abort();
}

#[tokio::test]
async fn vm_names_leave_room_for_their_disk_file_names() {
    let h = with_template().await;
    let fits = "v".repeat(243);
    new_vm(&h, "t", &fits, "").await;
    let long = "v".repeat(244);
    let message = format!(
        "invalid VM name '{}': it is longer than 243 bytes",
        excerpt(&long)
    );
    let refused = h.engine.vms.create("t", &long, "", Wait::Ended).await;
    assert_error!(refused, InvalidArgument, message);
    // A 253-byte name made a disk name of 259 bytes, which libvirt refused as a 500.
    let renamed = "w".repeat(253);
    let message = format!(
        "invalid VM name '{}': it is longer than 243 bytes",
        excerpt(&renamed)
    );
    let rename = kimchi_dbus::VmPatch {
        name: Some(renamed),
        ..Default::default()
    };
    let refused = h.engine.vms.update(&fits, rename).await;
    assert_error!(refused, InvalidArgument, message);
}

#[tokio::test]
async fn template_names_leave_room_for_generated_vm_names() {
    let h = super::harness().await;
    let fits = "t".repeat(235);
    template(&h, &fits).await;
    let task = new_vm(&h, &fits, "", "").await;
    assert_eq!(task.target_uri, format!("/vms/{fits}-vm-1"));
    let long = "t".repeat(236);
    let message = format!(
        "invalid template name '{}': it is longer than 235 bytes",
        excerpt(&long)
    );
    let refused = h.engine.templates.create(spec(&long)).await;
    assert_error!(refused, InvalidArgument, message);
    let rename = TemplatePatch {
        name: Some(long.clone()),
        ..TemplatePatch::default()
    };
    let refused = h.engine.templates.update(&fits, rename).await;
    assert_error!(refused, InvalidArgument, message);
}

#[tokio::test]
async fn errors_quote_a_short_prefix_of_a_huge_name() {
    let h = with_template().await;
    let huge = "x".repeat(100_000);
    let errors = [
        h.engine.vms.get(&huge).err(),
        h.engine.vms.power(&huge, Power::On).await.err(),
        h.engine.vms.create("t", &huge, "", Wait::Ended).await.err(),
        h.engine.vms.create(&huge, "", "", Wait::Ended).await.err(),
        h.engine.templates.create(spec(&huge)).await.err(),
        h.engine.templates.get(&huge).err(),
        h.engine
            .templates
            .create(with_cdrom("c", &format!("/{huge}")))
            .await
            .err(),
    ];
    for error in errors {
        let message = error.expect("refused").to_string();
        println!("{message}");
        assert!(message.len() < 200, "{} bytes", message.len());
    }
}

#[tokio::test]
async fn a_vm_being_deleted_cannot_be_started_or_changed() {
    let (h, uuid) = with_vm(VmState::Shutoff).await;
    let mut undefine = h.sim.hold_next("undefine");
    let engine = h.engine.clone();
    let deletion = tokio::spawn(async move { engine.vms.delete("web").await });
    undefine.arrived().await;

    let message = "VM 'web' is being deleted";
    assert_error!(h.engine.vms.power("web", Power::On).await, Busy, message);
    assert_error!(h.engine.vms.delete("web").await, Busy, message);
    let patch = kimchi_dbus::VmPatch {
        cpus: Some(2),
        ..Default::default()
    };
    assert_error!(h.engine.vms.update("web", patch).await, Busy, message);
    let (_dir, iso) = bootable_iso();
    let attach = h.engine.vms.attach_storage("web", cdrom(&iso)).await;
    assert_error!(attach, Busy, message);

    drop(undefine);
    deletion.await.unwrap().unwrap();
    assert!(h.engine.vms.by_uuid(&uuid).is_none());
    assert_error!(
        h.engine.vms.power("web", Power::On).await,
        NotFound,
        "no VM named 'web'"
    );
}

#[tokio::test]
async fn a_deletion_waits_for_a_start_under_way() {
    let (h, uuid) = with_vm(VmState::Shutoff).await;
    let mut power = h.sim.hold_next("power");
    let engine = h.engine.clone();
    let start = tokio::spawn(async move { engine.vms.power("web", Power::On).await });
    power.arrived().await;
    let engine = h.engine.clone();
    let deletion = tokio::spawn(async move { engine.vms.delete("web").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Had the deletion gone ahead, the start would land on a guest already undefined
    // (libvirt: a transient guest left running).
    assert_eq!(h.sim.calls("undefine"), 0);
    assert!(!deletion.is_finished());
    assert_error!(
        h.engine.vms.power("web", Power::Off).await,
        Busy,
        "VM 'web' is being deleted"
    );

    drop(power);
    assert_eq!(start.await.unwrap().unwrap().state, VmState::Running);
    deletion.await.unwrap().unwrap();
    assert_eq!(h.sim.calls("undefine"), 1);
    assert!(h.engine.vms.by_uuid(&uuid).is_none());
}

#[tokio::test]
async fn a_template_cdrom_replaced_by_a_fifo_refuses_vm_creation() {
    let h = super::harness().await;
    let (_dir, iso) = bootable_iso();
    h.engine
        .templates
        .create(with_cdrom("t", &iso))
        .await
        .unwrap();
    std::fs::remove_file(&iso).unwrap();
    mkfifo(Path::new(&iso));
    let refused = h.engine.vms.create("t", "web", "", Wait::Ended).await;
    let message = format!("the template's cdrom '{iso}' is not a regular file or block device");
    assert_error!(refused, InvalidArgument, message);
    assert!(!h.sim.has_domain("web"));
}
