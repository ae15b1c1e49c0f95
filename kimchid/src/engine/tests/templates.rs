//! Templates: defaults for what a spec leaves out, patches that change only what
//! they name, renames, refusals that leave the stored template as it was, and the
//! store surviving a restart.

use kimchi_dbus::{TemplateDisk, TemplatePatch, TemplateSpec};

use super::{
    assert_error, bootable_iso, drain, engine_over, spec, template, template_from, with_cdrom,
};
use crate::engine::model::Change;
use crate::engine::sim::{harness, Harness, Sim};
use crate::engine::templates::Template;
use crate::error::Result;

fn patch() -> TemplatePatch {
    TemplatePatch::default()
}

/// A patch setting only the number of CPUs.
fn cpus(cpus: u32) -> TemplatePatch {
    TemplatePatch {
        cpus: Some(cpus),
        ..patch()
    }
}

/// A patch setting only the memory.
fn memory(mib: u64) -> TemplatePatch {
    TemplatePatch {
        memory_mib: Some(mib),
        ..patch()
    }
}

/// A patch renaming the template `to`.
fn rename(to: &str) -> TemplatePatch {
    TemplatePatch {
        name: Some(to.into()),
        ..patch()
    }
}

/// `spec` with `cpus` CPUs.
fn with_cpus(name: &str, cpus: u32) -> TemplateSpec {
    TemplateSpec { cpus, ..spec(name) }
}

/// The engine's answer to creating `spec`.
async fn create(h: &Harness, spec: TemplateSpec) -> Result<Template> {
    h.engine.templates.create(spec).await
}

/// The engine's answer to patching template `name`.
async fn update(h: &Harness, name: &str, patch: TemplatePatch) -> Result<Template> {
    h.engine.templates.update(name, patch).await
}

#[tokio::test]
async fn create_fills_in_kimchis_defaults_for_an_unknown_os() {
    let h = harness().await;
    let t = template(&h, "t").await;
    assert_eq!(
        t.spec,
        TemplateSpec {
            name: "t".into(),
            os_distro: "unknown".into(),
            os_version: "unknown".into(),
            cpus: 1,
            memory_mib: 1024,
            disks: vec![TemplateDisk {
                index: 0,
                size_gb: 10,
                volume: String::new(),
            }],
            ..TemplateSpec::default()
        }
    );
    assert_eq!(
        (t.disk_bus.as_str(), t.nic_model.as_str()),
        ("ide", "e1000")
    );
    assert_eq!(h.engine.templates.get("t").unwrap(), t);
}

#[tokio::test]
async fn create_keeps_what_the_spec_gives() {
    let h = harness().await;
    let spec = TemplateSpec {
        name: "t".into(),
        folder: vec!["linux".into()],
        icon: "images/icon.png".into(),
        os_distro: "debian".into(),
        os_version: "12".into(),
        cpus: 2,
        memory_mib: 2048,
        cdrom: String::new(),
        disks: vec![TemplateDisk {
            index: 1,
            size_gb: 5,
            volume: String::new(),
        }],
    };
    let t = template_from(&h, spec.clone()).await;
    assert_eq!(t.spec, spec);
}

#[tokio::test]
async fn create_announces_the_template() {
    let mut h = harness().await;
    drain(&mut h.changes);
    template(&h, "t").await;
    assert_eq!(drain(&mut h.changes), [Change::TemplateAdded("t".into())]);
}

#[tokio::test]
async fn create_of_an_existing_name_is_already_exists() {
    let h = harness().await;
    template(&h, "t").await;
    assert_error!(
        create(&h, with_cpus("t", 4)).await,
        AlreadyExists,
        "template 't' already exists"
    );
    assert_eq!(h.engine.templates.get("t").unwrap().spec.cpus, 1);
}

#[tokio::test]
async fn create_of_a_spec_the_rules_refuse_is_invalid_argument_and_stores_nothing() {
    let h = harness().await;
    for (case, spec, message) in [
        (
            "a path for a name",
            spec("a/b"),
            "invalid template name 'a/b': it contains '/'",
        ),
        (
            "too little memory",
            TemplateSpec {
                memory_mib: 32,
                ..spec("t")
            },
            "memory must be between 64 and 4194304 MiB, not 32",
        ),
        (
            "a cdrom naming a missing ISO view image",
            with_cdrom("t", "default:nope.iso"),
            "cdrom 'default:nope.iso' is not an absolute path, an http(s) or ftp URL, \
             or an image of kimchi_isos",
        ),
        (
            "a cdrom URL over a protocol QEMU cannot stream",
            with_cdrom("t", "ftp://mirror.example/install.iso"),
            "QEMU on this host cannot stream images over ftp",
        ),
    ] {
        assert_error!(create(&h, spec).await, InvalidArgument, message, "{case}");
    }
    assert!(h.engine.templates.list().is_empty());
}

#[tokio::test]
async fn a_cdrom_naming_an_iso_view_image_is_resolved_to_its_path() {
    let h = harness().await;
    h.sim.add_volume("default", "a.iso", "iso", 10);
    // The sim's image has no file behind it, so the probe of the resolved path fails,
    // which shows the path the name was resolved to.
    assert_error!(
        create(&h, with_cdrom("t", "default:a.iso")).await,
        InvalidArgument,
        "cdrom '/sim/default/a.iso' does not exist"
    );
}

#[tokio::test]
async fn a_cdrom_that_is_a_local_bootable_image_is_kept() {
    let h = harness().await;
    let (_dir, iso) = bootable_iso();
    let t = template_from(&h, with_cdrom("t", &iso)).await;
    assert_eq!(t.spec.cdrom, iso);
}

#[tokio::test]
async fn update_changes_only_the_fields_the_patch_names() {
    let h = harness().await;
    let before = template(&h, "t").await;
    let after = update(&h, "t", cpus(4)).await.unwrap();
    assert_eq!(after.spec.cpus, 4);
    let mut expected = before.spec.clone();
    expected.cpus = 4;
    assert_eq!(after.spec, expected);
    assert_eq!(h.engine.templates.get("t").unwrap(), after);
}

#[tokio::test]
async fn update_announces_the_change() {
    let mut h = harness().await;
    template(&h, "t").await;
    drain(&mut h.changes);
    let icon = TemplatePatch {
        icon: Some("images/x.png".into()),
        ..patch()
    };
    update(&h, "t", icon).await.unwrap();
    assert_eq!(drain(&mut h.changes), [Change::TemplateChanged("t".into())]);
}

#[tokio::test]
async fn concurrent_updates_of_different_fields_both_persist() {
    let h = harness().await;
    template(&h, "t").await;
    let (a, b) = tokio::join!(update(&h, "t", cpus(2)), update(&h, "t", memory(2048)));
    a.unwrap();
    b.unwrap();
    let t = h.engine.templates.get("t").unwrap();
    assert_eq!((t.spec.cpus, t.spec.memory_mib), (2, 2048));
}

#[tokio::test]
async fn changes_to_an_unknown_template_are_not_found() {
    let h = harness().await;
    let message = "no template named 'nope'";
    assert_error!(h.engine.templates.get("nope"), NotFound, message, "get");
    assert_error!(
        update(&h, "nope", patch()).await,
        NotFound,
        message,
        "update"
    );
    let deleted = h.engine.templates.delete("nope").await;
    assert_error!(deleted, NotFound, message, "delete");
}

#[tokio::test]
async fn rename_moves_the_template_and_announces_removal_and_addition() {
    let mut h = harness().await;
    let before = template(&h, "t").await;
    drain(&mut h.changes);
    let after = update(&h, "t", rename("u")).await.unwrap();
    assert_eq!(after.spec.name, "u");
    assert_error!(
        h.engine.templates.get("t"),
        NotFound,
        "no template named 't'"
    );
    let moved = h.engine.templates.get("u").unwrap();
    assert_eq!(
        moved.spec,
        TemplateSpec {
            name: "u".into(),
            ..before.spec
        }
    );
    assert_eq!(
        drain(&mut h.changes),
        [
            Change::TemplateRemoved("t".into()),
            Change::TemplateAdded("u".into())
        ]
    );
}

#[tokio::test]
async fn rename_onto_an_existing_name_is_already_exists_and_changes_nothing() {
    let mut h = harness().await;
    let t = template(&h, "t").await;
    let u = template_from(&h, with_cpus("u", 3)).await;
    drain(&mut h.changes);
    let rename_and_more = TemplatePatch {
        cpus: Some(8),
        ..rename("u")
    };
    assert_error!(
        update(&h, "t", rename_and_more).await,
        AlreadyExists,
        "cannot rename template 't': 'u' already exists"
    );
    assert_eq!(h.engine.templates.get("t").unwrap(), t);
    assert_eq!(h.engine.templates.get("u").unwrap(), u);
    assert!(drain(&mut h.changes).is_empty());
}

#[tokio::test]
async fn cpus_zero_in_a_patch_means_fill_in_the_default() {
    let h = harness().await;
    template_from(&h, with_cpus("t", 4)).await;
    let t = update(&h, "t", cpus(0)).await.unwrap();
    assert_eq!(t.spec.cpus, 1);
}

#[tokio::test]
async fn an_update_the_rules_refuse_is_invalid_argument_and_leaves_the_template_unchanged() {
    let h = harness().await;
    let before = template(&h, "t").await;
    let ide_disk_at_the_cdroms_place = TemplatePatch {
        disks: Some(vec![TemplateDisk {
            index: 2,
            size_gb: 1,
            volume: String::new(),
        }]),
        ..patch()
    };
    for (case, patch, message) in [
        (
            "too many CPUs",
            cpus(256),
            "cpus must be between 1 and 255, not 256",
        ),
        (
            "more memory than the host has",
            memory(16384),
            "memory (16384 MiB) is more than this host has (8192 MiB)",
        ),
        (
            "an IDE disk at the CD-ROM's place",
            ide_disk_at_the_cdroms_place,
            "disk index 2 is not free: this OS gets IDE disks, which take indexes 0, 1 and 3 \
             (hdc is the CD-ROM)",
        ),
    ] {
        let refused = update(&h, "t", patch).await;
        assert_error!(refused, InvalidArgument, message, "{case}");
        assert_eq!(h.engine.templates.get("t").unwrap(), before, "{case}");
    }
}

#[tokio::test]
async fn a_deleted_template_is_not_found() {
    let mut h = harness().await;
    template(&h, "t").await;
    drain(&mut h.changes);
    h.engine.templates.delete("t").await.unwrap();
    assert_error!(
        h.engine.templates.get("t"),
        NotFound,
        "no template named 't'"
    );
    assert!(h.engine.templates.list().is_empty());
    assert_eq!(drain(&mut h.changes), [Change::TemplateRemoved("t".into())]);
}

#[tokio::test]
async fn templates_survive_a_restart_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    let (first, _changes) = engine_over(&sim, dir.path());
    let store = &first.templates;
    let kept = store.create(with_cpus("t", 2)).await.unwrap();
    let renamed = store.create(spec("old")).await.unwrap();
    store.update("old", rename("new")).await.unwrap();
    store.create(spec("gone")).await.unwrap();
    store.delete("gone").await.unwrap();
    drop(first);

    let (second, mut changes) = engine_over(&sim, dir.path());
    assert_eq!(second.templates.get("t").unwrap(), kept);
    assert_eq!(
        second.templates.get("new").unwrap().spec,
        TemplateSpec {
            name: "new".into(),
            ..renamed.spec
        }
    );
    let names: Vec<String> = second
        .templates
        .list()
        .into_iter()
        .map(|t| t.spec.name)
        .collect();
    assert_eq!(names, ["new", "t"]);
    let announced: Vec<Change> = drain(&mut changes)
        .into_iter()
        .filter(|c| matches!(c, Change::TemplateAdded(_)))
        .collect();
    assert_eq!(
        announced,
        [
            Change::TemplateAdded("new".into()),
            Change::TemplateAdded("t".into())
        ]
    );
}

#[tokio::test]
async fn a_cdrom_url_is_asked_of_the_url_check_service_and_kept_as_given() {
    let h = harness().await;
    let (base, requests) = crate::url_check::tests::http_server("200 OK");
    let url = format!("{base}/isos/install.iso");
    let t = template_from(&h, with_cdrom("t", &url)).await;
    assert_eq!(t.spec.cdrom, url);
    assert_eq!(requests.recv().unwrap(), "HEAD /isos/install.iso HTTP/1.1");
}

#[tokio::test]
async fn without_the_url_check_service_a_cdrom_url_is_unavailable_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _changes) = engine_over(&Sim::new(), dir.path());
    engine
        .model
        .apply(crate::engine::hypervisor::HostEvent::Connected)
        .await;
    let message = format!(
        "URL check service not reachable at {}: No such file or directory (os error 2); \
         is kimchi-url-check.socket enabled?",
        dir.path().join("url-check.sock").display()
    );
    assert_error!(
        engine
            .templates
            .create(with_cdrom("t", "http://127.0.0.1:9/x.iso"))
            .await,
        Unavailable,
        message
    );
    assert!(engine.templates.list().is_empty());
}
