//! Templates: defaults for what a spec leaves out, patches that change only what
//! they name, renames, refusals that leave the stored template as it was, and the
//! store surviving a restart.

use kimchi_dbus::{TemplateDisk, TemplatePatch, TemplateSpec};

use super::{assert_error, drain, engine_over, template, write_bootable_iso};
use crate::engine::model::Change;
use crate::engine::sim::{harness, Sim};

fn patch() -> TemplatePatch {
    TemplatePatch::default()
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
    let t = h.engine.templates.create(spec.clone()).await.unwrap();
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
        h.engine
            .templates
            .create(TemplateSpec {
                name: "t".into(),
                cpus: 4,
                ..TemplateSpec::default()
            })
            .await,
        AlreadyExists,
        "template 't' already exists"
    );
    assert_eq!(h.engine.templates.get("t").unwrap().spec.cpus, 1);
}

#[tokio::test]
async fn create_with_a_path_for_a_name_is_invalid_argument() {
    let h = harness().await;
    assert_error!(
        h.engine
            .templates
            .create(TemplateSpec {
                name: "a/b".into(),
                ..TemplateSpec::default()
            })
            .await,
        InvalidArgument,
        "invalid template name 'a/b': it contains '/'"
    );
    assert!(h.engine.templates.list().is_empty());
}

#[tokio::test]
async fn a_cdrom_naming_a_missing_iso_view_image_is_invalid_argument() {
    let h = harness().await;
    assert_error!(
        h.engine
            .templates
            .create(TemplateSpec {
                name: "t".into(),
                cdrom: "default:nope.iso".into(),
                ..TemplateSpec::default()
            })
            .await,
        InvalidArgument,
        "cdrom 'default:nope.iso' is not an absolute path, an http(s) or ftp URL, \
         or an image of kimchi_isos"
    );
}

#[tokio::test]
async fn a_cdrom_naming_an_iso_view_image_is_resolved_to_its_path() {
    let h = harness().await;
    h.sim.add_volume("default", "a.iso", "iso", 10);
    // The sim's image has no file behind it, so the probe of the resolved path fails,
    // which shows the path the name was resolved to.
    assert_error!(
        h.engine
            .templates
            .create(TemplateSpec {
                name: "t".into(),
                cdrom: "default:a.iso".into(),
                ..TemplateSpec::default()
            })
            .await,
        InvalidArgument,
        "cdrom '/sim/default/a.iso' cannot be read: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn a_cdrom_that_is_a_local_bootable_image_is_kept() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("install.iso");
    write_bootable_iso(&iso);
    let iso = iso.to_str().unwrap().to_owned();
    let t = h
        .engine
        .templates
        .create(TemplateSpec {
            name: "t".into(),
            cdrom: iso.clone(),
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    assert_eq!(t.spec.cdrom, iso);
}

#[tokio::test]
async fn a_cdrom_url_over_a_protocol_qemu_cannot_stream_is_invalid_argument() {
    let h = harness().await;
    assert_error!(
        h.engine
            .templates
            .create(TemplateSpec {
                name: "t".into(),
                cdrom: "ftp://mirror.example/install.iso".into(),
                ..TemplateSpec::default()
            })
            .await,
        InvalidArgument,
        "QEMU on this host cannot stream images over ftp"
    );
}

#[tokio::test]
async fn update_changes_only_the_fields_the_patch_names() {
    let h = harness().await;
    let before = template(&h, "t").await;
    let after = h
        .engine
        .templates
        .update(
            "t",
            TemplatePatch {
                cpus: Some(4),
                ..patch()
            },
        )
        .await
        .unwrap();
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
    h.engine
        .templates
        .update(
            "t",
            TemplatePatch {
                icon: Some("images/x.png".into()),
                ..patch()
            },
        )
        .await
        .unwrap();
    assert_eq!(drain(&mut h.changes), [Change::TemplateChanged("t".into())]);
}

#[tokio::test]
async fn concurrent_updates_of_different_fields_both_persist() {
    let h = harness().await;
    template(&h, "t").await;
    let (a, b) = tokio::join!(
        h.engine.templates.update(
            "t",
            TemplatePatch {
                cpus: Some(2),
                ..patch()
            }
        ),
        h.engine.templates.update(
            "t",
            TemplatePatch {
                memory_mib: Some(2048),
                ..patch()
            }
        ),
    );
    a.unwrap();
    b.unwrap();
    let t = h.engine.templates.get("t").unwrap();
    assert_eq!((t.spec.cpus, t.spec.memory_mib), (2, 2048));
}

#[tokio::test]
async fn update_of_an_unknown_template_is_not_found() {
    let h = harness().await;
    assert_error!(
        h.engine.templates.update("nope", patch()).await,
        NotFound,
        "no template named 'nope'"
    );
}

#[tokio::test]
async fn rename_moves_the_template_and_announces_removal_and_addition() {
    let mut h = harness().await;
    let before = template(&h, "t").await;
    drain(&mut h.changes);
    let after = h
        .engine
        .templates
        .update(
            "t",
            TemplatePatch {
                name: Some("u".into()),
                ..patch()
            },
        )
        .await
        .unwrap();
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
    let u = h
        .engine
        .templates
        .create(TemplateSpec {
            name: "u".into(),
            cpus: 3,
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    drain(&mut h.changes);
    assert_error!(
        h.engine
            .templates
            .update(
                "t",
                TemplatePatch {
                    name: Some("u".into()),
                    cpus: Some(8),
                    ..patch()
                }
            )
            .await,
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
    h.engine
        .templates
        .create(TemplateSpec {
            name: "t".into(),
            cpus: 4,
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    let t = h
        .engine
        .templates
        .update(
            "t",
            TemplatePatch {
                cpus: Some(0),
                ..patch()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.spec.cpus, 1);
}

#[tokio::test]
async fn too_many_cpus_is_invalid_argument_and_leaves_the_template_unchanged() {
    let h = harness().await;
    let before = template(&h, "t").await;
    assert_error!(
        h.engine
            .templates
            .update(
                "t",
                TemplatePatch {
                    cpus: Some(256),
                    ..patch()
                }
            )
            .await,
        InvalidArgument,
        "cpus must be between 1 and 255, not 256"
    );
    assert_eq!(h.engine.templates.get("t").unwrap(), before);
}

#[tokio::test]
async fn more_memory_than_the_host_has_is_invalid_argument_and_leaves_the_template_unchanged() {
    let h = harness().await;
    let before = template(&h, "t").await;
    assert_error!(
        h.engine
            .templates
            .update(
                "t",
                TemplatePatch {
                    memory_mib: Some(16384),
                    ..patch()
                }
            )
            .await,
        InvalidArgument,
        "memory (16384 MiB) is more than this host has (8192 MiB)"
    );
    assert_eq!(h.engine.templates.get("t").unwrap(), before);
}

#[tokio::test]
async fn too_little_memory_is_invalid_argument() {
    let h = harness().await;
    assert_error!(
        h.engine
            .templates
            .create(TemplateSpec {
                name: "t".into(),
                memory_mib: 32,
                ..TemplateSpec::default()
            })
            .await,
        InvalidArgument,
        "memory must be between 64 and 4194304 MiB, not 32"
    );
    assert!(h.engine.templates.list().is_empty());
}

#[tokio::test]
async fn an_ide_disk_at_the_cdroms_place_is_invalid_argument_and_leaves_the_template_unchanged() {
    let h = harness().await;
    let before = template(&h, "t").await;
    assert_error!(
        h.engine
            .templates
            .update(
                "t",
                TemplatePatch {
                    disks: Some(vec![TemplateDisk {
                        index: 2,
                        size_gb: 1,
                        volume: String::new(),
                    }]),
                    ..patch()
                }
            )
            .await,
        InvalidArgument,
        "disk index 2 is not free: this OS gets IDE disks, which take indexes 0, 1 and 3 \
         (hdc is the CD-ROM)"
    );
    assert_eq!(h.engine.templates.get("t").unwrap(), before);
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
async fn delete_of_an_unknown_template_is_not_found() {
    let h = harness().await;
    assert_error!(
        h.engine.templates.delete("nope").await,
        NotFound,
        "no template named 'nope'"
    );
}

#[tokio::test]
async fn templates_survive_a_restart_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new();
    let (first, _changes) = engine_over(&sim, dir.path());
    let kept = first
        .templates
        .create(TemplateSpec {
            name: "t".into(),
            cpus: 2,
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    let renamed = first
        .templates
        .create(TemplateSpec {
            name: "old".into(),
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    first
        .templates
        .update(
            "old",
            TemplatePatch {
                name: Some("new".into()),
                ..patch()
            },
        )
        .await
        .unwrap();
    first
        .templates
        .create(TemplateSpec {
            name: "gone".into(),
            ..TemplateSpec::default()
        })
        .await
        .unwrap();
    first.templates.delete("gone").await.unwrap();
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
