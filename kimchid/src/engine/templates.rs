//! Templates: what new VMs are made from. Stored in SQLite under the state directory
//! (WAL, synchronous=FULL: a change that was answered survives kill -9), mirrored in
//! memory for reads. What the caller leaves out comes from the operating system's
//! entry in osinfo-db, or from Kimchi's fallbacks for an OS it does not know.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use kimchi_dbus::{
    template_path, TemplateDisk, TemplateInfo, TemplatePatch, TemplateSpec, ISO_POOL,
};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use zbus::OwnedObjectPath;

use super::hypervisor::DiskBus;
use super::isos::{read_medium, Isos};
use super::model::{Change, Model};
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
use crate::iso_url::IsoUrl;
use crate::names::{check_absolute_path, check_name, check_name_within, MAX_TEMPLATE_NAME_BYTES};
use crate::osinfo::OsDatabase;
use crate::url_check::client::UrlChecker;

const UNKNOWN_OS: &str = "unknown";
const DEFAULT_CPUS: u32 = 1;
const DEFAULT_MEMORY_MIB: u64 = 1024;
const DEFAULT_DISK_GB: u64 = 10;
const MAX_CPUS: u32 = 255;
const MEMORY_MIB: std::ops::RangeInclusive<u64> = 64..=(4 << 20);
const MAX_DISK_GB: u64 = 64 << 10;
/// Device letters a..z on virtio; IDE has four places and the CD-ROM takes `hdc`.
const MAX_VIRTIO_DISKS: u32 = 26;
const IDE_DISK_INDEXES: [u32; 3] = [0, 1, 3];
const MAX_TEXT_BYTES: usize = 1024;

/// A stored template: the caller's spec with every default filled in, and the
/// device models chosen for its OS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub spec: TemplateSpec,
    /// virtio or ide.
    pub disk_bus: String,
    /// virtio or e1000.
    pub nic_model: String,
}

impl Template {
    pub fn info(self) -> TemplateInfo {
        TemplateInfo {
            path: OwnedObjectPath::try_from(template_path(&self.spec.name))
                .expect("escaped names make valid paths"),
            spec: self.spec,
            disk_bus: self.disk_bus,
            nic_model: self.nic_model,
        }
    }

    /// The bus the template's disks go on (stored as its word).
    pub fn disk_bus(&self) -> DiskBus {
        if self.disk_bus == DiskBus::Virtio.word() {
            DiskBus::Virtio
        } else {
            DiskBus::Ide
        }
    }
}

pub struct Templates {
    db: Arc<Mutex<Connection>>,
    cache: RwLock<BTreeMap<String, Template>>,
    /// Serializes changes: each checks names against the cache before writing.
    writer: tokio::sync::Mutex<()>,
    osdb: Arc<OsDatabase>,
    isos: Arc<Isos>,
    /// Asks whether a cdrom URL answers (kimchid has no IP itself).
    urls: UrlChecker,
    model: Arc<Model>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Templates {
    /// Opens (creating if needed) `templates.db` in `state_dir` and loads it.
    pub fn open(
        state_dir: &Path,
        osdb: Arc<OsDatabase>,
        isos: Arc<Isos>,
        urls: UrlChecker,
        model: Arc<Model>,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Result<Self> {
        super::sqlite_fchown::skip_needless_fchown();
        let db = Connection::open(state_dir.join("templates.db"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        // The table is small and read from memory: SQLite's default 2 MiB page cache
        // would only hold kimchid's memory up after a burst of changes.
        db.pragma_update(None, "cache_size", "-256")?;
        db.execute(
            "CREATE TABLE IF NOT EXISTS templates (name TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL)",
            [],
        )?;
        let mut cache = BTreeMap::new();
        {
            let mut query = db.prepare("SELECT name, doc FROM templates")?;
            let rows =
                query.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (name, doc) = row?;
                match serde_json::from_str::<Template>(&doc) {
                    Ok(t) => {
                        cache.insert(name, t);
                    }
                    Err(e) => tracing::error!(%name, "skipping unreadable stored template: {e}"),
                }
            }
        }
        for name in cache.keys() {
            let _ = changes.send(Change::TemplateAdded(name.clone()));
        }
        Ok(Templates {
            db: Arc::new(Mutex::new(db)),
            cache: RwLock::new(cache),
            writer: tokio::sync::Mutex::new(()),
            osdb,
            isos,
            urls,
            model,
            changes,
        })
    }

    /// All templates, by name.
    pub fn list(&self) -> Vec<TemplateInfo> {
        self.cache
            .read()
            .expect("template cache poisoned")
            .values()
            .cloned()
            .map(Template::info)
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<Template> {
        self.cache
            .read()
            .expect("template cache poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no template named '{}'", excerpt(name))))
    }

    fn exists(&self, name: &str) -> bool {
        self.cache
            .read()
            .expect("template cache poisoned")
            .contains_key(name)
    }

    pub async fn create(&self, spec: TemplateSpec) -> Result<Template> {
        check_template_name(&spec.name)?;
        self.refuse_taken(&spec.name)?;
        // Read before the lock: no change waits on another's medium.
        let medium = self.check_cdrom(&spec.cdrom).await?;
        let _writing = self.writer.lock().await;
        self.refuse_taken(&spec.name)?;
        let template = self.resolve(spec, medium).await?;
        self.store(None, template.clone()).await?;
        let _ = self
            .changes
            .send(Change::TemplateAdded(template.spec.name.clone()));
        Ok(template)
    }

    fn refuse_taken(&self, name: &str) -> Result<()> {
        if self.exists(name) {
            return Err(Error::AlreadyExists(format!(
                "template '{}' already exists",
                excerpt(name)
            )));
        }
        Ok(())
    }

    /// Changes the fields of template `name` that `patch` names, merged with the
    /// stored ones under the writer lock, so concurrent changes of different fields
    /// all stay; a new `name` renames it.
    pub async fn update(&self, name: &str, patch: TemplatePatch) -> Result<Template> {
        if let Some(new) = &patch.name {
            check_template_name(new)?;
        }
        loop {
            // The medium the merged template will have is read before the lock, so
            // no change waits on another's I/O; if another change gave the template
            // a new one meanwhile, that one is read in turn.
            let cdrom = match &patch.cdrom {
                Some(cdrom) => cdrom.clone(),
                None => self.get(name)?.spec.cdrom,
            };
            let medium = self.check_cdrom(&cdrom).await?;
            let _writing = self.writer.lock().await;
            let spec = patch.clone().apply(self.get(name)?.spec);
            if spec.cdrom != medium.given {
                continue;
            }
            return self.replace(name, spec, medium).await;
        }
    }

    /// The rest of `update`, under the writer lock.
    async fn replace(&self, name: &str, spec: TemplateSpec, medium: Medium) -> Result<Template> {
        if spec.name != name && self.exists(&spec.name) {
            return Err(Error::AlreadyExists(format!(
                "cannot rename template '{}': '{}' already exists",
                excerpt(name),
                excerpt(&spec.name)
            )));
        }
        let template = self.resolve(spec, medium).await?;
        self.store(Some(name), template.clone()).await?;
        let new = template.spec.name.clone();
        if new == name {
            let _ = self.changes.send(Change::TemplateChanged(new));
        } else {
            let _ = self.changes.send(Change::TemplateRemoved(name.to_owned()));
            let _ = self.changes.send(Change::TemplateAdded(new));
        }
        Ok(template)
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let _writing = self.writer.lock().await;
        self.get(name)?;
        let db = self.db.clone();
        let owned = name.to_owned();
        blocking(move || {
            let db = db.lock().expect("template db lock poisoned");
            db.execute("DELETE FROM templates WHERE name = ?1", params![owned])?;
            Ok(())
        })
        .await?;
        self.cache
            .write()
            .expect("template cache poisoned")
            .remove(name);
        let _ = self.changes.send(Change::TemplateRemoved(name.to_owned()));
        Ok(())
    }

    /// Writes `template` in one transaction that also drops `replacing`, then
    /// updates the cache; the cache never shows what the disk does not have. Callers
    /// hold `writer` and have checked the name against the cache, which matches the
    /// table under that lock.
    async fn store(&self, replacing: Option<&str>, template: Template) -> Result<()> {
        let doc = serde_json::to_string(&template)
            .map_err(|e| Error::Internal(format!("cannot encode template: {e}")))?;
        let db = self.db.clone();
        let (old, new) = (replacing.map(str::to_owned), template.spec.name.clone());
        blocking(move || {
            let mut db = db.lock().expect("template db lock poisoned");
            let tx = db.transaction()?;
            if let Some(old) = &old {
                tx.execute("DELETE FROM templates WHERE name = ?1", params![old])?;
            }
            tx.execute(
                "INSERT INTO templates (name, doc) VALUES (?1, ?2)",
                params![new, doc],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        let mut cache = self.cache.write().expect("template cache poisoned");
        if let Some(old) = replacing {
            cache.remove(old);
        }
        cache.insert(template.spec.name.clone(), template);
        Ok(())
    }

    /// Checks `spec`, whose `medium` was checked, and fills in what it leaves empty.
    async fn resolve(&self, mut spec: TemplateSpec, medium: Medium) -> Result<Template> {
        check_text("icon", &spec.icon)?;
        for part in &spec.folder {
            check_text("folder", part)?;
        }
        spec.cdrom = medium.path;
        if spec.os_distro.is_empty() && spec.os_version.is_empty() {
            if let Some((distro, version)) = medium.identified {
                (spec.os_distro, spec.os_version) = (distro, version);
            }
        }
        for (what, value) in [
            ("os_distro", &mut spec.os_distro),
            ("os_version", &mut spec.os_version),
        ] {
            check_text(what, value)?;
            if value.is_empty() {
                *value = UNKNOWN_OS.to_owned();
            }
        }
        let (distro, version) = (spec.os_distro.clone(), spec.os_version.clone());
        let profile = self
            .osdb
            .with(move |db| db.lookup(&distro, &version))
            .await?
            .unwrap_or_default();

        if spec.cpus == 0 {
            spec.cpus = profile.cpus.unwrap_or(DEFAULT_CPUS).min(MAX_CPUS);
        }
        if !(1..=MAX_CPUS).contains(&spec.cpus) {
            return Err(Error::InvalidArgument(format!(
                "cpus must be between 1 and {MAX_CPUS}, not {}",
                spec.cpus
            )));
        }
        let host_memory = self.model.host().memory_mib;
        if spec.memory_mib == 0 {
            spec.memory_mib = profile.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
            // A recommendation this host cannot meet is no default.
            if host_memory > 0 {
                spec.memory_mib = spec.memory_mib.min(host_memory);
            }
        }
        if !MEMORY_MIB.contains(&spec.memory_mib) {
            return Err(Error::InvalidArgument(format!(
                "memory must be between {} and {} MiB, not {}",
                MEMORY_MIB.start(),
                MEMORY_MIB.end(),
                spec.memory_mib
            )));
        }
        if host_memory > 0 && spec.memory_mib > host_memory {
            return Err(Error::InvalidArgument(format!(
                "memory ({} MiB) is more than this host has ({host_memory} MiB)",
                spec.memory_mib
            )));
        }
        let disk_bus = if profile.virtio_disk {
            DiskBus::Virtio
        } else {
            DiskBus::Ide
        };
        if spec.disks.is_empty() {
            spec.disks.push(TemplateDisk {
                index: 0,
                size_gb: profile.disk_gb.unwrap_or(DEFAULT_DISK_GB),
                volume: String::new(),
            });
        }
        check_disks(&spec.disks, disk_bus)?;
        Ok(Template {
            spec,
            disk_bus: disk_bus.word().into(),
            nic_model: if profile.virtio_net {
                "virtio"
            } else {
                "e1000"
            }
            .into(),
        })
    }

    /// Checks the installation medium `cdrom` (a local image is read, a URL asked
    /// whether it answers), turning a `kimchi_isos` name into its path.
    async fn check_cdrom(&self, cdrom: &str) -> Result<Medium> {
        let mut medium = Medium {
            given: cdrom.to_owned(),
            path: cdrom.to_owned(),
            identified: None,
        };
        if cdrom.is_empty() {
            return Ok(medium);
        }
        if IsoUrl::looks_like_url(cdrom) {
            let url = IsoUrl::parse(cdrom)?;
            if !self.model.host().stream_protocols.contains(&url.scheme) {
                return Err(Error::InvalidArgument(format!(
                    "QEMU on this host cannot stream images over {}",
                    url.scheme
                )));
            }
            self.urls.check(cdrom).await?;
            return Ok(medium);
        }
        if !cdrom.starts_with('/') {
            let volume = self.isos.record(cdrom).await.map_err(|e| {
                e.refers_to_missing(|| {
                    format!(
                        "cdrom '{}' is not an absolute path, an http(s) or ftp URL, \
                         or an image of {ISO_POOL}",
                        excerpt(cdrom)
                    )
                })
            })?;
            medium.path = volume.path;
        }
        check_absolute_path("cdrom", &medium.path)?;
        let info = read_medium(&medium.path).await?;
        if !info.bootable {
            return Err(Error::InvalidArgument(format!(
                "cdrom '{}' is not bootable (it has no El Torito boot entry)",
                excerpt(&medium.path)
            )));
        }
        medium.identified = self
            .osdb
            .with(move |db| db.identify(&info.volume_id))
            .await?;
        Ok(medium)
    }
}

/// A template's installation medium, checked: as the caller gave it, as stored (a
/// `kimchi_isos` name becomes its path), and the OS a local image says it holds.
struct Medium {
    given: String,
    path: String,
    identified: Option<(String, String)>,
}

/// A template name: short enough that the VM names generated from it
/// (`<template>-vm-<n>`) are valid.
fn check_template_name(name: &str) -> Result<()> {
    check_name_within("template", name, MAX_TEMPLATE_NAME_BYTES)
}

fn check_disks(disks: &[TemplateDisk], bus: DiskBus) -> Result<()> {
    let bad = |why: String| Err(Error::InvalidArgument(why));
    let mut seen = Vec::new();
    for disk in disks {
        if seen.contains(&disk.index) {
            return bad(format!("two disks have index {}", disk.index));
        }
        seen.push(disk.index);
        match bus {
            DiskBus::Virtio if disk.index >= MAX_VIRTIO_DISKS => {
                return bad(format!(
                    "disk index {} is too large: virtio disks take indexes 0 to {}",
                    disk.index,
                    MAX_VIRTIO_DISKS - 1
                ))
            }
            DiskBus::Ide if !IDE_DISK_INDEXES.contains(&disk.index) => {
                return bad(format!(
                    "disk index {} is not free: this OS gets IDE disks, which take indexes \
                     0, 1 and 3 (hdc is the CD-ROM)",
                    disk.index
                ))
            }
            _ => {}
        }
        if disk.size_gb > MAX_DISK_GB {
            return bad(format!(
                "disk {} is larger than {MAX_DISK_GB} GB",
                disk.index
            ));
        }
        if disk.volume.is_empty() {
            if disk.size_gb == 0 {
                return bad(format!("disk {} needs a size or a volume", disk.index));
            }
        } else {
            check_name("volume", &disk.volume)?;
        }
    }
    Ok(())
}

/// Free text that ends up in a UI: printable and bounded.
fn check_text(what: &str, text: &str) -> Result<()> {
    if text.len() > MAX_TEXT_BYTES || text.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{what} must be printable text of at most {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// SQLite calls wait on the disk (fsync); keep them off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("template store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_error;

    fn disk(index: u32, size_gb: u64, volume: &str) -> TemplateDisk {
        TemplateDisk {
            index,
            size_gb,
            volume: volume.into(),
        }
    }

    #[test]
    fn disk_checks() {
        check_disks(&[disk(0, 10, ""), disk(1, 0, "base.img")], DiskBus::Virtio).unwrap();
        for (disks, bus, message) in [
            (
                vec![disk(0, 1, ""), disk(0, 2, "")],
                DiskBus::Virtio,
                "two disks have index 0",
            ),
            (
                vec![disk(26, 1, "")],
                DiskBus::Virtio,
                "disk index 26 is too large: virtio disks take indexes 0 to 25",
            ),
            (
                vec![disk(2, 1, "")],
                DiskBus::Ide,
                "disk index 2 is not free: this OS gets IDE disks, which take indexes 0, 1 and 3 \
                 (hdc is the CD-ROM)",
            ),
            (
                vec![disk(0, 0, "")],
                DiskBus::Virtio,
                "disk 0 needs a size or a volume",
            ),
            (
                vec![disk(0, MAX_DISK_GB + 1, "")],
                DiskBus::Virtio,
                "disk 0 is larger than 65536 GB",
            ),
            (
                vec![disk(0, 0, "../x")],
                DiskBus::Virtio,
                "invalid volume name '../x': it contains '/'",
            ),
        ] {
            let refused = check_disks(&disks, bus);
            assert_error!(refused, InvalidArgument, message, "{disks:?}");
        }
    }

    #[test]
    fn text_must_be_printable_and_bounded() {
        check_text("icon", "images/icon-debian.png").unwrap();
        let message = "icon must be printable text of at most 1024 bytes";
        for text in ["a\nb".to_owned(), "x".repeat(MAX_TEXT_BYTES + 1)] {
            let refused = check_text("icon", &text);
            assert_error!(refused, InvalidArgument, message, "{} bytes", text.len());
        }
    }
}
