//! The read-only `kimchi_isos` view (every ISO image of every active pool, named
//! `<pool>:<file>`) and ISO identification: what an image says it is, read from its
//! volume descriptor and matched against osinfo-db; the file name is never trusted.

use std::path::Path;
use std::sync::Arc;

use kimchi_dbus::{iso_pool_path, PoolInfo, PoolState, VolumeInfo, ISO_POOL, MIB};
use zbus::OwnedObjectPath;

use super::hypervisor::{Backend, VolumeRecord};
use super::model::Model;
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
use crate::iso::{self, IsoError, IsoInfo};
use crate::osinfo::{OsDatabase, OsDb};
use crate::user_file::UserFileError;

const UNKNOWN: &str = "unknown";

/// What an ISO image says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoIdentity {
    pub os_distro: String,
    pub os_version: String,
    pub bootable: bool,
}

pub struct Isos {
    backend: Arc<Backend>,
    model: Arc<Model>,
    osdb: Arc<OsDatabase>,
}

impl Isos {
    pub fn new(backend: Arc<Backend>, model: Arc<Model>, osdb: Arc<OsDatabase>) -> Self {
        Isos {
            backend,
            model,
            osdb,
        }
    }

    /// The view as a pool; its count is the model's (kept by every listing and the
    /// periodic resync), so listing pools costs no libvirt call.
    pub fn pool_info(&self) -> PoolInfo {
        PoolInfo {
            path: OwnedObjectPath::try_from(iso_pool_path()).expect("static path is valid"),
            name: ISO_POOL.to_owned(),
            state: PoolState::Active,
            target_path: String::new(),
            pool_type: "kimchi-iso".to_owned(),
            capacity_mib: 0,
            allocated_mib: 0,
            available_mib: 0,
            nr_volumes: self.model.isos().len() as u32,
        }
    }

    /// Every ISO image of every active pool, re-read now and identified.
    pub async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let records = self.relist().await?;
        self.describe(records).await
    }

    pub async fn get(&self, name: &str) -> Result<VolumeInfo> {
        let record = self.record(name).await?;
        let mut infos = self.describe(vec![record]).await?;
        Ok(infos.remove(0))
    }

    /// The image a `kimchi_isos` name stands for, not yet identified.
    pub async fn record(&self, name: &str) -> Result<VolumeRecord> {
        self.relist()
            .await?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| {
                Error::NotFound(format!("no ISO image '{}' in {ISO_POOL}", excerpt(name)))
            })
    }

    /// Re-reads the active pools (recording what they hold in the model) and names
    /// their images for the view.
    async fn relist(&self) -> Result<Vec<VolumeRecord>> {
        let pools: Vec<String> = self
            .model
            .pools()
            .into_iter()
            .filter(|p| p.active())
            .map(|p| p.name)
            .collect();
        let listed = self
            .backend
            .run(move |hv| {
                let mut listed = Vec::new();
                for pool in &pools {
                    match hv.pool_volumes(pool) {
                        Ok(pair) => listed.push(pair),
                        // Stopped or removed since the model last looked: skipped.
                        Err(Error::InvalidState(_) | Error::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Ok(listed)
            })
            .await?;
        let mut isos = Vec::new();
        for (pool, volumes) in listed {
            isos.extend(volumes.iter().filter(|v| v.is_iso()).map(|v| VolumeRecord {
                name: format!("{}:{}", pool.name, v.name),
                ..v.clone()
            }));
            self.model.record_volumes(pool, &volumes);
        }
        Ok(isos)
    }

    /// The volumes as the API shows them, ISO images identified by their content.
    pub async fn describe(&self, records: Vec<VolumeRecord>) -> Result<Vec<VolumeInfo>> {
        self.osdb
            .with(move |db| {
                records
                    .into_iter()
                    .map(|record| {
                        let iso = record.is_iso().then(|| identify(db, &record.path));
                        volume_info(record, iso)
                    })
                    .collect()
            })
            .await
    }
}

/// Reads the image a CD-ROM is to hold, at the absolute path a caller named, off the
/// async workers and within a time bound; whatever is wrong is the caller's
/// argument, named `cdrom '<path>'`, unless kimchid has no room to read it now.
pub async fn read_medium(path: &str) -> Result<IsoInfo> {
    iso::probe_bounded(Path::new(path)).await.map_err(|e| {
        let why = match &e {
            IsoError::NotIso(_) => format!("is {e}"),
            _ => e.to_string(),
        };
        let message = format!("cdrom '{}' {why}", excerpt(path));
        match e {
            IsoError::File(UserFileError::Overloaded) => Error::Unavailable(message),
            _ => Error::InvalidArgument(message),
        }
    })
}

/// What the image at `path` says it is.
pub fn identify(db: &OsDb, path: &str) -> IsoIdentity {
    match iso::probe(Path::new(path)) {
        Ok(info) => {
            let (os_distro, os_version) = db
                .identify(&info.volume_id)
                .unwrap_or_else(|| (UNKNOWN.into(), UNKNOWN.into()));
            IsoIdentity {
                os_distro,
                os_version,
                bootable: info.bootable,
            }
        }
        Err(e) => {
            tracing::debug!(path, "not a usable ISO image: {e}");
            IsoIdentity {
                os_distro: UNKNOWN.into(),
                os_version: UNKNOWN.into(),
                bootable: false,
            }
        }
    }
}

fn volume_info(r: VolumeRecord, iso: Option<IsoIdentity>) -> VolumeInfo {
    VolumeInfo {
        pool: r.pool,
        name: r.name,
        vol_type: r.kind.to_owned(),
        capacity_mib: r.capacity / MIB,
        allocation_mib: r.allocation / MIB,
        format: r.format,
        file_path: r.path,
        iso: iso.is_some(),
        os_distro: iso
            .as_ref()
            .map(|i| i.os_distro.clone())
            .unwrap_or_default(),
        os_version: iso
            .as_ref()
            .map(|i| i.os_version.clone())
            .unwrap_or_default(),
        bootable: iso.is_some_and(|i| i.bootable),
    }
}
