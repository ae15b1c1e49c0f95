//! Storage volumes: requests checked before a task starts (so a task fails only for
//! reasons the caller could not know), the slow operations run as tasks, and a
//! volume being worked on is busy: a second operation on it is refused up front.

use std::sync::Arc;

use kimchi_dbus::{TaskInfo, VolumeInfo, VolumeSpec, ISO_POOL, MIB};

use super::hypervisor::{Backend, PoolRecord, VolumeRecord};
use super::in_flight::InFlight;
use super::isos::Isos;
use super::journal::Operation;
use super::model::Model;
use super::storage_pools::{StoragePools, VolumeGuard};
use super::tasks::{Tasks, Wait};
use crate::error::{Error, Result};
use crate::names::check_name;

const VOLUME_FORMATS: [&str; 2] = ["qcow2", "raw"];

/// Pool types whose volumes are files in a directory.
const FILE_POOLS: [&str; 3] = ["dir", "netfs", "fs"];

pub struct StorageVolumes {
    backend: Arc<Backend>,
    model: Arc<Model>,
    tasks: Arc<Tasks>,
    pools: Arc<StoragePools>,
    isos: Arc<Isos>,
    in_flight: Arc<InFlight>,
}

impl StorageVolumes {
    pub fn new(
        backend: Arc<Backend>,
        model: Arc<Model>,
        tasks: Arc<Tasks>,
        pools: Arc<StoragePools>,
        isos: Arc<Isos>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        StorageVolumes {
            backend,
            model,
            tasks,
            pools,
            isos,
            in_flight,
        }
    }

    /// Marks the volume busy, or says it (or its pool) already is.
    pub fn claim(&self, pool: &str, name: &str) -> Result<VolumeGuard> {
        self.pools.claim_volume(pool, name)
    }

    /// The pool's volumes (re-read from disk, one refresh), or every ISO image for
    /// `kimchi_isos`.
    pub async fn list(&self, pool: &str) -> Result<Vec<VolumeInfo>> {
        if pool == ISO_POOL {
            return self.isos.list().await;
        }
        let owned = pool.to_owned();
        let (record, volumes) = self.backend.run(move |hv| hv.pool_volumes(&owned)).await?;
        self.model.record_volumes(record, &volumes);
        self.isos.describe(volumes).await
    }

    pub async fn get(&self, pool: &str, name: &str) -> Result<VolumeInfo> {
        if pool == ISO_POOL {
            return self.isos.get(name).await;
        }
        let record = self.record(pool, name).await?;
        let mut infos = self.isos.describe(vec![record]).await?;
        Ok(infos.remove(0))
    }

    /// Checks the request, then creates the volume in a task.
    pub async fn create(&self, pool: &str, spec: VolumeSpec, wait: Wait) -> Result<TaskInfo> {
        let pool = self.pools.writable(pool)?;
        check_name("volume", &spec.name)?;
        if !VOLUME_FORMATS.contains(&spec.format.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "volume format must be one of {VOLUME_FORMATS:?}, not '{}'",
                spec.format
            )));
        }
        let capacity = bytes(spec.capacity_mib, "capacity")?;
        check_format_limit(&spec.format, capacity, "capacity")?;
        if spec.allocation_mib > spec.capacity_mib {
            return Err(Error::InvalidArgument(format!(
                "allocation ({} MiB) is larger than the capacity ({} MiB)",
                spec.allocation_mib, spec.capacity_mib
            )));
        }
        if !self.model.pool_by_name(&pool)?.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{pool}' is not active; activate it first"
            )));
        }
        let guard = self.claim(&pool, &spec.name)?;
        let (p, n) = (pool.clone(), spec.name.clone());
        let now = self
            .backend
            .run(move |hv| {
                hv.check_volume_name_free(&p, &n)?;
                hv.pool_by_name(&p)
            })
            .await?;
        self.model.upsert_pool(now.clone());
        check_pool_holds(&now, capacity, "capacity")?;
        // Allocation is at most the capacity, which fits in bytes.
        let allocation = spec.allocation_mib * MIB;
        if allocation > now.available {
            return Err(Error::InvalidArgument(format!(
                "allocation ({} MiB) is more than the {} MiB free in storage pool '{pool}'",
                spec.allocation_mib,
                now.available / MIB
            )));
        }
        let (backend, model) = (self.backend.clone(), self.model.clone());
        let operation = Operation::VolumeCreate {
            pool: pool.clone(),
            name: spec.name.clone(),
        };
        let id = self
            .in_flight
            .start(operation, guard, async move {
                // A new volume is qcow2 or raw, never an ISO image: of the model, only
                // the pool's sizes and count change.
                let (record, pool) = backend
                    .run(move |hv| Ok((hv.create_volume(&pool, &spec)?, hv.pool_by_name(&pool)?)))
                    .await?;
                model.upsert_pool(pool);
                Ok(format!("created {}", record.path))
            })
            .await?;
        self.tasks.reply(id, wait).await
    }

    /// Grows the volume (or shrinks an unused raw one) in a task.
    pub async fn resize(
        &self,
        pool: &str,
        name: &str,
        size_mib: u64,
        wait: Wait,
    ) -> Result<TaskInfo> {
        let size = bytes(size_mib, "size")?;
        let (guard, current) = self.begin(pool, name).await?;
        check_format_limit(&current.format, size, "size")?;
        let shrink = size < current.capacity;
        if !shrink {
            check_pool_holds(&self.model.pool_by_name(&current.pool)?, size, "size")?;
        }
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
        let (pool, name) = self.check_inside(current).await?;
        let backend = self.backend.clone();
        let id = self.tasks.start(
            "storagevolume.resize",
            volume_uri(&pool, &name),
            async move {
                let _guard = guard;
                backend
                    .run(move |hv| hv.resize_volume(&pool, &name, size_mib, shrink))
                    .await?;
                Ok(format!("resized to {size_mib} MiB"))
            },
        );
        self.tasks.reply(id, wait).await
    }

    /// Overwrites the volume with zeros in a task; an image format (qcow2) is set up
    /// again afterwards, empty, so the volume stays usable. The volume stays listed
    /// all along, and busy: a second wipe (or any change) is refused meanwhile.
    pub async fn wipe(&self, pool: &str, name: &str, wait: Wait) -> Result<TaskInfo> {
        let (guard, current) = self.begin(pool, name).await?;
        self.refuse_in_use(&current)?;
        let (format, capacity) = (current.format.clone(), current.capacity);
        let (pool, name) = self.check_inside(current).await?;
        let operation = Operation::VolumeWipe {
            pool: pool.clone(),
            name: name.clone(),
            format: format.clone(),
            capacity,
        };
        let backend = self.backend.clone();
        let id = self
            .in_flight
            .start(operation, guard, async move {
                backend
                    .run(move |hv| hv.wipe_volume(&pool, &name, &format, capacity))
                    .await?;
                Ok("wiped".to_owned())
            })
            .await?;
        self.tasks.reply(id, wait).await
    }

    pub async fn delete(&self, pool: &str, name: &str) -> Result<()> {
        let (_guard, current) = self.begin(pool, name).await?;
        self.refuse_in_use(&current)?;
        let (pool, name) = (current.pool.clone(), current.name.clone());
        let record = self
            .backend
            .run(move |hv| {
                hv.delete_volume(&pool, &name)?;
                hv.pool_by_name(&pool)
            })
            .await?;
        self.model.forget_volume(record, &current.name);
        Ok(())
    }

    /// The volume as libvirt has it now, without identifying ISO contents.
    async fn record(&self, pool: &str, name: &str) -> Result<VolumeRecord> {
        check_name("volume", name)?;
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.backend.run(move |hv| hv.volume(&pool, &name)).await
    }

    /// Marks the volume busy — before looking it up, so that a second request
    /// meanwhile is refused as busy, whatever the first one does to the file — and
    /// reads it. Only files can change in a pool of files: a directory (which
    /// libvirt lists as a volume of type `dir`) or a device node is refused.
    async fn begin(&self, pool: &str, name: &str) -> Result<(VolumeGuard, VolumeRecord)> {
        let pool = self.pools.writable(pool)?;
        check_name("volume", name)?;
        let guard = self.claim(&pool, name)?;
        let current = self.record(&pool, name).await?;
        let files = FILE_POOLS.contains(&self.model.pool_by_name(&pool)?.pool_type.as_str());
        if files && current.kind != "file" {
            return Err(Error::InvalidState(format!(
                "'{name}' in pool '{pool}' is {}, not a volume file; kimchi changes only \
                 regular files",
                match current.kind {
                    "dir" => "a directory".to_owned(),
                    "block" => "a block device".to_owned(),
                    other => format!("of type '{other}'"),
                }
            )));
        }
        Ok((guard, current))
    }

    fn refuse_in_use(&self, vol: &VolumeRecord) -> Result<()> {
        if self.model.path_in_use(&vol.path) {
            return Err(Error::InvalidState(format!(
                "volume '{}' is used by a virtual machine",
                vol.name
            )));
        }
        Ok(())
    }

    /// Refuses a volume outside its pool's directory (a 409 now, not a failed task
    /// later).
    async fn check_inside(&self, vol: VolumeRecord) -> Result<(String, String)> {
        let (pool, name) = (vol.pool, vol.name);
        let (p, n) = (pool.clone(), name.clone());
        self.backend
            .run(move |hv| hv.check_volume_inside(&p, &n))
            .await?;
        Ok((pool, name))
    }
}

/// The largest qcow2 image qemu-img makes with its default 64 KiB clusters: 2 PiB.
pub const QCOW2_MAX_BYTES: u64 = 1 << 51;

/// Refuses a size the image format cannot describe (raw files are bounded by the
/// pool, below).
fn check_format_limit(format: &str, size: u64, what: &str) -> Result<()> {
    if format == "qcow2" && size > QCOW2_MAX_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what} of a qcow2 volume must be at most {} MiB, not {}",
            QCOW2_MAX_BYTES / MIB,
            size / MIB
        )));
    }
    Ok(())
}

/// A volume may be thin (qcow2, sparse raw), but never larger than its pool's
/// whole storage could ever hold.
fn check_pool_holds(pool: &PoolRecord, size: u64, what: &str) -> Result<()> {
    if size > pool.capacity {
        return Err(Error::InvalidArgument(format!(
            "{what} ({} MiB) is more than storage pool '{}' can hold ({} MiB)",
            size / MIB,
            pool.name,
            pool.capacity / MIB
        )));
    }
    Ok(())
}

/// MiB to bytes, refusing sizes that do not fit.
pub fn bytes(mib: u64, what: &str) -> Result<u64> {
    match mib.checked_mul(MIB) {
        Some(b) if mib > 0 => Ok(b),
        _ => Err(Error::InvalidArgument(format!(
            "{what} must be between 1 and {} MiB, not {mib}",
            u64::MAX / MIB
        ))),
    }
}

pub(super) fn volume_uri(pool: &str, name: &str) -> String {
    format!("/storagepools/{pool}/storagevolumes/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_error;

    #[test]
    fn sizes_must_fit_in_bytes() {
        assert_eq!(bytes(2, "size").unwrap(), 2 * MIB);
        let max = u64::MAX / MIB;
        for (mib, shown) in [(0, "0"), (u64::MAX, "18446744073709551615")] {
            let message = format!("size must be between 1 and {max} MiB, not {shown}");
            assert_error!(bytes(mib, "size"), InvalidArgument, message, "{mib}");
        }
    }
}
