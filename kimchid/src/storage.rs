//! Storage pools and volumes as Kimchi presents them: request checks, the read-only
//! `kimchi_isos` view, ISO identification, and tasks for the slow volume operations.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use kimchi_dbus::{PoolSpec, VolumeSpec, ISO_POOL};

use crate::error::{Error, Result};
use crate::iso;
use crate::libvirt::storage;
use crate::libvirt::{Libvirt, PoolDefinition, PoolRecord, VolumeRecord};
use crate::model::Model;
use crate::names::{check_absolute_path, check_name};
use crate::osinfo::OsDb;
use crate::tasks::Tasks;

const OSINFO_DIR: &str = "/usr/share/osinfo";
const VOLUME_FORMATS: [&str; 2] = ["qcow2", "raw"];
const MIB: u64 = 1024 * 1024;

/// What an ISO image says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoIdentity {
    pub os_distro: String,
    pub os_version: String,
    pub bootable: bool,
}

/// A volume with, for ISO images, what they contain. In the `kimchi_isos` view the
/// name is `<pool>:<volume>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    pub record: VolumeRecord,
    pub iso: Option<IsoIdentity>,
}

pub struct Storage {
    libvirt: Arc<Libvirt>,
    model: Arc<Model>,
    tasks: Arc<Tasks>,
    osdb: Arc<OnceLock<OsDb>>,
    busy: Arc<Mutex<HashSet<(String, String)>>>,
}

/// Marks a volume as worked on by a task until dropped, so a second operation on it
/// is refused up front instead of failing inside libvirt.
struct VolumeGuard {
    busy: Arc<Mutex<HashSet<(String, String)>>>,
    key: (String, String),
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.busy
            .lock()
            .expect("busy lock poisoned")
            .remove(&self.key);
    }
}

impl Storage {
    pub fn new(libvirt: Arc<Libvirt>, model: Arc<Model>, tasks: Arc<Tasks>) -> Self {
        Storage {
            libvirt,
            model,
            tasks,
            osdb: Arc::new(OnceLock::new()),
            busy: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn claim(&self, pool: &str, name: &str) -> Result<VolumeGuard> {
        let key = (pool.to_owned(), name.to_owned());
        if !self
            .busy
            .lock()
            .expect("busy lock poisoned")
            .insert(key.clone())
        {
            return Err(Error::Busy(format!(
                "volume '{name}' in pool '{pool}' has an operation in progress"
            )));
        }
        Ok(VolumeGuard {
            busy: self.busy.clone(),
            key,
        })
    }

    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn pools(&self) -> Vec<PoolRecord> {
        self.model.pools()
    }

    /// The pool as libvirt reports it now (sizes change behind kimchid's back).
    pub async fn pool(&self, name: &str) -> Result<PoolRecord> {
        self.refresh_pool(&self.model.pool_by_name(name)?.name)
            .await
    }

    async fn refresh_pool(&self, name: &str) -> Result<PoolRecord> {
        refresh_pool(&self.libvirt, &self.model, name).await
    }

    /// Number of images in the `kimchi_isos` view.
    pub async fn iso_count(&self) -> Result<u32> {
        Ok(self.iso_records().await?.len() as u32)
    }

    /// Defines a pool, inactive, as Kimchi does.
    pub async fn create_pool(&self, spec: PoolSpec) -> Result<PoolRecord> {
        let def = pool_definition(&spec)?;
        if self.model.pool_by_name(&spec.name).is_ok() {
            return Err(Error::AlreadyExists(format!(
                "a storage pool named '{}' already exists",
                spec.name
            )));
        }
        let record = self
            .libvirt
            .call(move |c| storage::define_pool(c, &def))
            .await?;
        self.model.upsert_pool(record.clone());
        Ok(record)
    }

    pub async fn activate_pool(&self, name: &str) -> Result<PoolRecord> {
        let name = self.writable_pool(name)?;
        let record = self
            .libvirt
            .call(move |c| storage::activate_pool(c, &name))
            .await?;
        self.model.upsert_pool(record.clone());
        Ok(record)
    }

    pub async fn deactivate_pool(&self, name: &str) -> Result<PoolRecord> {
        let name = self.writable_pool(name)?;
        let record = self
            .libvirt
            .call(move |c| storage::deactivate_pool(c, &name))
            .await?;
        self.model.upsert_pool(record.clone());
        Ok(record)
    }

    pub async fn delete_pool(&self, name: &str) -> Result<()> {
        let uuid = self.model.pool_by_name(&self.writable_pool(name)?)?.uuid;
        let owned = name.to_owned();
        self.libvirt
            .call(move |c| storage::undefine_pool(c, &owned))
            .await?;
        self.model.remove_pool(&uuid);
        Ok(())
    }

    /// The pool's volumes (re-read from disk), or every ISO for `kimchi_isos`.
    pub async fn volumes(&self, pool: &str) -> Result<Vec<VolumeView>> {
        if pool == ISO_POOL {
            return self.iso_volumes().await;
        }
        let owned = pool.to_owned();
        let records = self
            .libvirt
            .call(move |c| storage::list_volumes(c, &owned))
            .await?;
        self.refresh_pool(pool).await?;
        self.with_iso_identity(records).await
    }

    pub async fn volume(&self, pool: &str, name: &str) -> Result<VolumeView> {
        if pool == ISO_POOL {
            return self
                .iso_volumes()
                .await?
                .into_iter()
                .find(|v| v.record.name == name)
                .ok_or_else(|| Error::NotFound(format!("no ISO image '{name}' in {ISO_POOL}")));
        }
        check_name("volume", name)?;
        let (pool, name) = (pool.to_owned(), name.to_owned());
        let record = self
            .libvirt
            .call(move |c| storage::volume(c, &pool, &name))
            .await?;
        let mut views = self.with_iso_identity(vec![record]).await?;
        Ok(views.remove(0))
    }

    /// Checks the request, then creates the volume in a task; returns the task id.
    pub async fn create_volume(&self, pool: &str, spec: VolumeSpec) -> Result<u32> {
        let pool = self.writable_pool(pool)?;
        check_name("volume", &spec.name)?;
        if !VOLUME_FORMATS.contains(&spec.format.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "volume format must be one of {VOLUME_FORMATS:?}, not '{}'",
                spec.format
            )));
        }
        bytes(spec.capacity_mib, "capacity")?;
        if !self.model.pool_by_name(&pool)?.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{pool}' is not active; activate it first"
            )));
        }
        let guard = self.claim(&pool, &spec.name)?;
        let (p, n) = (pool.clone(), spec.name.clone());
        self.libvirt
            .call(move |c| storage::check_volume_name_free(c, &p, &n))
            .await?;
        let (libvirt, model) = (self.libvirt.clone(), self.model.clone());
        let uri = volume_uri(&pool, &spec.name);
        Ok(self.tasks.start("storagevolume.create", uri, async move {
            let _guard = guard;
            let target = pool.clone();
            let record = libvirt
                .call(move |c| {
                    storage::create_volume(c, &target, &spec.name, spec.capacity_mib, &spec.format)
                })
                .await?;
            refresh_pool(&libvirt, &model, &pool).await?;
            Ok(format!("created {}", record.path))
        }))
    }

    /// Grows the volume (or shrinks an unused raw one) in a task.
    pub async fn resize_volume(&self, pool: &str, name: &str, size_mib: u64) -> Result<u32> {
        let current = self.volume(&self.writable_pool(pool)?, name).await?.record;
        let shrink = bytes(size_mib, "size")? < current.capacity;
        if shrink && current.format != "raw" {
            return Err(Error::InvalidState(format!(
                "cannot shrink {} volume '{name}': only raw volumes can shrink",
                current.format
            )));
        }
        if shrink && self.model.path_in_use(&current.path) {
            return Err(Error::InvalidState(format!(
                "cannot shrink volume '{name}': a virtual machine uses it"
            )));
        }
        self.check_inside(&current).await?;
        let guard = self.claim(&current.pool, &current.name)?;
        let libvirt = self.libvirt.clone();
        let (pool, name) = (current.pool, current.name);
        let uri = volume_uri(&pool, &name);
        Ok(self.tasks.start("storagevolume.resize", uri, async move {
            let _guard = guard;
            libvirt
                .call(move |c| storage::resize_volume(c, &pool, &name, size_mib, shrink))
                .await?;
            Ok(format!("resized to {size_mib} MiB"))
        }))
    }

    /// Overwrites the volume with zeros in a task; an image format (qcow2) is set up
    /// again afterwards, empty, so the volume stays usable.
    pub async fn wipe_volume(&self, pool: &str, name: &str) -> Result<u32> {
        let current = self.volume(&self.writable_pool(pool)?, name).await?.record;
        if self.model.path_in_use(&current.path) {
            return Err(Error::InvalidState(format!(
                "volume '{name}' is used by a virtual machine"
            )));
        }
        self.check_inside(&current).await?;
        let guard = self.claim(&current.pool, &current.name)?;
        let libvirt = self.libvirt.clone();
        let (pool, name) = (current.pool, current.name);
        let uri = volume_uri(&pool, &name);
        Ok(self.tasks.start("storagevolume.wipe", uri, async move {
            let _guard = guard;
            libvirt
                .call(move |c| storage::wipe_volume(c, &pool, &name))
                .await?;
            Ok("wiped".to_owned())
        }))
    }

    pub async fn delete_volume(&self, pool: &str, name: &str) -> Result<()> {
        let current = self.volume(&self.writable_pool(pool)?, name).await?.record;
        if self.model.path_in_use(&current.path) {
            return Err(Error::InvalidState(format!(
                "volume '{name}' is used by a virtual machine"
            )));
        }
        let _guard = self.claim(&current.pool, &current.name)?;
        let (pool, name) = (current.pool, current.name);
        let pool_name = pool.clone();
        self.libvirt
            .call(move |c| storage::delete_volume(c, &pool, &name))
            .await?;
        self.refresh_pool(&pool_name).await.map(drop)
    }

    /// Refused up front so the caller gets a 409, not a failed task.
    async fn check_inside(&self, vol: &VolumeRecord) -> Result<()> {
        let (pool, name) = (vol.pool.clone(), vol.name.clone());
        self.libvirt
            .call(move |c| storage::check_volume_inside(c, &pool, &name))
            .await
    }

    /// Refuses the virtual ISO pool for writes; returns the name for the call.
    fn writable_pool(&self, name: &str) -> Result<String> {
        if name == ISO_POOL {
            return Err(Error::NotSupported(format!(
                "{ISO_POOL} is a read-only view"
            )));
        }
        self.model.pool_by_name(name).map(|p| p.name)
    }

    async fn iso_volumes(&self) -> Result<Vec<VolumeView>> {
        let records = self.iso_records().await?;
        self.with_iso_identity(records).await
    }

    /// Every ISO image of every active pool, named `<pool>:<file>`, not yet identified.
    async fn iso_records(&self) -> Result<Vec<VolumeRecord>> {
        let pools: Vec<String> = self
            .model
            .pools()
            .into_iter()
            .filter(PoolRecord::active)
            .map(|p| p.name)
            .collect();
        self.libvirt
            .call(move |c| {
                let mut isos = Vec::new();
                for pool in &pools {
                    // A pool stopped or removed since the model last looked is skipped.
                    let volumes = match storage::list_volumes(c, pool) {
                        Ok(v) => v,
                        Err(Error::InvalidState(_) | Error::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    };
                    for mut vol in volumes {
                        if vol.format == "iso" {
                            vol.name = format!("{pool}:{}", vol.name);
                            isos.push(vol);
                        }
                    }
                }
                Ok(isos)
            })
            .await
    }

    /// Runs `f` with the osinfo database (read on first use) on the blocking pool:
    /// loading it and probing ISO headers is file I/O.
    pub async fn with_osdb<T: Send + 'static>(
        &self,
        f: impl FnOnce(&OsDb) -> T + Send + 'static,
    ) -> Result<T> {
        let osdb = self.osdb.clone();
        tokio::task::spawn_blocking(move || {
            f(osdb.get_or_init(|| OsDb::load(Path::new(OSINFO_DIR))))
        })
        .await
        .map_err(|e| Error::Internal(format!("osinfo lookup failed: {e}")))
    }

    async fn with_iso_identity(&self, records: Vec<VolumeRecord>) -> Result<Vec<VolumeView>> {
        self.with_osdb(move |db| {
            records
                .into_iter()
                .map(|record| {
                    let iso = (record.format == "iso").then(|| identify(db, &record.path));
                    VolumeView { record, iso }
                })
                .collect()
        })
        .await
    }
}

/// Re-reads one pool from libvirt into the model (sizes and volume count change with
/// every volume operation).
async fn refresh_pool(libvirt: &Libvirt, model: &Model, name: &str) -> Result<PoolRecord> {
    let owned = name.to_owned();
    let record = libvirt
        .call(move |c| storage::pool_by_name(c, &owned))
        .await?;
    model.upsert_pool(record.clone());
    Ok(record)
}

/// What the image says it is; the file name is never trusted.
pub fn identify(db: &OsDb, path: &str) -> IsoIdentity {
    match iso::probe(Path::new(path)) {
        Ok(info) => {
            let (os_distro, os_version) = db
                .identify(&info.volume_id)
                .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
            IsoIdentity {
                os_distro,
                os_version,
                bootable: info.bootable,
            }
        }
        Err(e) => {
            tracing::debug!(path, "not a usable ISO image: {e}");
            IsoIdentity {
                os_distro: "unknown".into(),
                os_version: "unknown".into(),
                bootable: false,
            }
        }
    }
}

/// MiB to bytes, refusing sizes that do not fit.
fn bytes(mib: u64, what: &str) -> Result<u64> {
    match mib.checked_mul(MIB) {
        Some(b) if mib > 0 => Ok(b),
        _ => Err(Error::InvalidArgument(format!(
            "{what} must be between 1 and {} MiB, not {mib}",
            u64::MAX / MIB
        ))),
    }
}

fn volume_uri(pool: &str, name: &str) -> String {
    format!("/storagepools/{pool}/storagevolumes/{name}")
}

fn pool_definition(spec: &PoolSpec) -> Result<PoolDefinition> {
    if spec.name == ISO_POOL {
        return Err(Error::AlreadyExists(format!(
            "'{ISO_POOL}' is a reserved pool name"
        )));
    }
    check_name("storage pool", &spec.name)?;
    if spec.name.contains(':') {
        // ':' separates pool and image in kimchi_isos names.
        return Err(Error::InvalidArgument(format!(
            "invalid storage pool name '{}': it contains ':'",
            spec.name
        )));
    }
    let unexpected = |field: &str| {
        Error::InvalidArgument(format!(
            "'{field}' does not apply to {} pools",
            spec.pool_type
        ))
    };
    match spec.pool_type.as_str() {
        "dir" => {
            check_absolute_path("path", &spec.path)?;
            if !spec.source_host.is_empty() || !spec.source_path.is_empty() {
                return Err(unexpected("source"));
            }
            if !spec.source_devices.is_empty() {
                return Err(unexpected("source devices"));
            }
            Ok(PoolDefinition::Dir {
                name: spec.name.clone(),
                path: spec.path.clone(),
            })
        }
        "netfs" => {
            check_absolute_path("path", &spec.path)?;
            check_absolute_path("source path", &spec.source_path)?;
            let host_ok = !spec.source_host.is_empty()
                && spec
                    .source_host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
            if !host_ok {
                return Err(Error::InvalidArgument(format!(
                    "netfs pools need a source host name or address, not '{}'",
                    spec.source_host
                )));
            }
            if !spec.source_devices.is_empty() {
                return Err(unexpected("source devices"));
            }
            Ok(PoolDefinition::Netfs {
                name: spec.name.clone(),
                path: spec.path.clone(),
                host: spec.source_host.clone(),
                source_path: spec.source_path.clone(),
            })
        }
        "logical" => {
            if spec.source_devices.is_empty() {
                return Err(Error::InvalidArgument(
                    "logical pools need at least one source device".into(),
                ));
            }
            for device in &spec.source_devices {
                check_absolute_path("source device", device)?;
            }
            if !spec.source_host.is_empty() || !spec.source_path.is_empty() {
                return Err(unexpected("source host/path"));
            }
            Ok(PoolDefinition::Logical {
                name: spec.name.clone(),
                devices: spec.source_devices.clone(),
            })
        }
        other => Err(Error::InvalidArgument(format!(
            "unknown storage pool type '{other}' (known: dir, netfs, logical)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> PoolSpec {
        PoolSpec {
            name: "p1".into(),
            pool_type: kind.into(),
            path: "/srv/p1".into(),
            source_host: String::new(),
            source_path: String::new(),
            source_devices: Vec::new(),
        }
    }

    #[test]
    fn sizes_must_fit_in_bytes() {
        assert_eq!(bytes(2, "size").unwrap(), 2 * MIB);
        assert!(matches!(bytes(0, "size"), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            bytes(u64::MAX, "size"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn dir_pool_needs_only_an_absolute_path() {
        assert!(matches!(
            pool_definition(&spec("dir")),
            Ok(PoolDefinition::Dir { .. })
        ));
        let relative = PoolSpec {
            path: "srv/p1".into(),
            ..spec("dir")
        };
        assert!(matches!(
            pool_definition(&relative),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn unknown_type_is_invalid() {
        let err = pool_definition(&spec("zfs-magic")).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(m) if m.contains("zfs-magic")));
    }

    #[test]
    fn reserved_name_is_already_taken() {
        let reserved = PoolSpec {
            name: ISO_POOL.into(),
            ..spec("dir")
        };
        assert!(matches!(
            pool_definition(&reserved),
            Err(Error::AlreadyExists(_))
        ));
    }

    #[test]
    fn netfs_needs_host_and_source_path() {
        assert!(pool_definition(&spec("netfs")).is_err());
        let nfs = PoolSpec {
            source_host: "filer.example".into(),
            source_path: "/export/vms".into(),
            ..spec("netfs")
        };
        assert!(matches!(
            pool_definition(&nfs),
            Ok(PoolDefinition::Netfs { .. })
        ));
        let evil = PoolSpec {
            source_host: "a'><x".into(),
            ..nfs
        };
        assert!(pool_definition(&evil).is_err());
    }

    #[test]
    fn logical_needs_devices_and_refuses_sources() {
        assert!(pool_definition(&spec("logical")).is_err());
        let lvm = PoolSpec {
            source_devices: vec!["/dev/loop7".into()],
            ..spec("logical")
        };
        assert!(matches!(
            pool_definition(&lvm),
            Ok(PoolDefinition::Logical { .. })
        ));
    }

    #[test]
    fn pool_names_with_path_tricks_or_colons_are_refused() {
        for name in ["../x", "a/b", "", "a:b"] {
            let bad = PoolSpec {
                name: name.into(),
                ..spec("dir")
            };
            assert!(
                matches!(pool_definition(&bad), Err(Error::InvalidArgument(_))),
                "{name}"
            );
        }
    }
}
